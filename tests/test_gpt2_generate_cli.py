"""`python -m examples.gpt2_generate` on a tiny random GPT-2 saved in Hugging Face's layout."""

import io
from pathlib import Path

import pytest
import torch

import typedlm as tl
from examples import gpt2_generate
from typedlm.hf import save_gpt2
from typedlm.tokenizers import GPT2BPE, gpt2_files

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2's 50,257-token vocabulary over a 1-layer, 32-wide body."""
    cfg = tl.CausalConfig(batch=1, seq_len=64, vocab=50257, heads=2, head_dim=16, ffn_hidden=64, layers=1)
    directory = tmp_path_factory.mktemp("cli") / "tiny-gpt2"
    save_gpt2(tl.models.GPT2(cfg, seed=1), directory)
    return directory


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    try:
        code = gpt2_generate.main(argv, out)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    _, err = capsys.readouterr()
    return code, out.getvalue(), err


def test_streams_a_greedy_continuation_that_matches_generate(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        ["--model", str(model_dir), "--prompt", "Hello world", "--greedy", "--max-new-tokens", "8"], capsys
    )
    assert code == 0
    tok = GPT2BPE.from_vendored()
    model = tl.hf.load_gpt2(model_dir)
    ids = model.generate(torch.tensor([tok.encode("Hello world")]), 8, tl.Sampling(greedy=True))
    assert out == tok.decode(ids[0].tolist()) + "\n"


def test_several_seeded_samples_with_explicit_tokenizer_files(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vocab, merges = gpt2_files()
    files = ["--bpe-vocab", str(vocab), "--bpe-merges", str(merges)]
    sampling = ["--num-samples", "2", "--max-new-tokens", "5", "--top-k", "20", "--top-p", "0.9", "--seed", "3"]
    argv = ["--model", str(model_dir), *files, "--prompt", "A", *sampling]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out.count("--- sample") == 2 and out.startswith("A\n--- sample 1\nA")
    assert _run(argv, capsys)[1] == out  # the seed makes it repeatable


def test_bad_inputs_are_reported_as_usage_errors(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["--model", str(tmp_path)], capsys)
    assert code == 2 and "config.json: cannot read" in err
    code, _, err = _run(["--model", str(model_dir), "--top-p", "2"], capsys)
    assert code == 2 and "--top-p 2.0: must be in (0, 1]" in err
    code, _, err = _run(["--model", str(model_dir), "--bpe-vocab", "v.json"], capsys)
    assert code == 2 and "--bpe-vocab and --bpe-merges go together" in err
