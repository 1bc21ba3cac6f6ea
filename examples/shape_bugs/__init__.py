"""A gallery of shape bugs: each module is a small program with one realistic mistake.

A bug module defines ``build()`` (make the model), ``run(model)`` (use it once), ``CAUGHT_AT`` (where
typedlm stops the program: ``import``, ``construction``, ``check`` — ``python -m typedlm check`` on the
module, before any training — or ``first call``) and ``MESSAGE`` (a fragment of what the user reads).
A line that mypy must reject is marked ``# E: code``. The modules are imported by name, never
statically, so a mypy run over this package does not follow into them.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from typedlm.check import check_modules
from typedlm.errors import ConfigError, ShapeError

Stage = Literal["import", "construction", "check", "first call"]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUGS: tuple[str, ...] = (
    "wrong_order",
    "forgotten_embedding",
    "mismatched_configs",
    "misdeclared_layer",
    "wrong_input_width",
    "dropped_column",
    "shifted_targets",
    "one_hot_as_ids",
    "seq_too_long",
    "softmax_over_queries",
    "heads_merged_without_transpose",
    "rmsnorm_over_seq",
    "missing_causal_mask",
    "normalised_over_batch",
    "cat_wrong_axis",
    "linear_ffn_for_d_model",
    "hard_coded_batch",
    "positions_from_batch_axis",
    "wrapper_forgets_start_pos",
    "decode_forgets_start_pos",
    "unshifted_targets",
)
"""Bug modules in the order the gallery shows them."""

_MARK = re.compile(r"#\s*E:\s*([a-z-]+)")
_MYPY_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<text>.*)\[(?P<code>[a-z-]+)\]$")


@dataclass(frozen=True)
class Caught:
    """Where a bug stopped the program and what the user read (an error, or `typedlm check`'s line)."""

    stage: Stage
    message: str


def path_of(name: str) -> Path:
    return HERE / f"{name}.py"


def title_of(name: str) -> str:
    """The first line of the bug module's docstring."""
    text = path_of(name).read_text()
    return text.split('"""')[1].strip().splitlines()[0]


def claims(name: str) -> tuple[str, str]:
    """The module's ``CAUGHT_AT`` and ``MESSAGE``, read from its source (a bug may stop its own import)."""
    values: dict[str, str] = {}
    for node in ast.parse(path_of(name).read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("CAUGHT_AT", "MESSAGE") and isinstance(node.value, ast.Constant):
                values[node.targets[0].id] = str(node.value.value)
    return values["CAUGHT_AT"], values["MESSAGE"]


def marked_lines(name: str) -> set[tuple[int, str]]:
    """The ``(line, error code)`` pairs that mypy must report for this bug."""
    lines = path_of(name).read_text().splitlines()
    return {(n, m.group(1)) for n, line in enumerate(lines, 1) if (m := _MARK.search(line))}


def mypy_errors(names: tuple[str, ...] = BUGS) -> dict[str, list[tuple[int, str, str]]]:
    """One strict mypy run (the project's mypy.ini) over the bug files: ``(line, code, message)`` by bug.

    Raises ImportError when mypy is not installed (it is a development dependency).
    """
    from mypy import api

    paths = [str(path_of(name).relative_to(ROOT)) for name in names]
    stdout, stderr, _ = api.run(["--config-file", str(ROOT / "mypy.ini"), *paths])
    if stderr:
        raise RuntimeError(f"mypy failed: {stderr}")
    found: dict[str, list[tuple[int, str, str]]] = {name: [] for name in names}
    for line in stdout.splitlines():
        match = _MYPY_ERROR.match(line)
        if match:
            found[Path(match["path"]).stem].append((int(match["line"]), match["code"], match["text"].strip()))
    return found


def catch(name: str) -> Caught | None:
    """Run the bug program (import, build, `typedlm check`, first call); where it stopped, or None."""
    stage: Stage = "import"
    try:
        module = importlib.import_module(f"{__name__}.{name}")
        stage = "construction"
        model = module.build()
        report = check_modules([module])
        if report.errors:
            return Caught("check", report.errors[0].format())
        stage = "first call"
        module.run(model)
    except (ShapeError, ConfigError) as error:
        return Caught(stage, f"{type(error).__name__}: {error}")
    return None
