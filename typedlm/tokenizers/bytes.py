"""`ByteTokenizer`: each UTF-8 byte is one token (256 ids, no special tokens)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from typedlm.tokenizers.base import as_int_list, out_of_range, surrogates_replaced
from typedlm.tokenizers.special import AllowedSpecial, DisallowedSpecial, refuse_disallowed, resolve_special


class ByteTokenizer:
    """Text ↔ its UTF-8 bytes. ``eot_token`` is None: there is no end-of-text id.

    >>> ByteTokenizer().encode("hé")
    [104, 195, 169]
    """

    @property
    def vocab_size(self) -> int:
        """Always 256."""
        return 256

    @property
    def eot_token(self) -> int | None:
        """None: every id is a byte, none is kept for end-of-text."""
        return None

    @property
    def special_tokens(self) -> frozenset[str]:
        """Empty."""
        return frozenset()

    @property
    def fingerprint(self) -> str:
        """A constant: the byte encoding never changes."""
        return hashlib.sha256(b"typedlm.ByteTokenizer utf-8").hexdigest()

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: DisallowedSpecial = "all",
    ) -> list[int]:
        """The UTF-8 bytes of ``text`` (lone surrogates become U+FFFD, as in tiktoken)."""
        refuse_disallowed(text, resolve_special(self.special_tokens, allowed_special, disallowed_special)[1])
        return self.encode_ordinary(text)

    def encode_ordinary(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text``."""
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError:
            return list(surrogates_replaced(text).encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that do not form UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes ``ids`` stand for."""
        id_list = as_int_list(ids)
        try:
            return bytes(id_list)
        except (ValueError, TypeError):
            raise out_of_range(id_list, 256) or ValueError(f"ids must be integers: {ids!r}") from None

    def __repr__(self) -> str:
        return "ByteTokenizer()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash(ByteTokenizer)
