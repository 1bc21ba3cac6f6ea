"""Batch sources for the trainer: the `BatchSource` protocol, and token windows (the default source).

A batch is a pure function of its `BatchSlot` ``(step, micro_step, rank)`` and the source's seed: no
sampler state is carried between steps, so a resumed run draws exactly the batches an uninterrupted run
would. Each step draws one global batch and hands out blocks of it (`BatchSlot.block`), so ``world``
ranks × ``micro_steps`` accumulated micro-batches of ``batch`` rows see together exactly what one
process with ``batch * world * micro_steps`` rows sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Int64
from torch import Tensor, nn

from typedlm import losses
from typedlm.errors import ConfigError
from typedlm.memmap import release_pages
from typedlm.training.token_arrays import Tokens, full_token_fingerprint, token_fingerprint

TRAIN_STREAM = 0
VAL_STREAM = 1
Batch_co = TypeVar("Batch_co", covariant=True)
_Rows = TypeVar("_Rows", Tensor, npt.NDArray[Any])


@dataclass(frozen=True)
class BatchSlot:
    """Which batch to draw: micro-batch ``micro_step`` of ``micro_steps`` of optimizer step ``step``
    (for validation: the ``step``-th fixed batch), for rank ``rank`` of ``world``."""

    step: int
    micro_step: int = 0
    micro_steps: int = 1
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.micro_step < self.micro_steps and 0 <= self.rank < self.world):
            raise ConfigError(
                f"micro_step {self.micro_step} of {self.micro_steps} / rank {self.rank} of {self.world} is out of range"
            )

    @property
    def blocks(self) -> int:
        """How many blocks a step's global batch is cut into: one per rank and micro-step."""
        return self.micro_steps * self.world

    def block(self, rows: _Rows) -> _Rows:
        """This slot's block of a step's global batch ``rows`` (``blocks * batch`` rows: a tensor or array)."""
        batch = len(rows) // self.blocks
        index = self.micro_step * self.world + self.rank
        return rows[index * batch : (index + 1) * batch]

    def seed(self, seed: int, stream: int) -> int:
        """A seed for the step's global batch of ``stream`` (`TRAIN_STREAM`, `VAL_STREAM`): the same for
        every rank and micro-step, so each draws the same global batch and takes its `block`."""
        return int(np.random.SeedSequence([seed, stream, self.step]).generate_state(1)[0])


class BatchSource(Protocol[Batch_co]):
    """Where the trainer's batches come from. Each batch must be a pure function of the slot (and the
    source's own seed), so a resumed run sees the batches an uninterrupted one would. A batch is a
    tensor, or a tuple, list or dict of them (moved to the training device as a whole)."""

    def train_batch(self, slot: BatchSlot) -> Batch_co:
        """The training micro-batch of ``slot``."""
        ...

    def val_batch(self, slot: BatchSlot) -> Batch_co:
        """The ``slot.step``-th validation batch (the same at every evaluation)."""
        ...

    def fingerprint(self) -> str:
        """A string that changes when the data does: a resumed run refuses a source with another one."""
        ...


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
    slot = BatchSlot(step, micro_step, micro_steps, rank, world)
    rng = np.random.default_rng([seed, stream, step])
    starts = slot.block(rng.integers(0, len(tokens) - seq_len, size=slot.blocks * batch))
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    release_pages(tokens)  # a memmapped corpus's resident memory stays that of one batch
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


class TokenWindows:
    """The default `BatchSource`: windows of ``seq_len + 1`` ids (`sample_windows`) from 1-D token arrays,
    scored by `next_token_loss`."""

    def __init__(self, train: Tokens, val: Tokens, *, batch: int, seq_len: int, seed: int) -> None:
        check_windows(train, seq_len, "train")
        check_windows(val, seq_len, "val")
        self.train, self.val = train, val
        self.batch, self.seq_len, self.seed = batch, seq_len, seed

    def train_batch(self, slot: BatchSlot) -> Int64[Tensor, "batch seq_len+1"]:
        return self._windows(self.train, slot, TRAIN_STREAM)

    def val_batch(self, slot: BatchSlot) -> Int64[Tensor, "batch seq_len+1"]:
        return self._windows(self.val, slot, VAL_STREAM)

    def fingerprint(self) -> str:
        """`token_fingerprint` of both token arrays: sha256 of their ids, or constant-time samples of
        them (and their cache's checksum) above `typedlm.training.token_arrays.FULL_HASH_BYTES`."""
        return token_fingerprint(self.train, self.val)

    def full_fingerprint(self) -> str:
        """sha256 of both arrays' ids whatever their size: how checkpoints written before sampled
        fingerprints named the data (a resumed run accepts either)."""
        return full_token_fingerprint(self.train, self.val)

    def _windows(self, tokens: Tokens, slot: BatchSlot, stream: int) -> Int64[Tensor, "batch seq_len+1"]:
        return sample_windows(
            tokens, batch=self.batch, seq_len=self.seq_len, seed=self.seed, step=slot.step,
            micro_step=slot.micro_step, micro_steps=slot.micro_steps, rank=slot.rank, world=slot.world, stream=stream,
        )  # fmt: skip


def next_token_loss(model: nn.Module, windows: Int64[Tensor, "batch seq_len+1"]) -> Tensor:
    """The default loss: the model reads ``windows[:, :-1]`` and is scored on every next id."""
    return losses.next_token_cross_entropy(model(windows[:, :-1]), windows)
