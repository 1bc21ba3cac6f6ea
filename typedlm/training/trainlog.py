"""TrainLog: what a training run did, as one JSON file (``--log PATH``).

It holds the model config, the training settings, the device, the data, every step's loss, learning
rate and gradient norm, the validation losses, throughput, and the first and final loss. JSON has no
NaN or infinity, so those are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` and read back as
floats.

Reading one back (`TrainLog.load`, `TrainLog.from_dict`) checks every field: a wrong type, a missing
field or a malformed record is a `DataFileError` naming the file and the field
(``trainlog.json: steps[3].loss: expected a number, found 'abc'``); nothing else escapes, whatever the
JSON holds. The derived fields (``first_loss``, ``final_loss``, ``final_val_loss``, ``tokens_per_s``)
are recomputed, not read. The field checks (`FieldError`, ``expect_*``) are in `typedlm.json_fields`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from typedlm.atomic import write_text_atomic
from typedlm.errors import DataFileError
from typedlm.json_fields import (
    FieldError,
    describe,
    dict_field,
    expect_dict,
    expect_list,
    expect_str,
    field_of,
    field_path,
    int_field,
    number_field,
    str_field,
)
from typedlm.json_file import UnreadableJSON, read_json

LOG_FORMAT = "typedlm.trainlog/1"
_Record = TypeVar("_Record")


@dataclass
class StepRecord:
    """One optimizer step: its index (0-based), mean training loss, learning rate and gradient norm."""

    step: int
    loss: float
    lr: float
    grad_norm: float


@dataclass
class EvalRecord:
    """Mean validation loss after ``step`` completed steps."""

    step: int
    val_loss: float


@dataclass
class ThroughputRecord:
    """Training tokens per second (all ranks together) over the log interval ending at ``step``."""

    step: int
    tokens_per_s: float


@dataclass
class ExtensionRecord:
    """A resume at ``step`` with a new total: from then on the schedule runs to ``steps``, not ``was``."""

    step: int
    was: int
    steps: int


@dataclass
class TrainLog:
    """The record of one run; ``status`` is ``running``, ``completed``, ``diverged`` or ``interrupted``."""

    config: dict[str, Any]
    train: dict[str, Any]
    device: str
    dtype: str
    world_size: int
    data: dict[str, Any]
    status: str = "running"
    steps: list[StepRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    throughput: list[ThroughputRecord] = field(default_factory=list)
    wall_s: float = 0.0
    message: str = ""
    extensions: list[ExtensionRecord] = field(default_factory=list)

    @property
    def first_loss(self) -> float | None:
        return self.steps[0].loss if self.steps else None

    @property
    def final_loss(self) -> float | None:
        return self.steps[-1].loss if self.steps else None

    @property
    def final_val_loss(self) -> float | None:
        return self.evals[-1].val_loss if self.evals else None

    @property
    def tokens_per_s(self) -> float | None:
        """The median over log intervals (robust to the slow first, compiling, interval)."""
        rates = sorted(t.tokens_per_s for t in self.throughput)
        return rates[len(rates) // 2] if rates else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"format": LOG_FORMAT, **d}
        d.update(
            first_loss=self.first_loss,
            final_loss=self.final_loss,
            final_val_loss=self.final_val_loss,
            tokens_per_s=self.tokens_per_s,
        )
        safe: dict[str, Any] = _json_safe(d)
        return safe

    @classmethod
    def from_dict(cls, d: object, source: str = "TrainLog") -> TrainLog:
        """The log that `to_dict` gave ``d``; a bad field is a DataFileError ``source: field: problem``."""
        try:
            return cls.parse(d)
        except FieldError as e:
            raise DataFileError(f"{source}: {e}") from None

    @classmethod
    def parse(cls, d: object, prefix: str = "") -> TrainLog:
        """Like `from_dict`, raising `FieldError` with field paths under ``prefix`` (``log.steps[3]``)."""
        d = expect_dict(d, prefix or "(top level)")
        if "format" in d and d["format"] != LOG_FORMAT:
            raise FieldError(field_path(prefix, "format"), f"expected {LOG_FORMAT!r}, found {describe(d['format'])}")
        return cls(
            config=dict_field(d, "config", prefix),
            train=dict_field(d, "train", prefix),
            device=str_field(d, "device", prefix),
            dtype=str_field(d, "dtype", prefix),
            world_size=int_field(d, "world_size", prefix, minimum=1),
            data=dict_field(d, "data", prefix),
            status=str_field(d, "status", prefix),
            steps=_records(d, "steps", prefix, _step_record),
            evals=_records(d, "evals", prefix, _eval_record),
            throughput=_records(d, "throughput", prefix, _throughput_record),
            wall_s=number_field(d, "wall_s", prefix),
            message=expect_str(d.get("message", ""), field_path(prefix, "message")),
            extensions=_records(d, "extensions", prefix, _extension_record, required=False),
        )

    def save(self, path: str | Path) -> None:
        """Write the log as indented JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainLog:
        """Read a log that `save` wrote; anything wrong with the file is a DataFileError naming it."""
        try:
            d = read_json(path)
        except UnreadableJSON as e:
            problem = {
                "missing": "TrainLog file not found",
                "unreadable": f"cannot read the TrainLog file ({e.reason})",
                "not utf-8": f"cannot read the TrainLog file ({e.reason})",
                "not json": f"not a valid TrainLog JSON file ({e.reason})",
            }[e.problem]
            raise DataFileError(f"{e.where(path)}: {problem}") from None
        if not isinstance(d, dict) or d.get("format") != LOG_FORMAT:
            found = describe(d.get("format")) if isinstance(d, dict) else describe(d)
            raise DataFileError(f"{path}: format: expected {LOG_FORMAT!r}, found {found}")
        return cls.from_dict(d, str(path))


def _records(
    d: dict[str, Any],
    key: str,
    prefix: str,
    record: Callable[[dict[str, Any], str], _Record],
    required: bool = True,
) -> list[_Record]:
    """The list ``d[key]`` (``[]`` when absent and not ``required``), each item an object made into a
    record by ``record(item, its path)``; every item is checked to be an object before any is read."""
    where = field_path(prefix, key)
    items = expect_list(field_of(d, key, prefix), where) if required or key in d else []
    objects = [(expect_dict(item, field_path(where, i)), field_path(where, i)) for i, item in enumerate(items)]
    return [record(r, path) for r, path in objects]


def _step_record(r: dict[str, Any], where: str) -> StepRecord:
    return StepRecord(
        int_field(r, "step", where, minimum=0),
        number_field(r, "loss", where),
        number_field(r, "lr", where),
        number_field(r, "grad_norm", where),
    )


def _eval_record(r: dict[str, Any], where: str) -> EvalRecord:
    return EvalRecord(int_field(r, "step", where, minimum=0), number_field(r, "val_loss", where))


def _throughput_record(r: dict[str, Any], where: str) -> ThroughputRecord:
    return ThroughputRecord(int_field(r, "step", where, minimum=0), number_field(r, "tokens_per_s", where))


def _extension_record(r: dict[str, Any], where: str) -> ExtensionRecord:
    return ExtensionRecord(
        int_field(r, "step", where, minimum=0),
        int_field(r, "was", where, minimum=1),
        int_field(r, "steps", where, minimum=1),
    )


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
