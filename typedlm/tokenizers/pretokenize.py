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


SAFE_CUT = re.compile(rb"[\x21-\x7e][ \n]")
"""Bytes where a UTF-8 text may be cut without changing its pieces: cut between the two bytes.

No piece contains both a non-space character and a following whitespace character, and no match
before such a spot looks past it, so ``pretokenize(a + b) == pretokenize(a) + pretokenize(b)`` when
``a`` ends with a printable ASCII character and ``b`` starts with a space or a newline.
"""
