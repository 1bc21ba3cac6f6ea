"""Key/value cache for incremental decoding: an attention layer keeps the keys and values it has computed.

The protocol an attention layer follows to decode with a cache (as `typedlm.nn.CausalSelfAttention` does):

- it holds a plain attribute ``self.cache: AttentionCache | None = None``;
- in ``forward``, when ``self.cache`` is not None, it calls ``k, v = self.cache.append(k, v)`` with this
  call's keys and values ``(batch, kv_heads, seq, head_dim)`` and attends over the keys and values it
  gets back: every position so far, ``self.cache.length`` of them, this call's last (its queries sit at
  positions ``length - seq .. length - 1``);
- to decode left-padded prompts of different lengths as well, its forward also takes ``pad`` (left-pad
  counts, ``(batch,)``, or None) and no query attends to a row's first ``pad[row]`` keys
  (`typedlm.nn.padded_causal_mask`); see `typedlm.generate`.

`attached_kv_cache` gives every such layer of any model an empty cache for the length of a ``with`` block.
A cache allocates its storage on the first `append`, from the keys it is given (their head count, head
size, dtype and device), with room for ``cfg.seq_len`` positions; so a layer may cache another head
count than ``cfg.heads`` (grouped-query attention caching ``kv_heads`` heads, a block's own head count).
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn

from typedlm.config import CausalConfig
from typedlm.errors import ShapeError


@dataclass
class AttentionCache:
    """Keys and values of positions ``0 .. length-1`` for one attention layer: ``batch`` sequences of up to
    ``capacity`` positions. The storage ``(batch, heads, capacity, head_dim)`` is made by the first `append`."""

    batch: int
    capacity: int
    length: int = 0
    keys: Tensor | None = field(default=None, repr=False)
    values: Tensor | None = field(default=None, repr=False)

    def rewind(self, start_pos: int) -> None:
        """Forget positions ``start_pos`` and later; the next `append` writes at ``start_pos``."""
        if not 0 <= start_pos <= self.length:
            raise ShapeError(
                f"KV cache: cannot rewind to start_pos={start_pos}: the cache holds positions 0..{self.length - 1}"
            )
        self.length = start_pos

    def check_continues(self, start_pos: int, where: str) -> None:
        """Refuse a call at ``start_pos`` unless it continues the cache exactly (``start_pos == length``).

        A decode loop that forgets ``start_pos`` (0) or passes one too small would silently attend over
        stale keys and read the wrong positions.
        """
        if start_pos != self.length:
            held = f"positions 0..{self.length - 1}" if self.length else "no positions"
            raise ShapeError(
                f"{where}: start_pos={start_pos} but the KV cache holds {held}: pass start_pos={self.length} "
                "to continue, or rewind the cache first (rewind_kv_cache)"
            )

    def append(
        self, k: Float[Tensor, "batch heads seq head_dim"], v: Float[Tensor, "batch heads seq head_dim"]
    ) -> tuple[Float[Tensor, "batch heads total head_dim"], Float[Tensor, "batch heads total head_dim"]]:
        """Store ``k``, ``v`` at the next ``seq`` positions; return the keys and values of every position so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ShapeError(f"KV cache: positions {start}..{end - 1} exceed cfg.seq_len = {self.capacity}")
        if k.shape[0] != self.batch:
            raise ShapeError(f"KV cache: built for batch = {self.batch}, got batch = {k.shape[0]}")
        if self.keys is None or self.values is None:
            shape = (self.batch, k.shape[1], self.capacity, k.shape[3])
            self.keys = torch.empty(shape, dtype=k.dtype, device=k.device)
            self.values = torch.empty(shape, dtype=v.dtype, device=v.device)
        elif k.shape[1] != self.keys.shape[1] or k.shape[3] != self.keys.shape[3]:
            raise ShapeError(
                f"KV cache: holds keys of {self.keys.shape[1]} heads × {self.keys.shape[3]}, got "
                f"{k.shape[1]} heads × {k.shape[3]} (keys of shape {tuple(k.shape)})"
            )
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def cacheable_attention(model: nn.Module) -> list[nn.Module]:
    """Every layer of ``model`` that keeps its keys and values in ``.cache`` when a cache is attached."""
    return [m for m in model.modules() if "cache" in vars(m) and isinstance(vars(m)["cache"], AttentionCache | None)]


@contextlib.contextmanager
def attached_kv_cache(model: nn.Module, cfg: CausalConfig, batch: int) -> Iterator[list[AttentionCache]]:
    """Within the block, every cacheable attention layer of ``model`` caches keys and values for ``batch``
    sequences of up to ``cfg.seq_len`` positions; yields the caches (empty if the model has no such layer)."""
    layers = cacheable_attention(model)
    if any(vars(layer)["cache"] is not None for layer in layers):
        raise RuntimeError(f"{type(model).__name__}: a KV cache is already active on this model")
    caches = [AttentionCache(batch, cfg.seq_len) for _ in layers]
    for layer, cache in zip(layers, caches, strict=True):
        vars(layer)["cache"] = cache  # a plain attribute of the layer (not a submodule or a buffer)
    try:
        yield caches
    finally:
        for layer in layers:
            vars(layer)["cache"] = None
