"""TrainLog: what a training run did, as one JSON file (``--log PATH``).

It holds the model config, the training settings, the device, the data, every step's loss, learning
rate and gradient norm, the validation losses, throughput, and the first and final loss.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from typedlm.atomic import write_text_atomic

LOG_FORMAT = "typedlm.trainlog/1"


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
    """The record of one run; ``status`` is ``running``, ``completed`` or ``diverged``."""

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
    def from_dict(cls, d: dict[str, Any]) -> TrainLog:
        return cls(
            config=d["config"],
            train=d["train"],
            device=d["device"],
            dtype=d["dtype"],
            world_size=d["world_size"],
            data=d["data"],
            status=d["status"],
            steps=[StepRecord(s["step"], float(s["loss"]), s["lr"], float(s["grad_norm"])) for s in d["steps"]],
            evals=[EvalRecord(e["step"], float(e["val_loss"])) for e in d["evals"]],
            throughput=[ThroughputRecord(t["step"], float(t["tokens_per_s"])) for t in d["throughput"]],
            wall_s=d["wall_s"],
            message=d.get("message", ""),
            extensions=[ExtensionRecord(e["step"], e["was"], e["steps"]) for e in d.get("extensions", [])],
        )

    def save(self, path: str | Path) -> None:
        """Write the log as indented JSON, atomically."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainLog:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not a valid TrainLog JSON file ({e.msg})") from None
        if d.get("format") != LOG_FORMAT:
            raise ValueError(f"{path}: format {d.get('format')!r} is not {LOG_FORMAT!r}")
        return cls.from_dict(d)


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
