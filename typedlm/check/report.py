"""What `typedlm check` found: one `Problem` per line of output, mypy's format, and a summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from typedlm.torch_errors import display_path

Severity = Literal["error", "note"]

CODES = {
    "import": "the module could not be imported (a class refused at creation, a model refused at construction)",
    "construction": "building a layer or model (a factory) was refused: mismatched configs or shapes",
    "shape": "a probe forward or function call failed: a shape or dtype error inside the body",
    "hard-coded-size": "works with one batch or seq size but not another",
    "causal": "an output at some position depends on a later position",
    "batch-mixing": "an output of one sample depends on another sample",
    "non-finite": "a finite probe input gives NaN or infinite outputs",
    "cache": "decoding with the KV cache differs from one full forward, or is refused",
    "target-leak": "a next-token loss that scores a model for copying its input",
    "skipped": "not checked, with the reason",
}
"""Every ``[code]`` the checker reports, and what it means."""


@dataclass(frozen=True)
class Problem:
    """One finding at ``path:line`` (the offending line where a traceback shows it, else the definition)."""

    path: str
    line: int
    message: str
    code: str
    severity: Severity = "error"

    def format(self) -> str:
        text = " ".join(self.message.split())
        return f"{display_path(self.path)}:{self.line}: {self.severity}: {text}  [{self.code}]"


@dataclass
class Report:
    """Everything one run found, with what it checked and how long it took."""

    problems: list[Problem] = field(default_factory=list)
    layers: int = 0
    models: int = 0
    functions: int = 0
    seconds: float = 0.0

    def add(self, problem: Problem) -> None:
        """Record ``problem``, unless it is an error with the same code at the same line as one already
        recorded (a layer class and the model built from it can fail at one line)."""
        place = (problem.path, problem.line, problem.code, problem.severity)
        if problem.severity == "note" or all((p.path, p.line, p.code, p.severity) != place for p in self.problems):
            self.problems.append(problem)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def summary(self) -> str:
        skipped = sum(p.code == "skipped" for p in self.problems)
        parts = [
            f"checked {self.layers} layer{'s' * (self.layers != 1)}, {self.models} model{'s' * (self.models != 1)}, "
            f"{self.functions} function{'s' * (self.functions != 1)} in {self.seconds:.1f} s"
        ]
        if skipped:
            parts.append(f"{skipped} skipped")
        errors = len(self.errors)
        parts.append(f"found {errors} error{'s' * (errors != 1)}" if errors else "no errors")
        return "; ".join(parts)

    def format(self) -> str:
        """One line per problem, sorted by place, and the summary."""
        lines = [p.format() for p in sorted(self.problems, key=lambda p: (p.path, p.line, p.code))]
        return "\n".join([*lines, self.summary()])

    def to_json(self) -> str:
        return json.dumps(
            {
                "problems": [asdict(p) | {"path": display_path(p.path)} for p in self.problems],
                "layers": self.layers,
                "models": self.models,
                "functions": self.functions,
                "seconds": round(self.seconds, 3),
                "errors": len(self.errors),
            },
            indent=2,
        )
