"""GPT2BPE gives exactly tiktoken's ids, built from the same vocab.json + merges.txt."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from typedlm.tokenizers import GPT2BPE, Tokenizer, gpt2_files
from typedlm.tokenizers.byte_level import CHAR_TO_BYTE
from typedlm.tokenizers.pretokenize import GPT2_PATTERN

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
EOT = "<|endoftext|>"


def tiktoken_from_files(vocab_json: Path) -> tiktoken.Encoding:
    """tiktoken's gpt2 encoding, built offline: ranks are the byte-decoded vocab.json ids."""
    vocab: dict[str, int] = json.loads(vocab_json.read_text(encoding="utf-8"))
    ranks = {bytes(CHAR_TO_BYTE[char] for char in token): rank for token, rank in vocab.items() if token != EOT}
    return tiktoken.Encoding(
        "gpt2-from-files", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: vocab[EOT]}
    )


VOCAB_JSON, MERGES_TXT = gpt2_files()
TOKENIZER = GPT2BPE.from_files(VOCAB_JSON, MERGES_TXT)
TIKTOKEN = tiktoken_from_files(VOCAB_JSON)

FRAGMENTS = [
    *["'s", "'S", "'t", "'T", "'re", "'ve", "'m", "'ll", "'LL", "'d", "'", "’s"],
    *[" ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \n ", "\u00a0", "\u3000", "\u2003", "\x0b", "\x85"],
    *[EOT, "<|endoftext", "|>", "<|", "<|endoftext|><|endoftext|>"],
    *["😀", "👩‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "中文字符", "日本語のテキスト", "한국어", "Ελληνικά", "עברית", "العربية"],
    *["e\u0301", "\u0308", "a\u0300\u0301", "\u200d", "\ufeff", "\U0001f3fd"],
    *["0", "123", " 4567", "٣٤", "½", "Ⅻ", "3.14", "1,000"],
    *["Hello", " world", "café", "naïve", "HELLO", " The", "!?", "...", "--", "$", "\x00", "\x1f"],
]

# Code points this Python's Unicode tables (14.0 for 3.11) call assigned. Newer ones, such as U+323B0
# (assigned in Unicode 17), are letters to the `regex` package but unassigned to tiktoken's older
# tables, so the two pre-tokenise them differently: a Unicode-version difference, not a BPE one.
assigned_chars = st.characters(codec="utf-8", exclude_categories=["Cn"])
unicode_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(assigned_chars, max_size=6), assigned_chars),
    max_size=40,
).map("".join)


def test_vendored_files_are_openais() -> None:
    assert hashlib.sha256(VOCAB_JSON.read_bytes()).hexdigest() == (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    )
    assert hashlib.sha256(MERGES_TXT.read_bytes()).hexdigest() == (
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    )
    assert (VOCAB_JSON.parent / "NOTICE").read_text().count("OpenAI") >= 2


def test_basic_facts() -> None:
    assert isinstance(TOKENIZER, Tokenizer)
    assert TOKENIZER.vocab_size == 50257
    assert TOKENIZER.eot_token == 50256
    assert TOKENIZER.special_tokens == {EOT}
    assert TOKENIZER.encode("Hello world") == [15496, 995]
    assert TOKENIZER.id_to_token(262) == "Ġthe"
    assert TOKENIZER.token_to_id("Ġthe") == 262
    assert TOKENIZER.token_bytes(262) == b" the"
    assert TOKENIZER.decode([50256]) == EOT
    assert GPT2BPE.from_vendored().fingerprint == TOKENIZER.fingerprint


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is not here (it lives in ../shared/data)")
def test_all_of_tiny_shakespeare_matches_tiktoken() -> None:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    ids = GPT2BPE.from_files(VOCAB_JSON, MERGES_TXT).encode(text)  # a fresh, cold cache
    assert ids == TIKTOKEN.encode(text)
    assert len(ids) == 338025
    assert TOKENIZER.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(unicode_text)
def test_unicode_matches_tiktoken_and_round_trips(text: str) -> None:
    ordinary = TOKENIZER.encode_ordinary(text)
    assert ordinary == TIKTOKEN.encode_ordinary(text)
    assert TOKENIZER.encode(text, allowed_special="all") == TIKTOKEN.encode(text, allowed_special="all")
    assert TOKENIZER.decode(ordinary) == text
    assert TOKENIZER.decode_bytes(ordinary) == text.encode("utf-8")


