"""Token ids must lie in the vocabulary: an id outside it is a `ShapeError` naming the id and the vocabulary.

Without this check an out-of-range id is torch's bare "index out of range in self" on the CPU and a
device-side assert that poisons the whole CUDA context on a GPU. The check is one ``aminmax`` over the
ids (microseconds), made in eager mode whenever checks are on (``TYPEDLM_CHECKS`` is not ``off``); it
is left out of ``torch.compile`` graphs. On an accelerator it waits for the device, so callers that
validated their ids once up front (the trainer validates its whole token arrays before the first step)
run their steps inside `ids_validated` to skip it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

from typedlm import checks
from typedlm.errors import ShapeError

_validated: contextvars.ContextVar[bool] = contextvars.ContextVar("typedlm_ids_validated", default=False)


@contextlib.contextmanager
def ids_validated() -> Iterator[None]:
    """Skip the per-call id check on accelerators inside the block (the caller checked its ids already)."""
    token = _validated.set(True)
    try:
        yield
    finally:
        _validated.reset(token)


def check_token_ids(ids: Tensor, vocab: int, *, where: str, source: str, ignore_index: int | None = None) -> None:
    """Refuse ``ids`` holding a value outside ``0..vocab-1`` (``ignore_index`` aside), naming the first one.

    ``where`` names the layer or function, ``source`` where ``vocab`` comes from (``cfg.vocab``, the
    logits' last dimension).
    """
    if torch.compiler.is_compiling() or checks.current_mode() == "off" or ids.numel() == 0:
        return
    if ids.device.type != "cpu" and _validated.get():
        return
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ShapeError(f"{where}: token ids must be an integer tensor, got dtype {ids.dtype}")
    scored = ids if ignore_index is None else ids.masked_fill(ids == ignore_index, 0)
    low, high = torch.stack(torch.aminmax(scored)).tolist()  # one transfer from the device
    if low >= 0 and high < vocab:
        return
    position = tuple(int(i) for i in ((scored < 0) | (scored >= vocab)).nonzero()[0])
    raise ShapeError(
        f"{where}: token id {int(ids[position])} at position {position} is outside the vocabulary "
        f"0..{vocab - 1} ({source}={vocab})"
    )
