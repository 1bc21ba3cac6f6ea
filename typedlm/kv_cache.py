"""Key/value cache for incremental decoding: an attention layer keeps the keys and values it has computed.

An attention layer takes part by holding a ``cache`` attribute (None, or an `AttentionCache` while one is
attached), as `typedlm.nn.CausalSelfAttention` does; `attached_kv_cache` gives every such layer of any
model a cache for the length of a ``with`` block.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from typedlm.config import CausalConfig
from typedlm.errors import ShapeError


@dataclass
class AttentionCache:
    """Keys and values of positions ``0 .. length-1`` for one attention layer, with room for ``cfg.seq_len``."""

    keys: Float[Tensor, "batch heads seq_len head_dim"]
    values: Float[Tensor, "batch heads seq_len head_dim"]
    length: int = 0

    @classmethod
    def empty(cls, cfg: CausalConfig, batch: int, *, dtype: torch.dtype, device: torch.device) -> "AttentionCache":
        shape = (batch, cfg.heads, cfg.seq_len, cfg.head_dim)
        return cls(torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device))

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
        if end > self.keys.shape[2]:
            raise ShapeError(f"KV cache: positions {start}..{end - 1} exceed cfg.seq_len = {self.keys.shape[2]}")
        if k.shape[0] != self.keys.shape[0]:
            raise ShapeError(f"KV cache: built for batch = {self.keys.shape[0]}, got batch = {k.shape[0]}")
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
    weight = next(model.parameters())
    caches = [AttentionCache.empty(cfg, batch, dtype=weight.dtype, device=weight.device) for _ in layers]
    for layer, cache in zip(layers, caches, strict=True):
        vars(layer)["cache"] = cache  # a plain attribute of the layer (not a submodule or a buffer)
    try:
        yield caches
    finally:
        for layer in layers:
            vars(layer)["cache"] = None
