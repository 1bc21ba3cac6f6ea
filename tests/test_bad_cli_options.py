"""Every command line refuses a bad option before any work: exit status 2, one line ``PROG: error: ...``
naming the flag (plus at most a ``--help`` hint), no traceback, and nothing written to disk."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import typedlm as tl
from examples import char_gpt2, gpt2_generate, sort_gpt2, text_gpt2
from typedlm.check import cli as check_cli
from typedlm.hf import save_gpt2
from typedlm.tokenizers import gpt2_files

VOCAB, MERGES = (str(p) for p in gpt2_files())
TEXT = ["--preset", "tiny", "--steps", "2", "--no-progress", "--generate", "0", "--out", "run"]
CHAR = ["--num-steps", "2", "--num-blocks", "1", "--num-heads", "2", "--embedding-dim", "8", "--no-progress"]
Main = Callable[[Sequence[str]], int]
MAINS: dict[str, Main] = {
    "text_gpt2": text_gpt2.main,
    "char_gpt2": char_gpt2.main,
    "gpt2_generate": gpt2_generate.main,
    "sort_gpt2": sort_gpt2.main,
    "typedlm check": check_cli.main,
}

# (id, program, arguments, fragments the one error line must hold); "MODEL" is a saved tiny GPT-2.
CASES: list[tuple[str, str, list[str], list[str]]] = [
    ("temperature nan", "text_gpt2", [*TEXT, "--temperature", "nan"], ["--temperature nan", "finite"]),
    ("temperature negative", "text_gpt2", [*TEXT, "--temperature", "-1"], ["--temperature -1.0", ">= 0"]),
    ("temperature inf", "text_gpt2", [*TEXT, "--temperature", "inf"], ["--temperature inf"]),
    ("top-k negative", "text_gpt2", [*TEXT, "--top-k", "-1"], ["--top-k -1", ">= 0"]),
    ("top-p 0", "text_gpt2", [*TEXT, "--top-p", "0"], ["--top-p 0.0", "(0, 1]"]),
    ("top-p above 1", "text_gpt2", [*TEXT, "--top-p", "1.5"], ["--top-p 1.5"]),
    ("top-p nan", "text_gpt2", [*TEXT, "--top-p", "nan"], ["--top-p nan"]),
    ("local vocab 1", "text_gpt2", [*TEXT, "--bpe-vocab", VOCAB, "--bpe-merges", MERGES, "--local-vocab", "1"],
     ["--local-vocab 1", "2..50257"]),
    ("local vocab too big", "text_gpt2", [*TEXT, "--bpe-vocab", VOCAB, "--bpe-merges", MERGES, "--local-vocab",
     "60000"], ["--local-vocab 60000", "2..50257"]),
    ("local vocab without bpe", "text_gpt2", [*TEXT, "--local-vocab", "100"], ["--local-vocab", "--bpe-vocab"]),
    ("full vocab without bpe", "text_gpt2", [*TEXT, "--full-vocab"], ["--full-vocab", "needs --bpe-vocab"]),
    ("full and local vocab", "text_gpt2", [*TEXT, "--bpe-vocab", VOCAB, "--bpe-merges", MERGES, "--full-vocab",
     "--local-vocab", "300"], ["--full-vocab and --local-vocab contradict"]),
    ("data glob matches nothing", "text_gpt2", [*TEXT, "--data-file", "nothing*.txt"],
     ["--data-file nothing*.txt", "no file matches"]),
    ("vocab below tokenizer", "text_gpt2", [*TEXT, "--vocab", "100"], ["--vocab 100", "256"]),
    ("lr 0", "text_gpt2", [*TEXT, "--lr", "0"], ["--lr 0.0", "> 0"]),
    ("lr nan", "text_gpt2", [*TEXT, "--lr", "nan"], ["--lr nan", "finite"]),
    ("lr negative", "text_gpt2", [*TEXT, "--lr", "-0.1"], ["--lr -0.1"]),
    ("min-lr above lr", "text_gpt2", [*TEXT, "--lr", "1e-4", "--min-lr", "1e-3"], ["--min-lr 0.001", "<= lr"]),
    ("steps 0", "text_gpt2", [*TEXT, "--steps", "0"], ["--steps 0", ">= 1"]),
    ("steps not a number", "text_gpt2", [*TEXT, "--steps", "many"], ["--steps", "invalid int value: 'many'"]),
    ("heads 0", "text_gpt2", [*TEXT, "--heads", "0"], ["--heads 0"]),
    ("dropout 1", "text_gpt2", [*TEXT, "--dropout", "1"], ["--dropout 1.0", "[0, 1)"]),
    ("grad-accum 0", "text_gpt2", [*TEXT, "--grad-accum", "0"], ["--grad-accum 0"]),
    ("seed negative", "text_gpt2", [*TEXT, "--seed", "-1"], ["--seed -1"]),
    ("val-fraction 1", "text_gpt2", [*TEXT, "--val-fraction", "1"], ["--val-fraction 1.0", "(0, 1)"]),
    ("max-chars 0", "text_gpt2", [*TEXT, "--max-chars", "0"], ["--max-chars 0"]),
    ("generate negative", "text_gpt2", [*TEXT, "--generate", "-5"], ["--generate -5"]),
    ("bpe vocab alone", "text_gpt2", [*TEXT, "--bpe-vocab", VOCAB], ["--bpe-vocab requires --bpe-merges"]),
    ("unknown preset", "text_gpt2", [*TEXT, "--preset", "huge"], ["--preset", "invalid choice: 'huge'"]),
    ("data file missing", "text_gpt2", [*TEXT, "--data-file", "nope.txt"], ["--data-file nope.txt", "no such file"]),
    ("data file a directory", "text_gpt2", [*TEXT, "--data-file", "a_dir"], ["--data-file a_dir", "directory"]),
    ("data file a fifo", "text_gpt2", [*TEXT, "--data-file", "a_fifo"], ["--data-file a_fifo", "not a regular file"]),
    ("finetune file missing", "text_gpt2", [*TEXT, "--finetune-file", "nope.txt"], ["--finetune-file nope.txt"]),
    ("finetune file a fifo", "text_gpt2", [*TEXT, "--finetune-file", "a_fifo"], ["--finetune-file a_fifo"]),
    ("bpe merges missing", "text_gpt2", [*TEXT, "--bpe-vocab", VOCAB, "--bpe-merges", "nope.txt"],
     ["--bpe-merges nope.txt"]),
    ("bpe files swapped", "text_gpt2", [*TEXT, "--bpe-vocab", MERGES, "--bpe-merges", VOCAB],
     ["merges.txt", "vocab.json", "swapped"]),
    ("out is a file", "text_gpt2", [*TEXT[:-1], "a_file.txt"], ["--out a_file.txt", "is a file"]),
    ("log is a directory", "text_gpt2", [*TEXT, "--log", "a_dir"], ["--log a_dir", "is a directory"]),
    ("log under a file", "text_gpt2", [*TEXT, "--log", "a_file.txt/log.json"], ["--log a_file.txt/log.json"]),
    ("resume without a run", "text_gpt2", [*TEXT, "--resume"], ["--out run", "no checkpoint to --resume"]),
    ("resume and overwrite", "text_gpt2", [*TEXT, "--resume", "--overwrite"], ["--resume and --overwrite"]),
    ("special token in prompt", "text_gpt2", [*TEXT, "--bpe-vocab", VOCAB, "--bpe-merges", MERGES, "--prompt",
     "hi <|endoftext|>"], ["--prompt", "<|endoftext|>", "--allow-special"]),
    ("model too big for memory", "text_gpt2", [*TEXT, "--batch", "100000", "--seq-len", "1024"],
     ["need at least", "GiB", "--batch"]),
    ("cuda without a gpu", "text_gpt2", [*TEXT, "--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
    ("char temperature nan", "char_gpt2", [*CHAR, "--temperature", "nan"], ["--temperature nan"]),
    ("char context 0", "char_gpt2", [*CHAR, "--context-size", "0"], ["--context-size 0"]),
    ("char heads do not divide", "char_gpt2", [*CHAR, "--embedding-dim", "9"], ["--embedding-dim 9", "--num-heads"]),
    ("char lr 0", "char_gpt2", [*CHAR, "--lr", "0"], ["--lr 0.0"]),
    ("char steps 0", "char_gpt2", [*CHAR, "--num-steps", "0"], ["--num-steps 0"]),
    ("char data file missing", "char_gpt2", [*CHAR, "--data-file", "nope.txt"], ["--data-file nope.txt"]),
    ("char sample chars negative", "char_gpt2", [*CHAR, "--sample-chars", "-1"], ["--sample-chars -1"]),
    ("generate model missing", "gpt2_generate", ["--model", "nope"], ["nope: not a directory"]),
    ("generate model a file", "gpt2_generate", ["--model", "a_file.txt"], ["a_file.txt: not a directory"]),
    ("generate model empty dir", "gpt2_generate", ["--model", "a_dir"], ["a_dir/config.json"]),
    ("generate top-p 2", "gpt2_generate", ["--model", "MODEL", "--top-p", "2"], ["--top-p 2.0"]),
    ("generate top-k 0", "gpt2_generate", ["--model", "MODEL", "--top-k", "0"], ["--top-k 0"]),
    ("generate temperature nan", "gpt2_generate", ["--model", "MODEL", "--temperature", "nan"], ["--temperature"]),
    ("generate samples 0", "gpt2_generate", ["--model", "MODEL", "--num-samples", "0"], ["--num-samples 0"]),
    ("generate tokens negative", "gpt2_generate", ["--model", "MODEL", "--max-new-tokens", "-1"],
     ["--max-new-tokens -1"]),
    ("generate device", "gpt2_generate", ["--model", "MODEL", "--device", "tpu"], ["--device", "invalid choice"]),
    ("generate vocab alone", "gpt2_generate", ["--model", "MODEL", "--bpe-vocab", VOCAB], ["--bpe-vocab"]),
    ("generate model vocab smaller", "gpt2_generate", ["--model", "MODEL"], ["--model", "vocab_size 64"]),
    ("sort config missing", "sort_gpt2", ["-c", "nope.yaml"], ["--config nope.yaml", "no such file"]),
    ("sort config a list", "sort_gpt2", ["-c", "list.yaml"], ["list.yaml", "mapping of sections"]),
    ("sort config bad yaml", "sort_gpt2", ["-c", "broken.yaml"], ["broken.yaml:2", "not valid YAML"]),
    ("sort key wrong type", "sort_gpt2", ["-c", "wrong_type.yaml"], ["wrong_type.yaml", "train.lr='fast'"]),
    ("sort key out of range", "sort_gpt2", ["-c", "bad_heads.yaml"], ["bad_heads.yaml", "model.heads=0"]),
    ("sort unknown key", "sort_gpt2", ["-c", "typo.yaml"], ["typo.yaml", "stepz", "'train'"]),
    ("sort output is a file", "sort_gpt2", ["-c", "out_file.yaml"], ["out_file.yaml", "output.dir", "is a file"]),
    ("check max-params", "typedlm check", ["--max-params", "-1"], ["--max-params -1"]),
    ("log inside a checkpoint", "text_gpt2", [*TEXT, "--log", "other/checkpoint/state.json"],
     ["--log other/checkpoint/state.json", "inside a checkpoint directory"]),
    ("log over a file of another kind", "text_gpt2", [*TEXT, "--log", "a_file.txt"],
     ["--log a_file.txt", "not a typedlm training log"]),
    ("log is a device", "text_gpt2", [*TEXT, "--log", "/dev/null"], ["--log /dev/null", "not a regular file"]),
    ("out is a symlink loop", "text_gpt2", [*TEXT[:-1], "a_loop"], ["--out a_loop", "looping symbolic link"]),
    ("run with a file missing", "text_gpt2", [*TEXT[:-1], "partial"], ["--out partial", "lacks optimizer.safetensors",
     "--overwrite"]),
    ("resume with a file missing", "text_gpt2", [*TEXT[:-1], "partial", "--resume"], ["lacks optimizer.safetensors"]),
    ("generate special token", "gpt2_generate", ["--model", "MODEL", "--prompt", "a<|endoftext|>"],
     ["--prompt", "<|endoftext|>", "--allow-special"]),
    ("sort duplicate key", "sort_gpt2", ["-c", "twice.yaml"], ["twice.yaml:3", "duplicate key 'steps'"]),
    ("sort exponent without dot", "sort_gpt2", ["-c", "exponent.yaml"], ["train.lr='5e-4'", "write it with a dot",
     "5.0e-04"]),
    ("corpus too short", "text_gpt2", [*TEXT, "--data-file", "one_char.txt", "--allow-small-data"],
     ["one_char.txt: the train split has", "seq_len + 1"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved GPT-2 whose vocabulary (64) is smaller than GPT-2's tokenizer's."""
    cfg = tl.CausalConfig(batch=1, seq_len=8, vocab=64, heads=2, head_dim=4, ffn_hidden=16, layers=1)
    directory = tmp_path_factory.mktemp("hf") / "tiny"
    save_gpt2(tl.models.GPT2(cfg), directory)
    return directory


