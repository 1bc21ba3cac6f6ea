"""The token cache's cuts for any text: chunked ids equal tiktoken's ids of the whole text, for scripts
whose lines end in non-ASCII characters, Unicode spaces, and long stretches with no safe spot, and a
text with no spaces at all is still cut into bounded chunks.

Reference: tiktoken's gpt2 encoding built offline from the vendored vocab.json (the same ranks),
encoding the whole text at once; ``regex``'s ``\\s`` for which characters are whitespace."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from typedlm.tokenizers import GPT2BPE, gpt2_files
from typedlm.tokenizers import corpus_cache as cc
from typedlm.tokenizers.byte_level import CHAR_TO_BYTE
from typedlm.tokenizers.pretokenize import GPT2_PATTERN, SAFE_CUT, WHITESPACE

GPT2 = GPT2BPE.from_vendored()
EOT = "<|endoftext|>"


def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's gpt2 encoding, built offline from the vendored vocab.json."""
    vocab: dict[str, int] = json.loads(gpt2_files()[0].read_text(encoding="utf-8"))
    ranks = {bytes(CHAR_TO_BYTE[char] for char in token): rank for token, rank in vocab.items() if token != EOT}
    return tiktoken.Encoding("gpt2-files", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


TIKTOKEN = tiktoken_gpt2()

TEXTS = {
    "cyrillic lines": "Привет, мир\nЭто тест строки\nещё одна строка без точки\n" * 60,
    "greek": "Καλημέρα κόσμε\nΑυτή είναι μια γραμμή\n" * 60,
    "cjk with newlines": "中文字符的文本\n日本語のテキストです\n한국어 텍스트\n" * 60,
    "mixed scripts": "English то русский 中文 Ελληνικά it's 42 €5 😀\nконец\u00a0\n" * 40,
    "unicode spaces before spaces": "слово\u00a0 \u3000 \u2003\nx\u3000\n\u00a0\u00a0 word \u205f\n" * 60,
    "one long cjk line with punctuation": "中文，日本語。한국어！" * 200,
    "one long cyrillic line": ("слово" + "\u00a0") * 300,
    "documents": ("Документ первый.\n" + EOT + "второй документ\n" + EOT) * 40,
}


@pytest.fixture
def small_windows() -> Iterator[None]:
    """`_piece_cut` pre-tokenizes windows of a few dozen bytes, so its windows end inside the text."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cc, "_WINDOW_MIN", 24)
        yield


def test_safe_cut_is_any_non_whitespace_character_before_a_space_or_newline() -> None:
    everything = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)
    assert set(regex.compile(r"\s").findall(everything)) == WHITESPACE
    some = everything[:0xD800] + everything[0xD800::97]  # the BMP, and a sample of the rest
    for follower in (b" ", b"\n"):
        joined = follower.join(char.encode() for char in some) + follower
        cut_after = {joined[m.start() : m.end()].decode() for m in SAFE_CUT.finditer(joined)}
        assert cut_after == set(some) - WHITESPACE
    assert SAFE_CUT.search(b"a\tb") is None  # a tab is whitespace but not a cut spot


@pytest.mark.parametrize("name", TEXTS)
@pytest.mark.parametrize("chunk_bytes", [7, 64])
def test_chunked_cache_equals_tiktoken_on_the_whole_text(
    tmp_path: Path, name: str, chunk_bytes: int, small_windows: None
) -> None:
    text = TEXTS[name]
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8", newline="")
    spans = cc.corpus_spans([path], chunk_bytes, {EOT})
    assert len(spans) > len(text.encode()) // (4 * cc.LONG_STRETCH * chunk_bytes)  # many cuts were exercised
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every cut is at a piece boundary: no warning
        ids = cc.encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", workers=1, chunk_bytes=chunk_bytes,
                               progress=False)  # fmt: skip
    assert ids.tolist() == TIKTOKEN.encode(text, allowed_special="all")


def test_a_folder_of_files_without_final_newlines_is_cut_across_them(tmp_path: Path) -> None:
    names = []
    for k, text in enumerate(TEXTS.values()):
        (tmp_path / f"{k}.txt").write_text(text.rstrip(), encoding="utf-8")
        names.append(tmp_path / f"{k}.txt")
    whole = "".join(p.read_text(encoding="utf-8") for p in names)
    spans = cc.corpus_spans(names, 50, {EOT})
    assert any(len(span) > 1 for span in spans) and len(spans) > 100
    ids = cc.encode_corpus(names, GPT2, cache_dir=tmp_path / "cache", workers=2, chunk_bytes=50, progress=False)
    assert ids.tolist() == TIKTOKEN.encode(whole, allowed_special="all")


ALPHABET = [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u3000", "\u2003", "中", "文", "。", "，", "ж", "Я", "ё",
            "a", "Z", ".", ",", "!", "'", "'s", "'ll", "0", "42", "😀", "é", EOT]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=120).map("".join), st.integers(1, 16))
def test_chunks_of_random_mixed_text_encode_as_the_whole(text: str, chunk_bytes: int) -> None:
    data = text.encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cc, "_WINDOW_MIN", 12)
        spans = cc.chunk_spans(data, chunk_bytes, {EOT})
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    chunks = [data[start:end].decode() for start, end in spans]
    assert "".join(chunks) == text
    ids = [i for chunk in chunks for i in GPT2.encode(chunk, allowed_special="all")]
    assert ids == TIKTOKEN.encode(text, allowed_special="all")


def test_a_text_with_no_spaces_is_cut_into_bounded_chunks(tmp_path: Path) -> None:
    data = ("中文日本語" * 4000).encode()  # one pre-token of 60,000 bytes
    with pytest.MonkeyPatch.context() as patch, pytest.warns(UserWarning, match="the ids at such cuts may differ"):
        patch.setattr(cc, "_WINDOW_MIN", 2000)
        spans = cc.chunk_spans(data, 1000)
    assert len(spans) >= len(data) // ((cc.LONG_STRETCH + 1) * 1000)
    assert max(end - start for start, end in spans) <= (cc.LONG_STRETCH + 1) * 1000
    assert b"".join(data[start:end] for start, end in spans) == data
    for start, end in spans:
        data[start:end].decode()  # whole characters


def test_no_cut_falls_inside_a_special_token() -> None:
    text = "x<|end of text|>, y<|end of text|>\n" * 50  # a special token with a safe spot inside it
    data = text.encode()
    cuts = {start for start, _ in cc.chunk_spans(data, 3, {"<|end of text|>"})}
    inside = {at + k for at in range(len(data)) if data.startswith(b"<|end of text|>", at) for k in range(1, 15)}
    assert len(cuts) > 50 and not cuts & inside
    assert {start for start, _ in cc.chunk_spans(data, 3)} & inside  # without the special, cuts fall inside
