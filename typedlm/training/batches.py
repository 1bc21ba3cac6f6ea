"""Token windows: the train/val split and deterministic, shardable random batches.

A batch is a pure function of ``(seed, step, micro_step, rank)``: no sampler state is carried between
steps, so a resumed run draws exactly the batches an uninterrupted run would. Each step draws one
global batch and hands out blocks of it, so ``world`` ranks × ``micro_steps`` accumulated micro-batches
of ``batch`` rows see together exactly what one process with ``batch * world * micro_steps`` rows sees.
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


def sample_windows(
    tokens: Tokens,
    *,
    batch: int,
    seq_len: int,
    seed: int,
    step: int,
    micro_step: int = 0,
    micro_steps: int = 1,
    rank: int = 0,
    world: int = 1,
    stream: int = TRAIN_STREAM,
) -> Int64[Tensor, "batch seq_len+1"]:
    """``batch`` windows of ``seq_len + 1`` consecutive ids, int64 on the CPU: the model reads
    ``[:, :-1]`` and `typedlm.losses.next_token_cross_entropy` scores it against the whole window.

    A step's global batch of ``micro_steps * world * batch`` window starts is drawn uniformly from a
    generator seeded with ``(seed, stream, step)``; micro-batch ``micro_step`` of rank ``rank`` is its
    block ``micro_step * world + rank`` of ``batch`` rows. So the blocks of all ranks and micro-steps
    together are the same windows whatever the split.
    """
    check_windows(tokens, seq_len, "train" if stream == TRAIN_STREAM else "val")
    if not (0 <= micro_step < micro_steps and 0 <= rank < world):
        raise ConfigError(f"micro_step {micro_step} of {micro_steps} / rank {rank} of {world} is out of range")
    rng = np.random.default_rng([seed, stream, step])
    starts = rng.integers(0, len(tokens) - seq_len, size=micro_steps * world * batch)
    block = micro_step * world + rank
    starts = starts[block * batch : (block + 1) * batch]
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    return torch.from_numpy(windows)


def sample_batch(
    tokens: Tokens,
    *,
    batch: int,
    seq_len: int,
    seed: int,
    step: int,
    micro_step: int = 0,
    micro_steps: int = 1,
    rank: int = 0,
    world: int = 1,
    stream: int = TRAIN_STREAM,
) -> tuple[Int64[Tensor, "batch seq_len"], Int64[Tensor, "batch seq_len"]]:
    """Inputs and next-token targets, both ``(batch, seq_len)``: the windows of `sample_windows` (same
    arguments) without their last and without their first id."""
    windows = sample_windows(
        tokens, batch=batch, seq_len=seq_len, seed=seed, step=step, micro_step=micro_step,
        micro_steps=micro_steps, rank=rank, world=world, stream=stream,
    )  # fmt: skip
    return windows[:, :-1], windows[:, 1:]
