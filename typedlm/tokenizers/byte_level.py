"""GPT-2's byte ↔ unicode table: every byte gets one printable character, so BPE works on strings.

Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, NBSP, soft hyphen)
are moved to U+0100 onwards in byte order, so a space becomes ``Ġ`` and a newline ``Ċ``. Tokens in
GPT-2's vocab.json and merges.txt are written in these characters.
"""

from __future__ import annotations


def _byte_to_char() -> dict[int, str]:
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    moved = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + moved)
            moved += 1
    return table


BYTE_TO_CHAR: dict[int, str] = _byte_to_char()
"""byte value → its stand-in character."""

CHAR_TO_BYTE: dict[str, int] = {char: byte for byte, char in BYTE_TO_CHAR.items()}
"""stand-in character → byte value."""

BYTE_ALPHABET: frozenset[str] = frozenset(CHAR_TO_BYTE)
"""The 256 characters that byte-level tokens are made of."""

_LATIN1_TO_SYMBOLS = str.maketrans({chr(byte): char for byte, char in BYTE_TO_CHAR.items()})
_SYMBOLS_TO_LATIN1 = str.maketrans({char: chr(byte) for byte, char in BYTE_TO_CHAR.items()})


def bytes_to_symbols(data: bytes) -> str:
    """Write raw bytes in the byte-level alphabet (one character per byte)."""
    return data.decode("latin-1").translate(_LATIN1_TO_SYMBOLS)


def symbols_to_bytes(symbols: str) -> bytes:
    """Inverse of `bytes_to_symbols`; every character must be in `BYTE_ALPHABET`."""
    return symbols.translate(_SYMBOLS_TO_LATIN1).encode("latin-1")
