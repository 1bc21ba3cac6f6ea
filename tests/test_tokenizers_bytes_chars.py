"""ByteTokenizer and CharTokenizer: the same Tokenizer interface as GPT2BPE."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typedlm.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer


def test_byte_tokenizer_basics() -> None:
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 256
    assert tok.eot_token is None
    assert tok.special_tokens == frozenset()
    assert tok.encode("hé") == [104, 195, 169]
    assert tok.decode([104, 195, 169]) == "hé"
    assert tok.decode([104, 195]) == "h\ufffd"
    assert tok.decode_bytes([104, 195]) == b"h\xc3"
    assert tok.decode(np.array([104, 105], dtype=np.uint16)) == "hi"
    assert tok.encode("a\ud800") == list("a\ufffd".encode())
    assert tok.encode("<|endoftext|>") == list(b"<|endoftext|>")  # no special tokens: ordinary text


@pytest.mark.parametrize("bad", [[256], [-1], [1, 2, 300]])
def test_byte_tokenizer_refuses_ids_out_of_range(bad: list[int]) -> None:
    with pytest.raises(ValueError, match=r"not in 0\.\.255"):
        ByteTokenizer().decode(bad)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_and_char_round_trip(text: str) -> None:
    byte_tok = ByteTokenizer()
    assert byte_tok.decode(byte_tok.encode(text)) == text
    assert bytes(byte_tok.encode(text)) == text.encode("utf-8")
    if text:
        char_tok = CharTokenizer.from_text(text)
        ids = char_tok.encode(text)
        assert len(ids) == len(text)
        assert char_tok.decode(ids) == text
        assert max(ids) < char_tok.vocab_size == len(set(text))


def test_char_tokenizer_basics() -> None:
    tok = CharTokenizer.from_text("hello world")
    assert isinstance(tok, Tokenizer)
    assert tok.alphabet == " dehlorw"
    assert tok.vocab_size == 8
    assert tok.eot_token is None
    assert tok.encode("low") == [4, 5, 7]
    assert tok.decode([4, 5, 7]) == "low"
    assert tok.decode_bytes([4, 5, 7]) == b"low"
    assert tok == CharTokenizer(" dehlorw")
    assert tok.fingerprint == CharTokenizer(" dehlorw").fingerprint != CharTokenizer("dehlorw ").fingerprint
    assert pickle.loads(pickle.dumps(tok)) == tok


def test_char_tokenizer_names_an_unknown_character_and_its_position() -> None:
    tok = CharTokenizer.from_text("hello\nworld")
    with pytest.raises(ValueError, match=r"character 'Z' \(U\+005A\) at position 8 \(line 2, column 3\)"):
        tok.encode("hello\nwoZld")
    with pytest.raises(ValueError, match=r"'€' \(U\+20AC\) at position 0"):
        tok.encode("€")


def test_char_tokenizer_refuses_bad_ids_and_bad_alphabets() -> None:
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError, match=r"token id 2 at position 1 is not in 0\.\.1"):
        tok.decode([0, 2])
    with pytest.raises(ValueError, match=r"token id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="more than once"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["a", "bc"])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")


def test_explicitly_disallowed_strings_are_refused_by_every_tokenizer() -> None:
    for tok in (ByteTokenizer(), CharTokenizer.from_text("abc<|>")):
        with pytest.raises(ValueError, match=re.escape("'<|'")):
            tok.encode("ab<|c", disallowed_special={"<|"})
