"""The `Tokenizer` protocol that the byte, character and GPT-2 BPE tokenizers all follow."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from typedlm.tokenizers.special import AllowedSpecial, DisallowedSpecial


@runtime_checkable
class Tokenizer(Protocol):
    """Text ↔ token ids ``0 .. vocab_size - 1``.

    - ``encode(text)`` follows tiktoken's rules for special tokens (see `typedlm.tokenizers.special`);
      byte and character tokenizers have no special tokens, so for them the two keywords only matter
      when ``disallowed_special`` names a string explicitly.
    - ``decode(encode(text)) == text``; ``decode`` replaces bytes that are not UTF-8 with U+FFFD,
      ``decode_bytes`` returns them exactly. Both accept any iterable of ints (a list, a numpy array,
      a 1-D tensor) and raise ValueError for an id outside the vocabulary.
    - ``eot_token`` is the end-of-text id that separates documents, or None if there is none
      (`ByteTokenizer`, `CharTokenizer`).
    - ``fingerprint`` is a hex digest that changes whenever the ids would; caches key on it.
    - The token cache (`typedlm.tokenizers.corpus_cache`) encodes a corpus in chunks only where
      ``encode(a + b) == encode(a) + encode(b)`` for the tokenizers it knows (`cut_rule`): between any
      two characters for `ByteTokenizer` and `CharTokenizer`; where GPT-2's pre-tokenizer cuts for
      `GPT2BPE` (after a non-whitespace character followed by a space or newline, else at a piece
      boundary); as its base for a `LocalTokenizer`. Any other tokenizer (another pre-tokenizer) is
      given each corpus as one text: its ids are exact, but the whole text is held in memory.
    """

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_token(self) -> int | None: ...

    @property
    def special_tokens(self) -> frozenset[str]: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = ...,
        disallowed_special: DisallowedSpecial = ...,
    ) -> list[int]: ...

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode with every special token treated as ordinary text."""
        ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...


def as_int_list(ids: Iterable[int]) -> list[int]:
    """Plain Python ints from a list, tuple, numpy array or tensor of ids."""
    to_list = getattr(ids, "tolist", None)
    if to_list is not None:
        as_list = to_list()
        if isinstance(as_list, list):
            return as_list
        return [as_list]  # a 0-d array or tensor
    return list(ids)


def out_of_range(ids: list[int], vocab_size: int) -> ValueError | None:
    """The error for the first id outside ``0 .. vocab_size - 1``, or None if all are in range."""
    for position, token_id in enumerate(ids):
        if not 0 <= token_id < vocab_size:
            return ValueError(f"token id {token_id} at position {position} is not in 0..{vocab_size - 1}")
    return None


def surrogates_replaced(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot hold) replaced by U+FFFD, as tiktoken does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
