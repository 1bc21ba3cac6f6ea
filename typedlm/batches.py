"""Token windows: the train/val split and deterministic, shardable random batches.

A batch is a pure function of ``(seed, step, micro_step)``: no sampler state is carried between steps,
so a resumed run draws exactly the batches an uninterrupted run would, and ``world`` data-parallel
ranks drawing rank-slices of the same global batch see together what one process with
``batch * world`` rows would see.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Int64
from torch import Tensor

from typedlm.errors import ConfigError

Tokens = npt.NDArray[np.integer[Any]]
"""A 1-D array of token ids (uint8/uint16/int32/int64; a ``np.memmap`` works too)."""

TRAIN_STREAM = 0
VAL_STREAM = 1


def split_tokens(tokens: Tokens, val_fraction: float = 0.1) -> tuple[Tokens, Tokens]:
    """Split ``tokens`` (n,) into train ``(n - k,)`` and val ``(k,)``, ``k = round(n * val_fraction)``.

    The validation tokens are the tail of the corpus, as in nanoGPT.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if tokens.ndim != 1:
        raise ConfigError(f"tokens must be 1-D, got shape {tokens.shape}")
    n_val = round(len(tokens) * val_fraction)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


def check_windows(tokens: Tokens, seq_len: int, what: str) -> None:
    """Refuse a token array with no full ``seq_len + 1`` window; ``what`` names it ("train", "val")."""
    if len(tokens) < seq_len + 1:
        raise ConfigError(
            f"{what} split has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}: "
            "use more text, a smaller --seq-len, or a different --val-fraction"
        )


def sample_batch(
    tokens: Tokens,
    *,
    batch: int,
    seq_len: int,
    seed: int,
    step: int,
    micro_step: int = 0,
    stream: int = TRAIN_STREAM,
    rank: int = 0,
    world: int = 1,
) -> tuple[Int64[Tensor, "batch seq"], Int64[Tensor, "batch seq"]]:
    """Inputs and next-token targets, both ``(batch, seq_len)`` int64 on the CPU.

    ``world * batch`` window starts are drawn uniformly from a generator seeded with
    ``(seed, stream, step, micro_step)``; rank ``rank`` takes rows ``rank*batch : (rank+1)*batch``.
    """
    check_windows(tokens, seq_len, "train" if stream == TRAIN_STREAM else "val")
    rng = np.random.default_rng([seed, stream, step, micro_step])
    starts = rng.integers(0, len(tokens) - seq_len, size=world * batch)[rank * batch : (rank + 1) * batch]
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    ids = torch.from_numpy(windows)
    return ids[:, :-1], ids[:, 1:]
