"""Reading a large ``np.memmap`` without its pages piling up in the process.

Every page a memory-mapped array has read stays mapped into the process (its resident memory) until
the map is closed, so reading a corpus's token file bit by bit grows the process to the file's size.
`release_pages` unmaps them: they stay in the OS page cache, and the next read maps them again.
"""

import mmap
from typing import Any

import numpy as np
import numpy.typing as npt


def read_only_mapping(array: npt.NDArray[Any]) -> mmap.mmap | None:
    """The mapping behind ``array`` when it is a read-only ``np.memmap`` (or a view of one), else None."""
    mapping = getattr(array, "_mmap", None)  # np.memmap's mapping, shared by its views
    if isinstance(array, np.memmap) and array.mode == "r" and isinstance(mapping, mmap.mmap):
        return mapping
    return None


def release_pages(array: npt.NDArray[Any]) -> None:
    """Unmap the pages of the read-only memmap behind ``array`` (a memmap or a view of one) from this
    process; nothing for any other array, or a writable map (its changes must stay)."""
    mapping = read_only_mapping(array)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