def _workspace(root: Path) -> None:
    """The files the cases refer to."""
    (root / "a_dir").mkdir()
    (root / "a_file.txt").write_text("not a directory\n")
    os.mkfifo(root / "a_fifo")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "broken.yaml").write_text("task:\n\tlength: 6\n")
    (root / "wrong_type.yaml").write_text("train:\n  lr: fast\n")
    (root / "bad_heads.yaml").write_text("model:\n  heads: 0\n")
    (root / "typo.yaml").write_text("train:\n  stepz: 3\n")
    (root / "out_file.yaml").write_text("output:\n  dir: a_file.txt\n")
    (root / "twice.yaml").write_text("train:\n  steps: 3\n  steps: 50\n")
    (root / "exponent.yaml").write_text("train:\n  lr: 5e-4\n")
    (root / "one_char.txt").write_text("x")
    (root / "other" / "checkpoint").mkdir(parents=True)
    (root / "other" / "checkpoint" / "state.json").write_text("{}\n")
    (root / "a_loop").symlink_to("a_loop")
    (root / "partial" / "checkpoint").mkdir(parents=True)  # a run whose optimizer file was lost
    for name in ("model.safetensors", "state.json"):
        (root / "partial" / "checkpoint" / name).write_text("kept\n")


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root`` with its mode, mtime and content digest (FIFOs are not read)."""
    state: dict[str, tuple[int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.exists():  # a loop: nothing to read
            state[str(path.relative_to(root))] = (path.lstat().st_mode, path.lstat().st_mtime_ns, "")
            continue
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        state[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, digest)
    return state


def run_cli(program: str, argv: Sequence[str]) -> tuple[int, str]:
    """Run one command line in-process: its exit status and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = MAINS[program](argv)
        except SystemExit as stop:  # argparse's own refusals
            code = int(stop.code or 0)
    return code, err.getvalue()


