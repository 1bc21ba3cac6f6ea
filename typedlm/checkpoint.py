"""Checkpoints: safetensors tensors + a JSON state, swapped in whole, loaded without unpickling.

A checkpoint is a directory ``OUT/checkpoint/`` holding

- ``model.safetensors``: the model's weights (tied weights stored once), readable by any safetensors tool;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (AdamW moments and step counts);
- ``state.json``: the step, the model config, the trainer settings, the optimizer's hyperparameters,
  the RNG seed scheme, fingerprints of the tokenizer and the data, and the TrainLog so far.

It is written into ``checkpoint.tmp/`` and then swapped in by two renames
(``checkpoint`` → ``checkpoint.prev``, ``checkpoint.tmp`` → ``checkpoint``), so at every instant one
complete checkpoint exists, even across repeated crashes: ``checkpoint.prev`` is removed only while a
complete ``checkpoint`` exists, and `find_checkpoint` falls back to it after a crash between the
renames. ``checkpoint.tmp`` is never read.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from typedlm.atomic import write_atomic, write_text_atomic
from typedlm.errors import TypedLMError

CHECKPOINT_FORMAT = "typedlm.checkpoint/1"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


class CheckpointError(TypedLMError, RuntimeError):
    """A checkpoint is missing, damaged, or does not belong to the run resuming from it."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``state`` from state.json and the optimizer's tensors (model weights are
    loaded straight into a model by `load_weights`)."""

    path: Path
    state: dict[str, Any]
    optimizer_tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        """Optimizer steps completed when it was written."""
        return int(self.state["step"])


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoint"


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory under ``out_dir`` (all three files present), or None."""
    current = checkpoint_dir(out_dir)
    for candidate in (current, current.with_name("checkpoint.prev")):
        if all((candidate / name).is_file() for name in (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)):
            return candidate
    return None


def save_checkpoint(
    out_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write ``model`` (unwrapped: not DDP or compiled), ``optimizer`` and the JSON-able ``state`` (which
    must hold ``step``) as ``out_dir/checkpoint``; returns that path."""
    final = checkpoint_dir(out_dir)
    tmp, prev = final.with_name("checkpoint.tmp"), final.with_name("checkpoint.prev")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    write_atomic(tmp / MODEL_FILE, lambda p: safetensors.torch.save_model(model, str(p)))
    tensors, optim_json = _split_optimizer_state(optimizer.state_dict())
    write_atomic(tmp / OPTIMIZER_FILE, lambda p: safetensors.torch.save_file(tensors, str(p)))
    doc = {"format": CHECKPOINT_FORMAT, **state, "optimizer": optim_json}
    write_text_atomic(tmp / STATE_FILE, json.dumps(doc, indent=1) + "\n")
    _fsync_dir(tmp)

    if final.exists():  # complete (only a finished tmp is ever renamed to it): the older prev can go
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(final, prev)
    # else a crash between the renames left prev as the only complete checkpoint: it stays until now
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(prev, ignore_errors=True)
    return final


def read_state(path: str | Path) -> dict[str, Any]:
    """``state.json`` of the checkpoint directory ``path``, checked for format."""
    file = Path(path) / STATE_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{file}: checkpoint state file not found") from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{file}: format is {found!r}, expected {CHECKPOINT_FORMAT!r}")
    for key in ("step", "config", "optimizer"):
        if key not in state:
            raise CheckpointError(f"{file}: field {key!r} is missing")
    return state


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read the checkpoint directory ``path`` (state and optimizer tensors; nothing is unpickled)."""
    path = Path(path)
    state = read_state(path)
    return Checkpoint(path, state, _load_tensors(path / OPTIMIZER_FILE))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path/model.safetensors`` into ``model`` in place; every tensor must match by name and shape."""
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: model weights not found")
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(file), strict=False)
    except (safetensors.SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"{file}: cannot load weights into {type(model).__name__}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: weights do not match {type(model).__name__}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    """Load the checkpoint's optimizer state into ``optimizer`` (built over the same parameters)."""
    sd = _join_optimizer_state(ckpt.optimizer_tensors, ckpt.state["optimizer"])
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path / OPTIMIZER_FILE}: does not fit this optimizer: {e}") from None


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: checkpoint file not found")
    try:
        return safetensors.torch.load_file(str(file))
    except (safetensors.SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file: {e}") from None


def _split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors ``"{param}.{name}"`` for safetensors; everything else (plain numbers) for JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in sd["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in doc.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in doc["param_groups"]]
    return {"state": state, "param_groups": groups}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
