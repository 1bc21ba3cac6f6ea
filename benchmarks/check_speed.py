"""How long the checks before the run take: ``typedlm check`` next to mypy, and a probe next to a real forward.

Rows, side by side in one run (wall time, median of ``--rounds`` runs, range in brackets):

- ``typedlm check examples/``: a fresh process, imports included, as a user or CI runs it
  (target ≤ 10 s on 2 cores);
- ``typedlm check`` on the shape-bug gallery: the 21 bug programs, each imported, built and probed;
- ``mypy --strict examples/``: the other stage before the run, on the same files, in a fresh process
  with an empty cache (the peer);
- ``probe gpt2-small (built on meta)``: in-process, the model factory called under the meta device,
  two shape traces (target ≤ 5 s); its invariants are skipped above ``--max-params``, as by default;
- ``one real forward of gpt2-small``: the same model built on the CPU and called once on
  ``(1, 1024)`` ids — the first point at which runtime checks alone could say anything.

Run: ``python -m benchmarks.check_speed`` (about a minute), or ``--rounds 1`` for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

import typedlm as tl
from typedlm.check import check_modules

ROOT = Path(__file__).resolve().parents[1]
GALLERY_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / "shape_bugs").glob("[!_]*.py"))


def _timed_process(argv: Sequence[str], *, ok: Callable[[int], bool]) -> float:
    started = time.perf_counter()
    env = dict(os.environ, MYPY_CACHE_DIR=tempfile.mkdtemp(prefix="mypy-cache-"))
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if not ok(run.returncode):
        raise SystemExit(f"{' '.join(argv)} exited {run.returncode}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return elapsed


def _gpt2_small_module() -> ModuleType:
    module = ModuleType("gpt2_small_factory")
    source = textwrap.dedent(
        """
        import typedlm as tl

        def build() -> tl.models.GPT2:
            return tl.models.GPT2(tl.CausalConfig.gpt2_small())
        """
    )
    exec(compile(source, "<gpt2_small_factory>", "exec"), module.__dict__)  # a one-function user module
    return module


def _probe_gpt2_small() -> float:
    module = _gpt2_small_module()
    started = time.perf_counter()
    report = check_modules([module])
    elapsed = time.perf_counter() - started
    if report.errors or report.models != 1:
        raise SystemExit(f"probe of gpt2-small failed:\n{report.format()}")
    return elapsed


def _forward_gpt2_small() -> float:
    started = time.perf_counter()
    model = tl.models.GPT2(tl.CausalConfig.gpt2_small()).eval()
    with torch.no_grad():
        model(torch.zeros(1, 1024, dtype=torch.long))
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each row (default 3)")
    args = parser.parse_args(argv)
    python = sys.executable
    rows: list[tuple[str, Callable[[], float], str]] = [
        (
            "typedlm check examples/",
            lambda: _timed_process([python, "-m", "typedlm", "check", "examples/"], ok=lambda rc: rc == 0),
            "≤ 10 s",
        ),
        (
            f"typedlm check, {len(GALLERY_FILES)} gallery bugs",
            lambda: _timed_process([python, "-m", "typedlm", "check", *GALLERY_FILES], ok=lambda rc: rc == 1),
            "",
        ),
        (
            "mypy --strict examples/ (peer)",
            lambda: _timed_process(
                [python, "-m", "mypy", "--config-file", "mypy.ini", "examples/"], ok=lambda rc: rc == 0
            ),
            "",
        ),
        ("probe gpt2-small (built on meta)", _probe_gpt2_small, "≤ 5 s"),
        ("one real forward of gpt2-small (1×1024)", _forward_gpt2_small, ""),
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, {args.rounds} rounds\n"
    )
    print(f"| {'what':<42} | {'median s':>9} | {'range s':>15} | target |")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 17}|--------|")
    for name, run, target in rows:
        times = [run() for _ in range(args.rounds)]
        spread = f"{min(times):.2f}–{max(times):.2f}"
        print(f"| {name:<42} | {statistics.median(times):>9.2f} | {spread:>15} | {target:<6} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
