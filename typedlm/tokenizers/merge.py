"""The byte-pair merge loop: repeatedly join the adjacent pair whose join has the lowest rank.

This is tiktoken's rule (and the effect of GPT-2's encoder.py on GPT-2's files): the rank of a pair
is the rank of the token that the two parts spell together; of equal ranks the leftmost pair goes
first. Short pieces use a list scan; long ones (a run of ``=`` signs, a base64 blob) use a heap, so
their cost grows as n log n instead of n².
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

_NO_MERGE = 1 << 62
_HEAP_ABOVE = 128  # symbols; below this the plain scan is faster


def merge_symbols(symbols: list[str], rank_of: Mapping[str, int]) -> list[str]:
    """Merge ``symbols`` (single byte-level characters) into tokens; ``rank_of`` maps a token to its rank."""
    if len(symbols) > _HEAP_ABOVE:
        return _merge_with_heap(symbols, rank_of)
    return _merge_by_scan(symbols, rank_of)


def _merge_by_scan(parts: list[str], rank_of: Mapping[str, int]) -> list[str]:
    rank = rank_of.get
    # pair_ranks[i] is the rank of joining parts[i] and parts[i + 1].
    pair_ranks = [rank(parts[i] + parts[i + 1], _NO_MERGE) for i in range(len(parts) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_MERGE:
            break
        i = pair_ranks.index(best)  # leftmost of the lowest
        parts[i] += parts.pop(i + 1)
        del pair_ranks[i]
        if i < len(pair_ranks):
            pair_ranks[i] = rank(parts[i] + parts[i + 1], _NO_MERGE)
        if i > 0:
            pair_ranks[i - 1] = rank(parts[i - 1] + parts[i], _NO_MERGE)
    return parts


def _merge_with_heap(symbols: list[str], rank_of: Mapping[str, int]) -> list[str]:
    # Parts live at the index of their first symbol, linked both ways; a merged-away part becomes "".
    # Heap entries (rank, left) go stale when a neighbour changes; a stale entry no longer spells a
    # token of that rank (ranks are unique per token), so it is recognised and dropped when popped.
    n = len(symbols)
    parts = list(symbols)
    next_of = list(range(1, n + 1))
    prev_of = list(range(-1, n - 1))
    heap: list[tuple[int, int]] = []
    for i in range(n - 1):
        pair_rank = rank_of.get(parts[i] + parts[i + 1])
        if pair_rank is not None:
            heap.append((pair_rank, i))
    heapq.heapify(heap)
    while heap:
        pair_rank, left = heapq.heappop(heap)
        right = next_of[left]
        if not parts[left] or right >= n or rank_of.get(parts[left] + parts[right]) != pair_rank:
            continue
        parts[left] += parts[right]
        parts[right] = ""
        after = next_of[right]
        next_of[left] = after
        if after < n:
            prev_of[after] = left
            new_rank = rank_of.get(parts[left] + parts[after])
            if new_rank is not None:
                heapq.heappush(heap, (new_rank, left))
        before = prev_of[left]
        if before >= 0:
            new_rank = rank_of.get(parts[before] + parts[left])
            if new_rank is not None:
                heapq.heappush(heap, (new_rank, before))
    return [part for part in parts if part]
