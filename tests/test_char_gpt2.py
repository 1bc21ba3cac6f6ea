"""`python -m examples.char_gpt2`: numpygrad's flags, a tiny end-to-end run, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from examples import char_gpt2
from typedlm.tokenizers import CharTokenizer
from typedlm.training.corpus import Corpus
from typedlm.training.text_data import corpus_alphabet, corpus_source, prepare_text_data

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


def write_books(root: Path) -> str:
    """A folder of UTF-8 files (one in a subfolder, one hidden and left out); their concatenation in path order."""
    books = {"a.txt": "Привет, мир! ", "b.txt": "abcab cab\n" * 200, "sub/c.txt": "中文字符 é\n" * 100}
    for name, text in books.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / ".notes.txt").write_text("hidden §")
    return "".join(books[name] for name in sorted(books, key=lambda n: str(root / n)))


def test_a_folder_corpus_goes_through_the_token_cache_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TYPEDLM_CACHE_DIR", str(tmp_path / "cache"))
    text = write_books(tmp_path / "books")
    source = corpus_source(tmp_path / "books", allow_small=True)
    tokenizer = CharTokenizer(corpus_alphabet(source))
    data = prepare_text_data(source, tokenizer, cache_dir=tmp_path / "cache")
    reference = CharTokenizer.from_text(text)
    assert tokenizer.alphabet == reference.alphabet
    assert data.tokens.tolist() == reference.encode(text)
    no_limit = [flag for flag in TINY if flag not in ("--max-chars", "20000")]
    for spec in (tmp_path / "books", tmp_path / "books" / "**" / "*.txt"):
        val = char_gpt2.run(char_gpt2.build_parser().parse_args([*no_limit, "--num-steps", "3", "--data-file",
                                                                 str(spec)]))  # fmt: skip
        out = capsys.readouterr().out
        assert f"{len(text):,} characters, alphabet of {len(reference.alphabet)};" in out
        assert math.isfinite(val)
    assert len(list((tmp_path / "cache").glob("books.corpus.*.tokens"))) == 1  # one cache, reused


def test_max_chars_of_a_folder_reads_its_first_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = write_books(tmp_path / "books")
    source = corpus_source(tmp_path / "books", max_chars=500, allow_small=True)
    assert isinstance(source, Corpus) and source.text == text[:500]
    char_gpt2.run(char_gpt2.build_parser().parse_args([*TINY, "--max-chars", "500", "--num-steps", "2", "--data-file",
                                                       str(tmp_path / "books")]))  # fmt: skip
    assert f"500 characters, alphabet of {len(set(text[:500]))};" in capsys.readouterr().out


def test_a_folder_without_text_is_refused_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert char_gpt2.main([*TINY, "--data-file", str(tmp_path / "empty")]) == 2
    assert f"--data-file {tmp_path / 'empty'}: is a directory with no text files in it" in capsys.readouterr().err


@pytest.mark.parametrize("max_chars", [[], ["--max-chars", "100"]])
def test_a_file_of_a_folder_that_is_not_utf8_is_named_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], max_chars: list[str]
) -> None:
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "bad.txt").write_bytes(b"good line\n" * 3 + b"bad \xff\n")
    no_limit = [flag for flag in TINY if flag not in ("--max-chars", "20000")]
    assert char_gpt2.main([*no_limit, *max_chars, "--data-file", str(tmp_path / "books")]) == 2
    assert f"{tmp_path / 'books' / 'bad.txt'}:4: not valid UTF-8 (byte offset 34)" in capsys.readouterr().err
