"""encode_corpus: chunked, parallel, cached; chunk boundaries never change the ids."""

from __future__ import annotations

import os
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typedlm.tokenizers import GPT2BPE, ByteTokenizer, CharTokenizer, encode_corpus
from typedlm.tokenizers import corpus_cache as cc

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
GPT2 = GPT2BPE.from_vendored()

TRICKY = (
    "First line.\nSecond  line with  double spaces  \n\n\n  indented\r\nwindows line\r\n"
    "tabs\tand\t\ttabs \t\n trailing spaces   \nunicode spaces\u00a0\u3000here \u2003\n"
    "it's 'S 'll 123 4567 €100 中文 😀 e\u0301 <|endoftext|> next document\n"
) * 40


def write(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_parallel_chunked_encoding_equals_whole_file_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, TRICKY)
    ids = encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", workers=2, chunk_bytes=97, progress=False)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    assert ids.tolist() == GPT2.encode(TRICKY, allowed_special="all")
    assert len(cc.chunk_spans(path.read_bytes(), 97)) > 20  # many cuts were exercised


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is not here (it lives in ../shared/data)")
def test_tiny_shakespeare_in_chunks_equals_one_encode(tmp_path: Path) -> None:
    ids = encode_corpus(SHAKESPEARE, GPT2, cache_dir=tmp_path, workers=2, chunk_bytes=10_000, progress=False)
    assert ids.tolist() == GPT2.encode(SHAKESPEARE.read_text(encoding="utf-8"))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(["a", "b.", " ", "\n", "  ", " \n", "\r\n", "'s", "1"]), st.text(max_size=4))),
    st.integers(1, 12),
)
def test_cutting_at_safe_spots_never_changes_the_ids(parts: list[str], chunk_bytes: int) -> None:
    data = "".join(parts).encode("utf-8", "surrogatepass")
    spans = cc.chunk_spans(data, chunk_bytes)
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in pairwise(spans))
    pieces = [GPT2.encode_ordinary(data[start:end].decode("utf-8", "surrogatepass")) for start, end in spans]
    assert [i for piece in pieces for i in piece] == GPT2.encode_ordinary(data.decode("utf-8", "surrogatepass"))


def test_a_rerun_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, TRICKY)
    first = encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", workers=1, progress=False)
    [cache_file] = (tmp_path / "cache").iterdir()
    stamp = cache_file.stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(cc, "_write_cache", fail)
    again = encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", progress=False)
    assert again.tolist() == first.tolist()
    assert cache_file.stat().st_mtime_ns == stamp


def test_the_key_covers_content_tokenizer_and_specials(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = write(tmp_path, "one<|endoftext|>two")
    assert encode_corpus(path, GPT2, cache_dir=cache, progress=False).tolist() == [505, 50256, 11545]
    ordinary = encode_corpus(path, GPT2, cache_dir=cache, allowed_special=frozenset(), progress=False)
    assert ordinary.tolist() == GPT2.encode_ordinary("one<|endoftext|>two")
    assert encode_corpus(path, ByteTokenizer(), cache_dir=cache, progress=False).tolist() == list(path.read_bytes())
    chars = CharTokenizer.from_text("one<|endoftext|>two")
    assert chars.decode(encode_corpus(path, chars, cache_dir=cache, progress=False)) == "one<|endoftext|>two"
    write(tmp_path, "one two")
    assert encode_corpus(path, GPT2, cache_dir=cache, progress=False).tolist() == [505, 734]
    assert len(list(cache.iterdir())) == 5


def flip_last_token_byte(raw: bytes) -> bytes:
    """A cache with one bit of its last token flipped (the tokens are followed by a u64 count per id)."""
    at = len(raw) - 8 * GPT2.vocab_size - 2
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[:-3], "has .* bytes after its header where its header says"),
        (lambda raw: flip_last_token_byte(raw), "fails its checksum"),
        (lambda raw: b"garbage!" + raw[8:], "is not a typedlm token cache"),
        (lambda raw: raw[:200], "has 72 bytes after its header"),
        (lambda raw: raw[:10], "is shorter than its header"),
    ],
)
def test_a_partial_or_corrupt_cache_is_rebuilt(tmp_path: Path, damage: object, reason: str) -> None:
    path = write(tmp_path, TRICKY)
    expected = encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", progress=False).tolist()
    [cache_file] = (tmp_path / "cache").iterdir()
    assert callable(damage)
    cache_file.write_bytes(damage(cache_file.read_bytes()))
    with pytest.warns(UserWarning, match=reason):
        rebuilt = encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", progress=False, verify=True)
    assert rebuilt.tolist() == expected
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_bad_utf8_names_file_and_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\n" * 300 + b"bad \xff line\n" + b"more\n" * 300)
    for workers in (1, 2):
        with pytest.raises(ValueError, match=re.escape(f"{path}:301: not valid UTF-8")):
            encode_corpus(path, GPT2, cache_dir=tmp_path / "cache", workers=workers, chunk_bytes=500, progress=False)
        assert list((tmp_path / "cache").iterdir()) == []


def test_vocabularies_beyond_uint16_are_refused(tmp_path: Path) -> None:
    huge = CharTokenizer(chr(cp) for cp in range(0xE000, 0xE000 + 70_000) if not 0xD800 <= cp < 0xE000)
    with pytest.raises(ValueError, match="does not fit the uint16 token cache"):
        encode_corpus(write(tmp_path, "x"), huge, cache_dir=tmp_path, progress=False)
    full = CharTokenizer(chr(cp) for cp in range(0x10000, 0x10000 + 65_536))
    text = chr(0x10000 + 65_535) + chr(0x10000)
    assert encode_corpus(write(tmp_path, text), full, cache_dir=tmp_path, progress=False).tolist() == [65_535, 0]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = encode_corpus(write(tmp_path, ""), GPT2, cache_dir=tmp_path / "cache", progress=False)
    assert empty.dtype == np.uint16 and len(empty) == 0
    with pytest.raises(ValueError, match=r"nope\.txt: no such file"):
        encode_corpus(tmp_path / "nope.txt", GPT2, cache_dir=tmp_path / "cache", progress=False)


def test_progress_bar_and_default_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TYPEDLM_CACHE_DIR", str(tmp_path / "env-cache"))
    assert cc.default_cache_dir() == tmp_path / "env-cache"
    encode_corpus(write(tmp_path, TRICKY), GPT2, workers=1)
    assert "tokenizing corpus.txt" in capsys.readouterr().err
    assert len(os.listdir(tmp_path / "env-cache")) == 1
    monkeypatch.delenv("TYPEDLM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cc.default_cache_dir() == tmp_path / "xdg" / "typedlm" / "tokens"
