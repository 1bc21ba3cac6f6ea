"""GPT-2's pre-tokenizer: the regular expression that cuts text into pieces before BPE.

BPE never merges across two pieces, so pieces are encoded independently (and cached).
For pure-ASCII text an equivalent pattern for the standard library's ``re`` is used: in ASCII,
``\\p{L}`` is ``[A-Za-z]``, ``\\p{N}`` is ``[0-9]`` and ``\\s`` is ``[\\t\\n\\v\\f\\r ]``, and ``re`` is
about twice as fast as ``regex`` here.
"""

from __future__ import annotations

import re

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""The pattern from GPT-2's encoder.py (also tiktoken's ``gpt2`` pattern)."""

_SPACE = r"\t\n\x0b\x0c\r "
_ASCII_PATTERN = (
    rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_SPACE}A-Za-z0-9]+"""
    rf"""|[{_SPACE}]+(?![^{_SPACE}])|[{_SPACE}]+"""
)

_UNICODE_SPLITTER = regex.compile(GPT2_PATTERN)
_ASCII_SPLITTER = re.compile(_ASCII_PATTERN)


def pretokenize(text: str) -> list[str]:
    """Cut ``text`` into GPT-2 pre-tokens; ``"".join(pretokenize(text)) == text``."""
    if text.isascii():
        return _ASCII_SPLITTER.findall(text)
    pieces: list[str] = _UNICODE_SPLITTER.findall(text)
    return pieces


WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000").union(
    map(chr, range(0x2000, 0x200B))
)
"""The characters the pattern's ``\\s`` matches (Unicode's White_Space, as ``regex`` and tiktoken read it)."""

_MULTIBYTE_WHITESPACE = rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
_MULTIBYTE_CHARACTER = rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"

SAFE_CUT = re.compile(
    rb"(?:[\x00-\x08\x0e-\x1f\x21-\x7f]|(?!" + _MULTIBYTE_WHITESPACE + rb")(?:" + _MULTIBYTE_CHARACTER + rb"))(?=[ \n])"
)
"""A non-whitespace character followed by a space or a newline, in UTF-8 bytes: a text may be cut at
the match's end (before the space or newline) without changing its pieces.

Every alternative of the pattern matches either only whitespace (``\\s+``) or no whitespace at all
(the contractions, ``' ?'`` then letters, digits or other non-whitespace characters: its optional
space comes first), so no piece holds a non-whitespace character followed by a whitespace one; the
only lookahead, ``(?!\\S)``, ends a run of whitespace, so no match ending before the cut looks past
it; and there is no lookbehind. Hence ``pretokenize(a + b) == pretokenize(a) + pretokenize(b)`` when
``a`` ends with a non-whitespace character and ``b`` starts with a space or a newline. In valid UTF-8
a lead byte never matches a continuation byte, so a match found from any offset is a whole character.
"""
