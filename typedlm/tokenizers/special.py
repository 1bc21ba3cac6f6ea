"""tiktoken's rules for special tokens such as ``<|endoftext|>`` in text given to ``encode``.

- ``allowed_special``: specials (a set, or ``"all"``) that are encoded as their special id when they
  appear in the text.
- ``disallowed_special``: strings (or ``"all"``: every special that is not allowed) whose appearance
  in the text raises ValueError, because text from outside that contains them is usually a mistake.
- A special that is neither allowed nor disallowed is encoded as ordinary text.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Set
from typing import Literal

import regex

AllowedSpecial = Set[str] | Literal["all"]
DisallowedSpecial = Collection[str] | Literal["all"]


def resolve_special(
    special_tokens: frozenset[str], allowed_special: AllowedSpecial, disallowed_special: DisallowedSpecial
) -> tuple[frozenset[str], frozenset[str]]:
    """The (allowed, disallowed) sets that an encode call means."""
    allowed = special_tokens if allowed_special == "all" else special_tokens & frozenset(allowed_special)
    if disallowed_special == "all":
        disallowed = special_tokens - allowed
    else:
        disallowed = frozenset(disallowed_special)
    return allowed, disallowed


def refuse_disallowed(text: str, disallowed: frozenset[str]) -> None:
    """Raise ValueError if ``text`` contains any of ``disallowed``."""
    if not disallowed:
        return
    found = alternation(disallowed).search(text)
    if found is not None:
        raise ValueError(
            f"the text contains the special token {found.group()!r} at position {found.start()}, which this "
            "call does not allow. Pass allowed_special={...} (or 'all') to encode it as its special id, "
            "or disallowed_special=() to encode it as ordinary text."
        )


@functools.lru_cache(maxsize=64)
def alternation(tokens: frozenset[str]) -> regex.Pattern[str]:
    """A pattern matching any of ``tokens``, longest first where one is a prefix of another."""
    return regex.compile("|".join(regex.escape(token) for token in sorted(tokens, key=lambda t: (-len(t), t))))
