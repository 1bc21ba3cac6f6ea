"""The heap-based merge (long pieces) and the list scan (short pieces) give the same tokens."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from typedlm.tokenizers import gpt2_files
from typedlm.tokenizers.bpe_files import read_bpe_vocabulary
from typedlm.tokenizers.byte_level import bytes_to_symbols
from typedlm.tokenizers.merge import _merge_by_scan, _merge_with_heap

RANKS = read_bpe_vocabulary(*gpt2_files()).merge_rank

pieces = st.one_of(
    st.text(alphabet="ab ", max_size=300),
    st.text(alphabet="thequickbrownfox", max_size=300),
    st.text(max_size=100),
)


@settings(max_examples=200, deadline=None)
@given(pieces)
def test_heap_and_scan_agree(piece: str) -> None:
    symbols = list(bytes_to_symbols(piece.encode("utf-8")))
    by_scan = _merge_by_scan(list(symbols), RANKS)
    assert _merge_with_heap(list(symbols), RANKS) == by_scan
    assert "".join(by_scan) == "".join(symbols)


def test_merges_follow_rank_order() -> None:
    assert _merge_by_scan(list("Ġthe"), RANKS) == ["Ġthe"]
    assert _merge_by_scan([], RANKS) == []
    assert _merge_with_heap(["x"], RANKS) == ["x"]
