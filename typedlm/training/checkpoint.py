"""Checkpoints: safetensors tensors + a JSON state, swapped in whole, loaded without unpickling, checked.

A checkpoint is a directory ``OUT/checkpoint/`` holding

- ``model.safetensors``: the model's weights (tied weights stored once), readable by any safetensors tool;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (AdamW moments and step counts),
  named ``"{parameter index}.{state name}"`` (``"3.exp_avg"``);
- ``state.json``: the step, the model config, each block's widths of a `GPT2` (``blocks``: ``{"heads":
  [...], "ffn": [...]}``, one entry per block), the optimizer's hyperparameters, the sha256 of both
  tensor files, and (from the trainer, `TRAINER_FIELDS`) the trainer settings, the world size, the RNG
  seed scheme, fingerprints of the tokenizer and the data, and the TrainLog so far.

It is written into ``checkpoint.tmp/`` and then swapped in by two renames
(``checkpoint`` → ``checkpoint.prev``, ``checkpoint.tmp`` → ``checkpoint``), so at every instant one
complete checkpoint exists, even across repeated crashes: ``checkpoint.prev`` is removed only while a
complete ``checkpoint`` exists, and `find_checkpoint` falls back to it after a crash between the
renames. ``checkpoint.tmp`` is never read.

Loading never silently accepts a damaged checkpoint; everything wrong is a one-line `CheckpointError`
naming the file and the field or tensor:

- every field of state.json is checked for presence, type and range (`read_state`);
- each tensor file's sha256 is compared with the one recorded in state.json ``checksums``, so one
  flipped bit anywhere in it is refused. sha256 of the whole file, rather than a cheaper digest, because
  ``sha256sum model.safetensors`` checks it by hand too, and it is cheap: on a gpt2-small-sized file
  (124M float32 parameters, 497 MB) hashing takes 0.3 s against 1.5 s to write and fsync the file
  (x86 with SHA extensions; about 1 s without). Checkpoints written before checksums were recorded
  (no ``checksums`` field) load without this check; every other check still applies;
- weights holding NaN or infinity are refused (a fast sum first, an exact count only when it is not
  finite), as are weights whose names or shapes do not fit the model;
- optimizer tensors must be named ``"{index}.{name}"`` for a parameter some param_group lists, and
  moments must have their parameter's shape.

Nothing is written while loading, and a model is changed only once all its weights have passed.
`load_gpt2_checkpoint` rebuilds the `GPT2` a checkpoint holds from its config and block widths
(a checkpoint written before widths were recorded has the config's in every block).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from typedlm.atomic import fsync_directory, write_atomic, write_text_atomic
from typedlm.config import CausalConfig
from typedlm.errors import ConfigError, TypedLMError, error_reason
from typedlm.json_fields import (
    FieldError,
    describe,
    dict_field,
    expect_dict,
    expect_int,
    expect_json_number,
    expect_list,
    expect_str,
    field_of,
    field_path,
    int_field,
    list_field,
    str_field,
)
from typedlm.json_file import UnreadableJSON, read_json
from typedlm.models import GPT2, CausalTransformer
from typedlm.training.trainlog import TrainLog

CHECKPOINT_FORMAT = "typedlm.checkpoint/1"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TRAINER_FIELDS = ("train", "world_size", "tokenizer_hash", "data_hash", "rng", "log")
"""The state fields the trainer writes besides ``step``, ``config`` and ``optimizer``: `read_state`
checks each one present, and ``require=TRAINER_FIELDS`` makes them compulsory (a resume reads them)."""

_TRAIN_INTS = ("steps", "warmup_steps", "grad_accum", "seed")
_TRAIN_NUMBERS = ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip")
_GROUP_NUMBERS = ("lr", "eps", "weight_decay", "initial_lr", "momentum", "dampening")
_GROUP_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "nesterov", "decoupled_weight_decay")
_GROUP_OPTIONAL_FLAGS = ("foreach", "fused")
_PER_ELEMENT_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_TENSOR_NAME = re.compile(r"(0|[1-9][0-9]*)\.(.+)", re.DOTALL)
_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")


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


_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)


def _complete(candidate: Path) -> bool:
    return all((candidate / name).is_file() for name in _FILES)


def partial_checkpoint(out_dir: str | Path) -> tuple[Path, str] | None:
    """The checkpoint directory of ``out_dir`` that would be resumed if it were whole, when it lacks
    one of its files: that directory and the first file it lacks (it is nothing to resume, nor something
    to replace without asking); or None. ``checkpoint/`` counts when it exists, else ``checkpoint.prev/``
    (a ``checkpoint.prev/`` half removed beside a complete ``checkpoint/`` is a normal crash state)."""
    current = checkpoint_dir(out_dir)
    candidate = current if current.exists() else current.with_name("checkpoint.prev")
    present = [(candidate / name).exists() for name in _FILES]
    if any(present) and not all(present):
        return candidate, _FILES[present.index(False)]
    if current.exists() and not any(present):
        return candidate, _FILES[0]
    return None


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory under ``out_dir`` (all three files present), or None."""
    current = checkpoint_dir(out_dir)
    for candidate in (current, current.with_name("checkpoint.prev")):
        if _complete(candidate):
            return candidate
    return None


