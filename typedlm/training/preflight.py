"""Checks made before any long work starts: files, output paths, environment variables, memory.

Each raises `ConfigError` naming the flag (``--out``), variable (``TYPEDLM_CHECKS``) or file at fault,
so a run that cannot finish is refused in its first second rather than after hours of training.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import torch

from typedlm import checks
from typedlm.config import CausalConfig
from typedlm.errors import ConfigError

__all__ = [
    "check_environment",
    "check_input_file",
    "check_log_file",
    "check_memory",
    "check_output_dir",
    "check_output_file",
    "machine_memory_bytes",
    "training_memory_bytes",
]


def check_environment() -> None:
    """Refuse a malformed ``TYPEDLM_CHECKS`` or an unusable ``TYPEDLM_CACHE_DIR``."""
    checks.check_mode_variable()
    cache = os.environ.get("TYPEDLM_CACHE_DIR")
    if cache:
        check_output_dir("TYPEDLM_CACHE_DIR", Path(cache))


def check_input_file(flag: str, path: Path) -> None:
    """``path`` must be a readable regular file (not a directory, FIFO or device)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{flag} {path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{flag} {path}: is not a regular file (a pipe or a device?)")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag} {path}: permission denied (not readable)")


def check_output_dir(flag: str, path: Path) -> None:
    """``path`` must be a writable directory, or creatable as one (its nearest existing parent writable)."""
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{flag} {path}: is a dangling or looping symbolic link")
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {path}: is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path}: permission denied (the directory is not writable)")
        return
    _check_creatable(flag, path)


def check_output_file(flag: str, path: Path) -> None:
    """``path`` must be a writable regular file, or creatable as one (its nearest existing parent writable)."""
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{flag} {path}: is a dangling or looping symbolic link")
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a directory, not a file")
        if not path.is_file():
            raise ConfigError(f"{flag} {path}: is not a regular file (a device or a pipe?); not replacing it")
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path}: permission denied (cannot replace the file)")
        return
    _check_creatable(flag, path)


def check_log_file(flag: str, path: Path) -> None:
    """An output path for a training log: writable, not inside a checkpoint directory, and not an
    existing file of another kind (a log replaces only a log)."""
    check_output_file(flag, path)
    resolved = path.resolve()
    if resolved.parent.name in ("checkpoint", "checkpoint.prev", "checkpoint.tmp"):
        raise ConfigError(f"{flag} {path}: is inside a checkpoint directory; writing there would damage it")
    if resolved.is_file() and resolved.stat().st_size > 0:
        with open(resolved, "rb") as f:
            head = f.read(256)
        if b'"typedlm.trainlog/' not in head:
            raise ConfigError(f"{flag} {path}: exists and is not a typedlm training log; not replacing it")


def _check_creatable(flag: str, path: Path) -> None:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot be created: permission denied in {parent}")


# --- memory ----------------------------------------------------------------------------------------


def training_memory_bytes(cfg: CausalConfig, activation_bytes: int = 4) -> int:
    """A lower estimate of the memory one training process needs for a GPT-2 of ``cfg``'s sizes: fp32
    weights, and activations of ``activation_bytes`` each (2 under bf16 autocast).

    Weights, gradients and AdamW's two moments (16 bytes per parameter), plus the activations kept for
    the backward pass of one micro-batch of ``cfg.batch`` sequences: per layer and token about
    ``8 * d_model + 2 * ffn`` floats (attention by a fused kernel, no ``seq × seq`` matrix), and the
    logits' log-softmax and gradient (``2 * vocab`` floats per token). Real use is higher
    (allocator slack, temporaries), so a run this estimate refuses cannot fit.
    """
    d, ffn, vocab, layers = cfg.d_model, cfg.ffn_hidden, cfg.vocab, cfg.layers
    per_block = 4 * d * d + 2 * d * ffn + 9 * d + ffn
    params = vocab * d + cfg.seq_len * d + layers * per_block + 2 * d + (0 if cfg.tie_embeddings else vocab * d)
    tokens = cfg.batch * cfg.seq_len
    activations = tokens * (layers * (8 * d + 2 * ffn) + 2 * vocab)
    return 16 * params + activation_bytes * activations


def machine_memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (GPU memory for CUDA, physical memory for the CPU); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    cfg: CausalConfig,
    device: torch.device,
    *,
    amp: torch.dtype | None = None,
    available: int | None = None,
    hint: str = "use a smaller --batch (and --grad-accum to keep the tokens per step), --seq-len or model",
) -> None:
    """Refuse a model and batch whose estimated training memory (activations in ``amp``'s precision
    under autocast) exceeds what ``device`` has (or ``available`` bytes); ``hint`` says what to change."""
    need = training_memory_bytes(cfg, 4 if amp is None else torch.finfo(amp).bits // 8)
    have = machine_memory_bytes(device) if available is None else available
    if have is None or need <= have:
        return
    raise ConfigError(
        f"the model and batch need at least {_gib(need)} to train ({cfg.layers} layers × d_model {cfg.d_model}, "
        f"vocab {cfg.vocab}, batch {cfg.batch} × seq_len {cfg.seq_len}) but the {device.type} has {_gib(have)}: "
        f"{hint}"
    )


def _gib(n: int) -> str:
    return f"{math.ceil(n / 2**30 * 10) / 10:.1f} GiB"
