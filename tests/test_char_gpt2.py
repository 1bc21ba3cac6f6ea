"""`python -m examples.char_gpt2`: numpygrad's flags, a tiny end-to-end run, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from examples import char_gpt2

TINY = ["--context-size", "16", "--num-blocks", "1", "--num-heads", "2", "--embedding-dim", "32", "--batch-size", "8",
        "--num-steps", "40", "--lr", "3e-3", "--max-chars", "20000", "--sample-chars", "12", "--eval-every", "20",
        "--eval-batches", "2", "--device", "cpu", "--no-progress"]  # fmt: skip


def test_defaults_are_numpygrads() -> None:
    args = char_gpt2.build_parser().parse_args([])
    assert (args.context_size, args.num_blocks, args.num_heads, args.embedding_dim) == (64, 6, 6, 288)
    assert (args.num_steps, args.batch_size, args.temperature, args.dropout, args.data_file) == (
        2048,
        32,
        1.0,
        0.0,
        None,
    )
    cfg = char_gpt2.model_config(args, vocab=65)
    assert (cfg.seq_len, cfg.layers, cfg.heads, cfg.head_dim, cfg.d_model, cfg.ffn_hidden) == (64, 6, 6, 48, 288, 1152)


def test_tiny_run_samples_before_and_after_and_learns(capsys: pytest.CaptureFixture[str]) -> None:
    val = char_gpt2.run(char_gpt2.build_parser().parse_args(TINY))
    out = capsys.readouterr().out
    assert "sample before training:" in out and "sample after training:" in out and f"val loss {val:.4f}" in out
    assert "step 20: train loss" in out and "step 40: train loss" in out  # the periodic val loss
    alphabet = int(out.split("alphabet of ")[1].split(";")[0])
    assert val < math.log(alphabet)  # better than uniform over the characters


def test_data_file_gives_its_own_alphabet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "abc.txt"
    text.write_text("abcab cab\n" * 300)
    char_gpt2.run(char_gpt2.build_parser().parse_args([*TINY, "--num-steps", "3", "--data-file", str(text)]))
    out = capsys.readouterr().out
    assert "alphabet of 5;" in out
    after = out.split("sample after training:\n")[1].split("\n---")[0]
    assert set(after) <= set("abc \n")


def test_width_must_split_into_heads(capsys: pytest.CaptureFixture[str]) -> None:
    assert char_gpt2.main([*TINY, "--embedding-dim", "33"]) == 2
    assert "--embedding-dim 33 is not a multiple of --num-heads 2" in capsys.readouterr().err


@pytest.mark.slow
def test_default_flags_reach_a_shakespeare_val_loss(capsys: pytest.CaptureFixture[str]) -> None:
    """numpygrad's model at its default flags; measured: val loss 1.54 after 2048 steps, 2591 s on one CPU thread."""
    val = char_gpt2.run(char_gpt2.build_parser().parse_args(["--no-progress"]))
    assert val < 1.8
