"""TrainLog: what a training run did, as one JSON file (``--log PATH``).

It holds the model config, the training settings, the device, the data, every step's loss, learning
rate and gradient norm, the validation losses, throughput, and the first and final loss. JSON has no
NaN or infinity, so those are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` and read back as
floats.

Reading one back (`TrainLog.load`, `TrainLog.from_dict`) checks every field: a wrong type, a missing
field or a malformed record is a `DataFileError` naming the file and the field
(``trainlog.json: steps[3].loss: expected a number, found 'abc'``); nothing else escapes, whatever the
JSON holds. The derived fields (``first_loss``, ``final_loss``, ``final_val_loss``, ``tokens_per_s``)
are recomputed, not read. The field checks (`FieldError`, ``expect_*``) are shared with checkpoint.py.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from typedlm.atomic import write_text_atomic
from typedlm.errors import DataFileError

LOG_FORMAT = "typedlm.trainlog/1"
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
"""How `_json_safe` writes the floats JSON cannot hold, and what they read back as."""
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]+")


class FieldError(Exception):
    """A JSON field is missing or has the wrong type or value; ``field`` is its path (``steps[3].loss``).

    Internal: `TrainLog.from_dict` turns it into a `DataFileError`, checkpoint.py into a `CheckpointError`.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def describe(value: object) -> str:
    """A short, one-line description of a JSON value for an error message (never a deep repr)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float | str):
        try:
            text = repr(value)
        except ValueError:  # an integer of more digits than Python converts to text
            return "an integer of thousands of digits"
        return text if len(text) <= 40 else text[:37] + "..."
    return type(value).__name__


def field_path(prefix: str, key: str | int) -> str:
    """The path of ``key`` inside the field ``prefix``: ``steps[3]``, ``steps[3].loss``, ``loss``,
    ``config['odd key']``."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if not _PLAIN_KEY.fullmatch(key):  # a key with spaces, quotes or newlines: quoted, on one line
        return f"{prefix}[{describe(key)}]"
    return f"{prefix}.{key}" if prefix else key


def field_of(d: dict[str, Any], key: str, prefix: str) -> Any:
    """``d[key]``, or a FieldError naming the missing field."""
    if key not in d:
        raise FieldError(field_path(prefix, key), "missing")
    return d[key]


def expect_dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(where, f"expected an object, found {describe(value)}")
    return value


def expect_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FieldError(where, f"expected a list, found {describe(value)}")
    return value


def expect_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FieldError(where, f"expected a string, found {describe(value)}")
    return value


def expect_int(value: object, where: str, minimum: int | None = None) -> int:
    """An integer (not a bool, not a float such as ``3.0``), at least ``minimum`` when given."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(where, f"expected an integer, found {describe(value)}")
    if minimum is not None and value < minimum:
        raise FieldError(where, f"expected an integer >= {minimum}, found {describe(value)}")
    return value


def expect_number(value: object, where: str) -> float:
    """A number (not a bool), or one of the strings ``"nan"``, ``"inf"``, ``"-inf"``; as a float."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FieldError(where, f"expected a number, found {describe(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise FieldError(where, "expected a number, found an integer too large for a float") from None


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

        def records(key: str, required: bool = True) -> list[tuple[str, dict[str, Any]]]:
            where = field_path(prefix, key)
            items = expect_list(field_of(d, key, prefix), where) if required or key in d else []
            return [(field_path(where, i), expect_dict(item, field_path(where, i))) for i, item in enumerate(items)]

        def step_of(r: dict[str, Any], where: str) -> int:
            return expect_int(field_of(r, "step", where), field_path(where, "step"), minimum=0)

        def number(r: dict[str, Any], key: str, where: str) -> float:
            return expect_number(field_of(r, key, where), field_path(where, key))

        def positive(r: dict[str, Any], key: str, where: str) -> int:
            return expect_int(field_of(r, key, where), field_path(where, key), minimum=1)

        return cls(
            config=expect_dict(field_of(d, "config", prefix), field_path(prefix, "config")),
            train=expect_dict(field_of(d, "train", prefix), field_path(prefix, "train")),
            device=expect_str(field_of(d, "device", prefix), field_path(prefix, "device")),
            dtype=expect_str(field_of(d, "dtype", prefix), field_path(prefix, "dtype")),
            world_size=expect_int(field_of(d, "world_size", prefix), field_path(prefix, "world_size"), minimum=1),
            data=expect_dict(field_of(d, "data", prefix), field_path(prefix, "data")),
            status=expect_str(field_of(d, "status", prefix), field_path(prefix, "status")),
            steps=[
                StepRecord(step_of(r, w), number(r, "loss", w), number(r, "lr", w), number(r, "grad_norm", w))
                for w, r in records("steps")
            ],
            evals=[EvalRecord(step_of(r, w), number(r, "val_loss", w)) for w, r in records("evals")],
            throughput=[
                ThroughputRecord(step_of(r, w), number(r, "tokens_per_s", w)) for w, r in records("throughput")
            ],
            wall_s=expect_number(field_of(d, "wall_s", prefix), field_path(prefix, "wall_s")),
            message=expect_str(d.get("message", ""), field_path(prefix, "message")),
            extensions=[
                ExtensionRecord(step_of(r, w), positive(r, "was", w), positive(r, "steps", w))
                for w, r in records("extensions", required=False)
            ],
        )

    def save(self, path: str | Path) -> None:
        """Write the log as indented JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainLog:
        """Read a log that `save` wrote; anything wrong with the file is a DataFileError naming it."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataFileError(f"{path}: TrainLog file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataFileError(f"{path}: cannot read the TrainLog file ({_reason(e)})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}:{e.lineno}: not a valid TrainLog JSON file ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # an integer of too many digits; nesting too deep
            raise DataFileError(f"{path}: not a valid TrainLog JSON file ({_reason(e)})") from None
        if not isinstance(d, dict) or d.get("format") != LOG_FORMAT:
            found = describe(d.get("format")) if isinstance(d, dict) else describe(d)
            raise DataFileError(f"{path}: format: expected {LOG_FORMAT!r}, found {found}")
        return cls.from_dict(d, str(path))


def _reason(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
