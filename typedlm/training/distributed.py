"""Data parallelism under ``torchrun``: which rank this process is, and averaging across ranks.

Without torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) everything here is a
single-process no-op, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from typedlm.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: must be an integer") from None


def dist_info_from_env() -> DistInfo:
    """Read torchrun's variables; a plain ``python`` run is rank 0 of 1."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return DistInfo(rank, world, local)


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the job's process group: nccl for CUDA, gloo for the CPU (no-op for one process)."""
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``value`` (any shape) over all ranks; the value itself for one process."""
    if not info.enabled:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / info.world_size
