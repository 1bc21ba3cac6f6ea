"""Where and in which precision to train: ``--device auto|cpu|cuda`` and ``--dtype auto|fp32|bf16``."""

from __future__ import annotations

from typing import Literal

import torch

from typedlm.errors import ConfigError, TypedLMError

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "fp32", "bf16"]
DEVICES: tuple[DeviceName, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[DtypeName, ...] = ("auto", "fp32", "bf16")


class DeviceError(TypedLMError, RuntimeError):
    """The requested device cannot be used on this machine."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:local_rank`` when a CUDA GPU is present, else ``cpu``; ``cuda`` without a GPU is
    a DeviceError saying why."""
    if name not in DEVICES:
        raise ConfigError(f"device={name!r}: must be one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceError(
            f"--device cuda: no CUDA GPU is available (torch {torch.__version__} is {built}, "
            "torch.cuda.is_available() is False). Use --device cpu or --device auto."
        )
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(
            f"--device cuda: local rank {local_rank} needs GPU {local_rank}, "
            f"but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return torch.device("cuda", local_rank)


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``name`` on ``device``, or None for plain fp32.

    bf16 autocast is used on CUDA only (``auto`` picks it when the GPU supports bf16); the CPU always
    trains in fp32, so ``bf16`` on the CPU gives None (the caller may say so).
    """
    if name not in DTYPES:
        raise ConfigError(f"dtype={name!r}: must be one of {', '.join(DTYPES)}")
    if device.type != "cuda" or name == "fp32":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16