def file_checksum(file: Path) -> str:
    """``"sha256:<hex>"`` of the file's bytes (``sha256sum FILE`` prints the same hex digits)."""
    with open(file, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def save_checkpoint(
    out_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write ``model`` (unwrapped: not DDP or compiled), ``optimizer`` and the JSON-able ``state`` (which
    must hold ``step`` and ``config``) as ``out_dir/checkpoint``; returns that path. For a `GPT2` (or
    another model with one `CausalTransformer`) the state also records each block's widths (``blocks``)."""
    final = checkpoint_dir(out_dir)
    tmp, prev = final.with_name("checkpoint.tmp"), final.with_name("checkpoint.prev")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    write_atomic(tmp / MODEL_FILE, lambda p: safetensors.torch.save_model(model, str(p)))
    tensors, optim_json = _split_optimizer_state(optimizer.state_dict())
    write_atomic(tmp / OPTIMIZER_FILE, lambda p: safetensors.torch.save_file(tensors, str(p)))
    checksums = {name: file_checksum(tmp / name) for name in (MODEL_FILE, OPTIMIZER_FILE)}
    blocks = _blocks_of(model)
    doc = {"format": CHECKPOINT_FORMAT, **state, **blocks, "optimizer": optim_json, "checksums": checksums}
    write_text_atomic(tmp / STATE_FILE, json.dumps(doc, indent=1) + "\n")
    with contextlib.suppress(OSError):  # a filesystem that cannot fsync a directory still gets the checkpoint
        fsync_directory(tmp)

    if _complete(final):  # the older prev can go; final becomes prev until the new one is in place
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(final, prev)
    else:  # missing after a crash between the renames, or damaged: prev, if any, is the complete one
        shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    with contextlib.suppress(OSError):
        fsync_directory(final.parent)
    shutil.rmtree(prev, ignore_errors=True)
    return final


def read_state(path: str | Path, *, require: tuple[str, ...] = ()) -> dict[str, Any]:
    """``state.json`` of the checkpoint directory ``path``, every field checked; the fields named in
    ``require`` (e.g. `TRAINER_FIELDS`) must be present too. Any problem is a CheckpointError."""
    file = Path(path) / STATE_FILE
    try:
        state = read_json(file)
    except UnreadableJSON as e:
        problem = {
            "missing": "checkpoint state file not found",
            "unreadable": f"cannot read the checkpoint state ({e.reason})",
            "not utf-8": f"cannot read the checkpoint state ({e.reason})",
            "not json": f"not valid JSON ({e.reason})",
        }[e.problem]
        raise CheckpointError(f"{e.where(file)}: {problem}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a JSON object, found {describe(state)}")
    if state.get("format") != CHECKPOINT_FORMAT:
        found = describe(state["format"]) if "format" in state else "missing"
        raise CheckpointError(f"{file}: format is {found}, expected {CHECKPOINT_FORMAT!r}")
    try:
        _check_state(state, require)
    except FieldError as e:
        raise CheckpointError(f"{file}: {e}") from None
    return state


def load_checkpoint(path: str | Path, *, require: tuple[str, ...] = ()) -> Checkpoint:
    """Read the checkpoint directory ``path``: its state (see `read_state` for ``require``) and its
    optimizer tensors, checked against their checksum and their names (nothing is unpickled)."""
    path = Path(path)
    state = read_state(path, require=require)
    file = path / OPTIMIZER_FILE
    tensors = _load_tensors(file, state)
    _check_finite(tensors, file)
    _join_optimizer_state(tensors, state["optimizer"], path)  # only to check the tensors' names
    return Checkpoint(path, state, tensors)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path/model.safetensors`` into ``model`` in place; the file must match its checksum, hold
    only finite numbers, and fit ``model`` tensor for tensor (by name and shape); a `GPT2` (or another
    model with one `CausalTransformer`) must have the block widths the checkpoint records. On any error
    the model is left as it was."""
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: model weights not found")
    state = read_state(path)
    _check_blocks(model, state, Path(path) / STATE_FILE)
    tensors = _load_tensors(file, state)
    _check_finite(tensors, file)
    _check_fits(model, tensors, file)
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: cannot load weights into {type(model).__name__}: {error_reason(e)}") from None


def load_gpt2_checkpoint(path: str | Path) -> GPT2:
    """The `GPT2` saved in the checkpoint directory ``path`` (eval mode, on the CPU): built from the
    recorded config and block widths (the config's where none are recorded), then `load_weights`."""
    path = Path(path)
    state = read_state(path)
    try:
        cfg = CausalConfig.from_dict(state["config"])
        blocks = state.get("blocks", {})
        model = GPT2(cfg, block_heads=blocks.get("heads"), block_ffn=blocks.get("ffn"))
    except ConfigError as e:
        raise CheckpointError(f"{path / STATE_FILE}: config: {e}") from None
    load_weights(model, path)
    return model.eval()


def _body(model: nn.Module) -> CausalTransformer | None:
    """The one `CausalTransformer` in ``model`` (a `GPT2`'s, a ``causal_transformer_*`` chain's), if one."""
    bodies = [m for m in model.modules() if isinstance(m, CausalTransformer)]
    return bodies[0] if len(bodies) == 1 else None


def _blocks_of(model: nn.Module) -> dict[str, Any]:
    """``{"blocks": {"heads": [...], "ffn": [...]}}`` for a model with one `CausalTransformer`, else nothing."""
    body = _body(model)
    if body is None:
        return {}
    return {"blocks": {"heads": list(body.block_heads), "ffn": list(body.block_ffn)}}


def _check_blocks(model: nn.Module, state: dict[str, Any], file: Path) -> None:
    """A model loading a checkpoint that records block widths must have those widths (a head count can
    differ with every weight shape the same, so `_check_fits` would not see it)."""
    recorded, body, config = state.get("blocks"), _body(model), state.get("config")
    if body is None:
        return
    if recorded is None:  # written before per-block widths: every block has the config's
        if not isinstance(config, dict) or not isinstance(config.get("layers"), int):
            return
        layers = config["layers"]
        recorded = {"heads": [config.get("heads")] * layers, "ffn": [config.get("ffn_hidden")] * layers}
    for name, own in (("heads", body.block_heads), ("ffn", body.block_ffn)):
        if list(own) != recorded[name]:
            raise CheckpointError(
                f"{file}: the blocks' {name} are {recorded[name]}, but this {type(model).__name__} has block_{name}="
                f"{list(own)}: build it with block_{name}={recorded[name]}, or use load_gpt2_checkpoint"
            )


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    """Load the checkpoint's optimizer state into ``optimizer`` (built over the same parameters)."""
    file = ckpt.path / OPTIMIZER_FILE
    sd = _join_optimizer_state(ckpt.optimizer_tensors, ckpt.state.get("optimizer"), ckpt.path)
    saved = [i for group in sd["param_groups"] for i in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(saved) == len(params):  # otherwise load_state_dict says what differs
        by_index = dict(zip(saved, params, strict=True))
        for index, values in sorted(sd["state"].items()):
            for name in _PER_ELEMENT_STATE:
                value, param = values.get(name), by_index.get(index)
                if isinstance(value, torch.Tensor) and param is not None and value.shape != param.shape:
                    raise CheckpointError(
                        f"{file}: tensor {f'{index}.{name}'!r} has shape {tuple(value.shape)}, but parameter {index} "
                        f"of this optimizer has {tuple(param.shape)}"
                    )
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{file}: does not fit this optimizer: {error_reason(e)}") from None


def _check_state(state: dict[str, Any], require: tuple[str, ...]) -> None:
    """Check every field of a state.json object (``format`` already checked); FieldError on the first bad."""
    for key in ("step", "config", "optimizer", *require):
        field_of(state, key, "")
    step = expect_int(state["step"], "step", minimum=0)
    expect_dict(state["config"], "config")
    _check_optimizer_doc(state["optimizer"])
    if "train" in state:
        train = expect_dict(state["train"], "train")
        total = int_field(train, "steps", "train", minimum=1)
        for name in _TRAIN_INTS:
            if name in train:
                expect_int(train[name], field_path("train", name))
        for name in _TRAIN_NUMBERS:
            if name in train:
                expect_json_number(train[name], field_path("train", name))
        if step > total:
            raise FieldError("step", f"{step} is beyond the run's total, train.steps={total}")
    if "blocks" in state:
        _check_blocks_doc(state["blocks"], state["config"].get("layers"))
    if "world_size" in state:
        expect_int(state["world_size"], "world_size", minimum=1)
    for name in ("tokenizer_hash", "data_hash"):
        if name in state:
            expect_str(state[name], name)
    if "rng" in state:
        expect_dict(state["rng"], "rng")
    if "log" in state:
        TrainLog.parse(state["log"], "log")
    if "checksums" in state:
        checksums = expect_dict(state["checksums"], "checksums")
        for name in (MODEL_FILE, OPTIMIZER_FILE):
            value = str_field(checksums, name, "checksums")
            if not _CHECKSUM.fullmatch(value):
                where = field_path("checksums", name)
                raise FieldError(where, f"expected 'sha256:' and 64 hex digits, found {describe(value)}")


def _check_blocks_doc(doc: object, layers: object) -> None:
    """``blocks``: ``heads`` and ``ffn``, each a list of ints >= 1 with one entry per block (``config.layers``)."""
    blocks = expect_dict(doc, "blocks")
    for name in ("heads", "ffn"):
        where = field_path("blocks", name)
        widths = list_field(blocks, name, "blocks")
        for index, width in enumerate(widths):
            expect_int(width, field_path(where, index), minimum=1)
        if isinstance(layers, int) and len(widths) != layers:
            raise FieldError(where, f"has {len(widths)} entries, but config.layers = {layers}")


def _check_optimizer_doc(doc: object) -> dict[str, Any]:
    """The optimizer's JSON part: ``param_groups`` (hyperparameters and parameter indices) and
    ``scalars`` (non-tensor per-parameter state, by index)."""
    doc = expect_dict(doc, "optimizer")
    groups = list_field(doc, "param_groups", "optimizer")
    seen: set[int] = set()
    for i, group in enumerate(groups):
        where = field_path("optimizer.param_groups", i)
        group = expect_dict(group, where)
        params = field_path(where, "params")
        for j, index in enumerate(list_field(group, "params", where)):
            index = expect_int(index, field_path(params, j), minimum=0)
            if index in seen:
                raise FieldError(field_path(params, j), f"parameter {index} is listed twice")
            seen.add(index)
        for name in _GROUP_NUMBERS:
            if name in group:
                expect_json_number(group[name], field_path(where, name))
        if "betas" in group:
            at = field_path(where, "betas")
            betas = expect_list(group["betas"], at)
            if len(betas) != 2:
                raise FieldError(at, f"expected 2 numbers, found {len(betas)} values")
            for j, beta in enumerate(betas):
                expect_json_number(beta, field_path(at, j))
        for name in (*_GROUP_FLAGS, *_GROUP_OPTIONAL_FLAGS):
            value = group.get(name, False)
            if not (isinstance(value, bool) or (value is None and name in _GROUP_OPTIONAL_FLAGS)):
                raise FieldError(field_path(where, name), f"expected true or false, found {describe(value)}")
    scalars = dict_field(doc, "scalars", "optimizer")
    for index, values in scalars.items():
        where = field_path("optimizer.scalars", index)
        if not _INDEX.fullmatch(index):
            raise FieldError(where, "expected a parameter index (0, 1, ...) as the key")
        if int(index) not in seen:
            raise FieldError(where, f"parameter {index} is in no param_group")
        for name, value in expect_dict(values, where).items():
            if not (value is None or isinstance(value, bool | int | float)):
                raise FieldError(field_path(where, name), f"expected a number, found {describe(value)}")
    return doc


def _load_tensors(file: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``file``, once its bytes match the checksum ``state`` records for it (if any)."""
    if not file.is_file():
        raise CheckpointError(f"{file}: checkpoint file not found")
    expected = state.get("checksums", {}).get(file.name)
    try:
        actual = file_checksum(file) if expected is not None else None
        tensors = safetensors.torch.load_file(str(file)) if actual == expected else {}
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file: {error_reason(e)}") from None
    if actual != expected:
        raise CheckpointError(
            f"{file}: checksum mismatch: the file changed since the checkpoint was written (bit rot or an edit)"
        )
    return tensors


def _check_finite(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Refuse NaN or infinite weights, naming the first tensor (by name) and its count of them."""
    for name in sorted(tensors):
        t = tensors[name]
        if not t.is_floating_point() or bool(torch.isfinite(t.sum())):  # a NaN or inf makes the sum one
            continue
        bad = int((~torch.isfinite(t)).sum())
        if bad:  # else the sum overflowed: the values are finite
            raise CheckpointError(
                f"{file}: tensor {name!r} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} "
                f"(of {t.numel()}); the weights are unusable"
            )


def _check_fits(model: nn.Module, tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Every tensor of ``model`` (tied ones stored once) is in ``tensors`` with its shape, and no more."""
    expected = model.state_dict()

    def where(t: torch.Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
        return t.untyped_storage().data_ptr(), int(t.storage_offset()), tuple(t.shape), t.stride()

    stored = {where(expected[name]) for name in tensors if name in expected and expected[name].numel() > 0}
    missing = sorted(n for n, t in expected.items() if n not in tensors and not (t.numel() and where(t) in stored))
    unexpected = sorted(set(tensors) - set(expected))
    kind = type(model).__name__
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: weights do not match {kind}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            + (f" ({len(missing)} missing, {len(unexpected)} unexpected)" if len(missing) + len(unexpected) > 5 else "")
        )
    wrong = [n for n in sorted(tensors) if tensors[n].shape != expected[n].shape]
    if wrong:
        name = wrong[0]
        raise CheckpointError(
            f"{file}: tensor {name!r} has shape {tuple(tensors[name].shape)}, but {kind} has "
            f"{tuple(expected[name].shape)}" + (f" ({len(wrong)} tensors differ)" if len(wrong) > 1 else "")
        )


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


def _join_optimizer_state(tensors: dict[str, torch.Tensor], doc: object, path: Path) -> dict[str, Any]:
    """The optimizer state dict from its tensors and the ``optimizer`` field of the checkpoint at ``path``;
    a malformed field or a tensor not named ``"{index}.{name}"`` for a listed parameter is a CheckpointError."""
    try:
        doc = _check_optimizer_doc(doc)
    except FieldError as e:
        raise CheckpointError(f"{path / STATE_FILE}: {e}") from None
    listed = {i for group in doc["param_groups"] for i in group["params"]}
    state: dict[int, dict[str, Any]] = {}
    for key, value in sorted(tensors.items()):
        match = _TENSOR_NAME.fullmatch(key)
        if match is None:
            raise CheckpointError(
                f"{path / OPTIMIZER_FILE}: tensor {key!r} is not named '<parameter index>.<state name>'"
            )
        index = int(match[1])
        if index not in listed:
            raise CheckpointError(
                f"{path / OPTIMIZER_FILE}: tensor {key!r} is for parameter {index}, which no param_group lists"
            )
        state.setdefault(index, {})[match[2]] = value
    for index, values in doc["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in doc["param_groups"]]
    return {"state": state, "param_groups": groups}