def _check_code_points(start: int, stop: int) -> None:
    # The regex package and tiktoken's Rust regex carry their own Unicode tables; check they agree
    # on \p{L}, \p{N} and \s for each code point, in the contexts the pattern distinguishes.
    chars = [chr(cp) for cp in range(start, stop) if not 0xD800 <= cp < 0xE000]
    text = "".join(f"a{c}1 {c}{c} x{c}\n{c} " for c in chars)
    assert TOKENIZER.encode_ordinary(text) == TIKTOKEN.encode_ordinary(text), f"code points {start:#x}.."


def test_basic_multilingual_plane_is_pre_tokenized_like_tiktoken() -> None:
    _check_code_points(0, 0x10000)


@pytest.mark.slow
def test_every_code_point_is_pre_tokenized_like_tiktoken() -> None:
    for block in range(0x10000, 0x110000, 0x10000):
        _check_code_points(block, block + 0x10000)


@pytest.mark.parametrize(
    "text",
    [
        "a" * 5000,  # long pieces take the heap-based merge
        " " * 3000 + "x",
        "=" * 4097,
        "ab" * 2000,
        "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000)),
        "QmFzZTY0IGJsb2IgdGhhdCBuZXZlciBlbmRz" * 60,
    ],
)
def test_long_pieces_match_tiktoken(text: str) -> None:
    assert TOKENIZER.encode_ordinary(text) == TIKTOKEN.encode_ordinary(text)


def test_special_token_rules_follow_tiktoken() -> None:
    text = f"one{EOT}two {EOT}"
    with pytest.raises(ValueError, match="endoftext"):
        TOKENIZER.encode(text)
    with pytest.raises(ValueError):
        TIKTOKEN.encode(text)
    cases: list[dict[str, Any]] = [
        {"allowed_special": "all"},
        {"allowed_special": {EOT}},
        {"disallowed_special": ()},
        {"allowed_special": set(), "disallowed_special": ()},
    ]
    for kwargs in cases:
        assert TOKENIZER.encode(text, **kwargs) == TIKTOKEN.encode(text, **kwargs)
    assert TOKENIZER.encode(text, allowed_special="all").count(50256) == 2
    assert 50256 not in TOKENIZER.encode(text, disallowed_special=())
    assert TOKENIZER.encode_ordinary(text) == TIKTOKEN.encode_ordinary(text)
    with pytest.raises(ValueError, match="'two'"):
        TOKENIZER.encode("one two", disallowed_special={"two"})


def test_decode_replaces_split_characters_and_decode_bytes_keeps_them() -> None:
    ids = TOKENIZER.encode("🙂")
    assert len(ids) > 1  # the emoji is split over several byte-level tokens
    assert TOKENIZER.decode(ids[:1]) == "\ufffd"
    assert TOKENIZER.decode_bytes(ids[:1]) == "🙂".encode()[: len(TOKENIZER.decode_bytes(ids[:1]))]
    assert b"".join(TOKENIZER.decode_bytes([i]) for i in ids) == "🙂".encode()


def test_lone_surrogates_are_replaced_like_tiktoken() -> None:
    text = "a\ud800b"
    assert TOKENIZER.encode(text) == TIKTOKEN.encode(text)
    assert TOKENIZER.decode(TOKENIZER.encode(text)) == "a\ufffdb"


def test_decode_accepts_arrays_and_refuses_bad_ids() -> None:
    np = pytest.importorskip("numpy")
    assert TOKENIZER.decode(np.array([15496, 995])) == "Hello world"
    for bad in ([50257], [-1], [0, 10**9]):
        with pytest.raises(ValueError, match=r"not in 0\.\.50256"):
            TOKENIZER.decode(bad)
    with pytest.raises(ValueError, match=r"not in 0\.\.50256"):
        TOKENIZER.id_to_token(50257)
    with pytest.raises(ValueError, match="not a token"):
        TOKENIZER.token_to_id("no such token")


def test_cache_reset_keeps_ids_and_pickling_keeps_behaviour() -> None:
    small = GPT2BPE.from_files(VOCAB_JSON, MERGES_TXT)
    small._cache._limit = len(small._cache) + 3  # force several resets
    text = "zqxj wvkq pflg qqzz xxyy jjkk vvmm " * 3
    assert small.encode(text) == TIKTOKEN.encode(text)
    clone = pickle.loads(pickle.dumps(TOKENIZER))
    assert clone.encode(text) == TIKTOKEN.encode(text)
    assert clone.fingerprint == TOKENIZER.fingerprint
