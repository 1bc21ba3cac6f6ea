"""`python -m examples.text_gpt2`: options, refusals, a tiny end-to-end run, resume, BPE, fine-tuning."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from examples import text_gpt2
from typedlm.tokenizers import gpt2_files
from typedlm.training.checkpoint import find_checkpoint, load_checkpoint

TINY = [
    "--preset",
    "tiny",
    "--steps",
    "6",
    "--eval-every",
    "3",
    "--eval-batches",
    "2",
    "--max-chars",
    "30000",
    "--no-progress",
    "--generate",
    "20",
    "--device",
    "cpu",
]


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = text_gpt2.main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(["--help"], capsys)
    assert code == 0
    for option in (
        "--data-file",
        "--steps",
        "--log-every",
        "--log",
        "--finetune-file",
        "--finetune-steps",
        "--allow-small-data",
        "--bpe-vocab",
        "--bpe-merges",
        "--max-chars",
        "--prompt",
        "--generate",
        "--interactive",
        "--layers",
        "--heads",
        "--head-dim",
        "--seq-len",
        "--batch",
        "--ffn-hidden",
        "--preset",
        "--local-vocab",
        "--device",
        "--compile",
        "--dtype",
        "--out",
        "--resume",
        "--eval-every",
        "--seed",
        "--temperature",
        "--top-k",
        "--top-p",
    ):
        assert option in out, option
    text = " ".join(out.split())
    for default in ("(default: First Citizen:)", "(default: 1337)", "(default: cpu)", "(default: auto)"):
        assert default in text, default
    assert "cpu layers=4, heads=4, head_dim=32, seq_len=64, batch=12" in text  # the presets' values


def test_bpe_vocab_needs_merges(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(["--bpe-vocab", "vocab.json"], capsys)
    assert code == 2 and "--bpe-vocab requires --bpe-merges" in err
    code, _, err = _main(["--bpe-merges", "merges.txt"], capsys)
    assert code == 2 and "--bpe-merges requires --bpe-vocab" in err
    code, _, err = _main(["--local-vocab", "512"], capsys)
    assert code == 2 and "--local-vocab" in err and "needs --bpe-vocab" in err


def test_small_corpus_needs_allow_small_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 200)
    code, _, err = _main([*TINY, "--data-file", str(corpus), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(corpus) in err and "--allow-small-data" in err and "100 MiB" in err


def test_cuda_without_a_gpu_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*TINY, "--out", str(tmp_path)]
    argv[argv.index("--device") + 1] = "cuda"
    code, _, err = _main(argv, capsys)
    assert code == 2 and "--device cuda: no CUDA GPU is available" in err


def test_tokenizer_larger_than_model_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main([*TINY, "--vocab", "100", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--vocab 100: the tokenizer has 256 ids" in err
    assert "step" not in out and find_checkpoint(tmp_path) is None


def test_tiny_run_writes_log_plot_checkpoint_and_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main([*TINY, "--out", str(tmp_path), "--prompt", "ROMEO:"], capsys)
    assert code == 0
    log = json.loads((tmp_path / "trainlog.json").read_text())
    assert log["status"] == "completed" and len(log["steps"]) == 6 and log["data"]["tokenizer"] == "ByteTokenizer"
    assert log["first_loss"] > log["final_loss"] and log["final_val_loss"] is not None
    assert (tmp_path / "loss.png").is_file()
    ckpt = find_checkpoint(tmp_path)
    assert ckpt is not None and load_checkpoint(ckpt).step == 6
    assert "\nROMEO:" in out  # the sample starts with the prompt

    # resuming a finished run trains no more and samples from the checkpoint; interactive reads stdin
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO("HAMLET:\n:q\n"))
        code, out, _ = _main([*TINY, "--out", str(tmp_path), "--resume", "--interactive"], capsys)
    assert code == 0 and "train loss" not in out and "\nprompt> HAMLET:" in out
    assert json.loads((tmp_path / "trainlog.json").read_text())["steps"] == log["steps"]


def test_bpe_local_vocab_and_finetune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vocab, merges = gpt2_files()
    extra = tmp_path / "extra.txt"
    extra.write_text("Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 40)
    argv = [
        *TINY,
        "--bpe-vocab",
        str(vocab),
        "--bpe-merges",
        str(merges),
        "--local-vocab",
        "300",
        "--max-chars",
        "8000",
        "--finetune-file",
        str(extra),
        "--finetune-steps",
        "3",
        "--out",
        str(tmp_path),
    ]
    code, out, _ = _main(argv, capsys)
    assert code == 0, out
    log = json.loads((tmp_path / "trainlog.json").read_text())
    assert log["data"]["tokenizer"] == "LocalTokenizer" and log["config"]["vocab"] == 300
    ft = json.loads((tmp_path / "finetune" / "trainlog.json").read_text())
    assert ft["data"]["finetune"] is True and len(ft["steps"]) == 3 and ft["data"]["corpus"] == str(extra)


def test_small_file_with_permission_goes_through_the_token_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(400)))
    monkeypatch.setenv("TYPEDLM_CACHE_DIR", str(tmp_path / "cache"))
    argv = [a for a in TINY if a not in ("--max-chars", "30000")]
    code, out, err = _main(
        [*argv, "--data-file", str(corpus), "--allow-small-data", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 0, err
    assert f"data: {corpus}, {corpus.stat().st_size:,} bytes" in out
    assert len(list((tmp_path / "cache").glob("small.txt.*.tokens"))) == 1


def test_the_cli_refuses_an_occupied_out_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main([*TINY, "--out", str(tmp_path)], capsys)[0] == 0
    before = _files(tmp_path)
    code, out, err = _main([*TINY, "--out", str(tmp_path)], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "already holds a run (checkpoint after step 6)" in err and "--overwrite" in err
    assert _files(tmp_path) == before
    assert _main([*TINY, "--out", str(tmp_path), "--overwrite", "--steps", "3"], capsys)[0] == 0
    found = find_checkpoint(tmp_path)
    assert found is not None and load_checkpoint(found).step == 3


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctrl_c_exits_130_with_the_log_written_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typedlm.training.trainer import TrainingInterrupted
    from typedlm.training.trainlog import TrainLog

    def interrupted(*args: object, **kwargs: object) -> TrainLog:
        log = TrainLog(config={}, train={}, device="cpu", dtype="float32", world_size=1, data={}, status="interrupted")
        raise TrainingInterrupted(2, log, tmp_path)

    monkeypatch.setattr(text_gpt2, "train", interrupted)
    code, _, err = _main([*TINY, "--out", str(tmp_path)], capsys)
    assert code == 130 and "Traceback" not in err
    assert "interrupted after step 2" in err and "continue with --resume" in err
    assert json.loads((tmp_path / "trainlog.json").read_text())["status"] == "interrupted"


def test_max_chars_of_a_folder_trains_on_its_first_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    texts = [
        f"Book {b}: " + "".join(f"line {i} of book {b}, to be or not to be.\n" for i in range(300)) for b in range(3)
    ]
    for b, text in enumerate(texts):
        (books / f"b{b}.txt").write_text(text)
    first = 20_000  # past the first file: the concatenation's first characters, not one file's
    argv = [a for a in TINY if a not in ("--max-chars", "30000")]
    argv += ["--max-chars", str(first), "--data-file", str(books), "--allow-small-data", "--out", str(tmp_path / "o")]
    code, out, err = _main(argv, capsys)
    assert code == 0, err
    assert f"data: {books}, {first:,} characters" in out
