"""`CharTokenizer`: one id per character of a fixed alphabet, as in nanoGPT's shakespeare_char."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from typedlm.tokenizers.base import as_int_list, out_of_range
from typedlm.tokenizers.special import AllowedSpecial, DisallowedSpecial, refuse_disallowed, resolve_special


class CharTokenizer:
    """Characters ↔ ids, ids given in alphabet order. ``eot_token`` is None.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.alphabet, tok.encode("hell")
    ('ehlo', [1, 0, 2, 2])
    """

    def __init__(self, alphabet: Iterable[str]) -> None:
        chars = list(alphabet)
        for position, char in enumerate(chars):
            if len(char) != 1:
                raise ValueError(f"alphabet entry {position} is {char!r}; each entry must be one character")
        if len(set(chars)) != len(chars):
            repeated = next(char for char in chars if chars.count(char) > 1)
            raise ValueError(f"the alphabet lists {repeated!r} more than once")
        if not chars:
            raise ValueError("the alphabet is empty")
        self._chars = chars
        self._ids = {char: token_id for token_id, char in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted set of characters in ``text``."""
        return cls(sorted(set(text)))

    @property
    def alphabet(self) -> str:
        """The characters, in id order."""
        return "".join(self._chars)

    @property
    def vocab_size(self) -> int:
        """Number of characters in the alphabet."""
        return len(self._chars)

    @property
    def eot_token(self) -> int | None:
        """None: no id is kept for end-of-text."""
        return None

    @property
    def special_tokens(self) -> frozenset[str]:
        """Empty."""
        return frozenset()

    @property
    def fingerprint(self) -> str:
        """sha256 of the alphabet."""
        return hashlib.sha256(("typedlm.CharTokenizer\0" + self.alphabet).encode("utf-8", "surrogatepass")).hexdigest()

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: DisallowedSpecial = "all",
    ) -> list[int]:
        """One id per character; ValueError naming the first character outside the alphabet."""
        refuse_disallowed(text, resolve_special(self.special_tokens, allowed_special, disallowed_special)[1])
        return self.encode_ordinary(text)

    def encode_ordinary(self, text: str) -> list[int]:
        """One id per character; ValueError naming the first character outside the alphabet."""
        try:
            return list(map(self._ids.__getitem__, text))
        except KeyError:
            raise self._unknown_character(text) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids``."""
        id_list = as_int_list(ids)
        if id_list and (min(id_list) < 0 or max(id_list) >= len(self._chars)):
            raise out_of_range(id_list, len(self._chars)) or ValueError("id out of range")
        try:
            return "".join(map(self._chars.__getitem__, id_list))
        except TypeError:
            raise ValueError(f"ids must be integers: {ids!r}") from None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The UTF-8 bytes of ``decode(ids)``."""
        return self.decode(ids).encode("utf-8", "surrogatepass")

    def _unknown_character(self, text: str) -> ValueError:
        for position, char in enumerate(text):
            if char not in self._ids:
                line = text.count("\n", 0, position) + 1
                column = position - text.rfind("\n", 0, position)
                return ValueError(
                    f"character {char!r} (U+{ord(char):04X}) at position {position} (line {line}, column "
                    f"{column}) is not in this CharTokenizer's alphabet of {len(self._chars)} characters"
                )
        return ValueError("unknown character")  # not reached: called only after a failed lookup

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other._chars == self._chars

    def __hash__(self) -> int:
        return hash(self.alphabet)
