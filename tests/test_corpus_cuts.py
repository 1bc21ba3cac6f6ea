"""The token cache's cuts for any text: chunked ids equal tiktoken's ids of the whole text, for scripts
whose lines end in non-ASCII characters, Unicode spaces, and long stretches with no safe spot, and a
text with no spaces at all is still cut into bounded chunks.

Reference: tiktoken's gpt2 encoding built offline from the vendored vocab.json (the same ranks),
encoding the whole text at once; ``regex``'s ``\\s`` for which characters are whitespace."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st
from test_text_data import TIKTOKEN

from typedlm.tokenizers import GPT2BPE, ByteTokenizer, CharTokenizer, LocalTokenizer, LocalVocab, Tokenizer
from typedlm.tokenizers import corpus_cache as cc
from typedlm.tokenizers.pretokenize import SAFE_CUT, WHITESPACE

GPT2 = GPT2BPE.from_vendored()
EOT = "<|endoftext|>"


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


# --- several files: a cut in the first bytes of a later file (issue 12) ------------------------------

SHORT_STARTS = ["abcdefgh", "I am here. x y\n", "The cat sat.\n", "a", "I", " b", "\n", "The end", "é é\n", "中 文"]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5])
def test_later_files_starting_with_short_words_are_cut_as_one_text(tmp_path: Path, chunk_bytes: int) -> None:
    names = []
    for k, text in enumerate(SHORT_STARTS):
        names.append(tmp_path / f"{k}.txt")
        names[-1].write_text(text, encoding="utf-8", newline="")
    whole = "".join(SHORT_STARTS)
    for specials in (set(), {EOT}):
        spans = cc.corpus_spans(names, chunk_bytes, specials)
        assert "".join(names[i].read_bytes()[s:e].decode() for span in spans for i, s, e in span) == whole
        assert len(spans) > len(whole.encode()) // (2 * chunk_bytes + 4)  # cut often, files included
    ids = cc.encode_corpus(names, GPT2, cache_dir=tmp_path / "cache", workers=1, chunk_bytes=chunk_bytes,
                           progress=False)  # fmt: skip
    assert ids.tolist() == TIKTOKEN.encode(whole, allowed_special="all")


def test_many_small_files_with_small_chunks_give_the_ids_of_the_concatenation(tmp_path: Path) -> None:
    words = ["The", "I", "am", "a", "cat", "sat.", "Я", "中文", "it's", "42", EOT, "\n", " "]
    names = []
    for k in range(300):
        text = " ".join(words[(k * 7 + j * 3) % len(words)] for j in range(k % 9)) + ("\n" if k % 3 else "")
        names.append(tmp_path / f"{k:03}.txt")
        names[-1].write_text(text, encoding="utf-8", newline="")
    whole = "".join(p.read_text(encoding="utf-8") for p in names)
    ids = cc.encode_corpus(names, GPT2, cache_dir=tmp_path / "cache", workers=2, chunk_bytes=16, progress=False)
    assert ids.tolist() == TIKTOKEN.encode(whole, allowed_special="all")
    byte_ids = cc.encode_corpus(names, ByteTokenizer(), cache_dir=tmp_path / "cache", chunk_bytes=3, progress=False)
    assert byte_ids.tolist() == list(whole.encode())


# --- where a corpus may be cut depends on the tokenizer (cut_rule) -----------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join), st.data())
def test_byte_and_char_tokenizers_encode_each_character_alone(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    chars = CharTokenizer.from_text(text + "x")
    for tokenizer in (ByteTokenizer(), chars):
        assert tokenizer.encode(text[:cut]) + tokenizer.encode(text[cut:]) == tokenizer.encode(text)


def test_the_cut_rule_of_each_tokenizer() -> None:
    byte_local = LocalTokenizer(ByteTokenizer(), LocalVocab.first_seen(b"ab", 256))
    gpt2_local = LocalTokenizer(GPT2, LocalVocab.first_seen(GPT2.encode("ab"), GPT2.vocab_size))
    assert cc.cut_rule(ByteTokenizer()) == cc.cut_rule(CharTokenizer("ab")) == cc.cut_rule(byte_local) == "anywhere"
    assert cc.cut_rule(GPT2) == cc.cut_rule(gpt2_local) == "pieces"
    assert cc.cut_rule(DistanceToEnd()) == "nowhere"


def test_byte_and_char_tokenizers_are_cut_without_a_warning(tmp_path: Path) -> None:
    text = "中文日本語" * 4000  # one GPT-2 pre-token of 60,000 bytes
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    spans = cc.chunk_spans(path.read_bytes(), 1000, rule="anywhere")
    assert len(spans) >= 59 and max(end - start for start, end in spans) <= 1003
    chars = CharTokenizer.from_text(text)
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("error")
        patch.setattr(cc, "_WINDOW_MIN", 2000)  # GPT-2's cuts would warn here (see the test above)
        byte_ids = cc.encode_corpus(path, ByteTokenizer(), cache_dir=tmp_path / "c", chunk_bytes=1000, progress=False)
        char_ids = cc.encode_corpus(path, chars, cache_dir=tmp_path / "c", chunk_bytes=1000, progress=False)
    assert byte_ids.tolist() == list(text.encode())
    assert char_ids.tolist() == [chars.alphabet.index(char) for char in text]


class DistanceToEnd:
    """A tokenizer the cache does not know, whose ids change wherever the text is cut: each character's
    id is its distance to the end of the text (mod 256)."""

    vocab_size = 256
    eot_token = None
    special_tokens: frozenset[str] = frozenset()
    fingerprint = "distance-to-end"

    def encode(self, text: str, *, allowed_special: object = (), disallowed_special: object = ()) -> list[int]:
        return self.encode_ordinary(text)

    def encode_ordinary(self, text: str) -> list[int]:
        return [(len(text) - 1 - k) % 256 for k in range(len(text))]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        raise NotImplementedError


def test_a_tokenizer_the_cache_does_not_know_is_given_the_whole_corpus(tmp_path: Path) -> None:
    names = [tmp_path / f"{k}.txt" for k in range(3)]
    for k, path in enumerate(names):
        path.write_text(f"file {k} says: the quick brown fox\n" * 5, encoding="utf-8")
    whole = "".join(p.read_text(encoding="utf-8") for p in names)
    tokenizer = DistanceToEnd()
    assert isinstance(tokenizer, Tokenizer)
    ids = cc.encode_corpus(names, tokenizer, cache_dir=tmp_path / "cache", chunk_bytes=4, progress=False)
    assert ids.tolist() == tokenizer.encode(whole)