@pytest.mark.parametrize(("program", "argv", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_option_is_one_line_naming_the_flag_and_changes_nothing(
    program: str,
    argv: list[str],
    fragments: list[str],
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path.with_name(tmp_path.name + "-cache")  # token caches are not the user's files
    monkeypatch.setenv("TYPEDLM_CACHE_DIR", str(cache))
    before = snapshot(tmp_path)
    code, err = run_cli(program, [str(model_dir) if a == "MODEL" else a for a in argv])
    assert code == 2, err
    lines = err.splitlines()
    assert lines and lines[0].startswith((f"{program}: error: ", f"python -m examples.{program}: error: ")), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].strip().startswith("(see:")), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert snapshot(tmp_path) == before, "a refused run changed files on disk"


def test_the_table_covers_every_command_line() -> None:
    assert {program for _, program, _, _ in CASES} == set(MAINS)


def test_an_interactive_prompt_with_a_special_token_is_refused_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = text_gpt2.build_parser().parse_args([*TEXT, "--bpe-vocab", VOCAB, "--bpe-merges", MERGES])
    tokenizer = tl.tokenizers.GPT2BPE.from_files(VOCAB, MERGES)
    cfg = tl.CausalConfig(batch=1, seq_len=8, vocab=tokenizer.vocab_size, heads=1, head_dim=4, ffn_hidden=8, layers=1)
    monkeypatch.setattr(sys, "stdin", io.StringIO("<|endoftext|>\nhello\n:q\n"))
    args.generate = 2
    text_gpt2.interact(tl.models.GPT2(cfg), tokenizer, args)
    out = capsys.readouterr().out
    assert "special token '<|endoftext|>'" in out and "--allow-special" in out
    assert out.count("prompt> ") == 3  # asked again after the refusal, and after "hello"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("TYPEDLM_CHECKS", "sometimes", "TYPEDLM_CHECKS='sometimes': must be one of full, boundary, off"),
        ("TYPEDLM_CACHE_DIR", "a_file.txt", "TYPEDLM_CACHE_DIR a_file.txt: is a file, not a directory"),
    ],
)
def test_a_bad_environment_variable_is_one_line_from_a_real_process(
    variable: str, value: str, fragment: str, tmp_path: Path
) -> None:
    _workspace(tmp_path)
    env = os.environ | {variable: value, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "examples.text_gpt2", *TEXT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == f"text_gpt2: error: {fragment}\n"
    assert snapshot(tmp_path) == before
