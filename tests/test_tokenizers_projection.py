"""TorchLean's local projection: first-seen GPT-2 ids → compact local ids, OOV = 0, both ways."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typedlm.tokenizers import GPT2BPE, OOV, ByteTokenizer, LocalTokenizer, LocalVocab, Tokenizer

GPT2 = GPT2BPE.from_vendored()


def test_first_seen_order_and_both_directions() -> None:
    vocab = LocalVocab.first_seen([50, 7, 50, 9, 7, 1000], base_vocab_size=50257)
    assert vocab.base_ids == (50, 7, 9, 1000)
    assert vocab.size == 5
    assert vocab.to_local([7, 9, 50, 1000, 123]).tolist() == [2, 3, 1, 4, OOV]
    assert vocab.to_base([1, 2, 3, 4]).tolist() == [50, 7, 9, 1000]
    assert vocab.to_base([1, 0, 2], oov=50256).tolist() == [50, 50256, 7]
    with pytest.raises(ValueError, match=r"local id 0 \(OOV\) at position 1"):
        vocab.to_base([1, 0])


def test_max_size_caps_the_vocabulary_and_later_ids_become_oov() -> None:
    vocab = LocalVocab.first_seen([5, 6, 7, 8], base_vocab_size=10, max_size=3)
    assert vocab.size == 3
    assert vocab.to_local([5, 6, 7, 8]).tolist() == [1, 2, OOV, OOV]


def test_out_of_range_ids_are_errors() -> None:
    vocab = LocalVocab.first_seen([1, 2], base_vocab_size=10)
    with pytest.raises(ValueError, match=r"base id 10 at position 1 is not in 0\.\.9"):
        vocab.to_local([1, 10])
    with pytest.raises(ValueError, match=r"local id 3 at position 0 is not in 0\.\.2"):
        vocab.to_base([3])
    with pytest.raises(ValueError, match=r"base id -1"):
        LocalVocab.first_seen([-1], base_vocab_size=10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=200))
def test_projection_is_a_bijection_on_seen_ids(ids: list[int]) -> None:
    vocab = LocalVocab.first_seen(ids, base_vocab_size=50257)
    local = vocab.to_local(ids)
    assert (local >= 1).all()
    assert vocab.to_base(local).tolist() == ids
    assert sorted(set(local.tolist())) == list(range(1, vocab.size))


def test_local_tokenizer_over_gpt2() -> None:
    text = "To be, or not to be, that is the question.<|endoftext|>"
    tok = LocalTokenizer.fit(GPT2, text)
    assert isinstance(tok, Tokenizer)
    ids = tok.encode(text, allowed_special="all")
    assert max(ids) < tok.vocab_size == 1 + len(set(GPT2.encode(text, allowed_special="all")))
    assert OOV not in ids
    assert tok.decode(ids) == text
    assert tok.eot_token == ids[-1]
    unseen = tok.encode("To be xylophone")
    assert unseen[:2] == tok.encode("To be") and OOV in unseen
    assert tok.decode(unseen).startswith("To be\ufffd")
    assert LocalTokenizer.fit(GPT2, "abc").eot_token is None
    assert tok.fingerprint != LocalTokenizer.fit(GPT2, "abc").fingerprint


def test_full_vocabulary_projection_is_the_identity_shifted_by_one() -> None:
    vocab = LocalVocab.first_seen(np.arange(50257), base_vocab_size=50257)
    assert vocab.size == 50258
    assert (vocab.to_local(np.arange(50257)) == np.arange(1, 50258)).all()


def test_local_tokenizer_must_match_base_size() -> None:
    with pytest.raises(ValueError, match="projects 50257 base ids, the tokenizer has 256"):
        LocalTokenizer(ByteTokenizer(), LocalVocab.first_seen([1], base_vocab_size=50257))
