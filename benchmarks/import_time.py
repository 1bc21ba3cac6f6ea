"""What ``import typedlm`` costs on top of ``import torch`` (target: at most 0.3 s), with its peers.

Each row is a fresh Python process timing its own imports (wall clock, median of ``--rounds`` runs,
range in brackets): ``import torch`` alone; ``import torch`` then ``import typedlm`` (the extra is
typedlm's cost); ``import torch`` then ``import jaxtyping, beartype`` (the checking libraries typedlm
builds on); and ``import torch._dynamo`` (what typedlm no longer loads until a program compiles).

Run: ``python -m benchmarks.import_time`` (about half a minute). Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

_TIMER = """
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
{imports}
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, "torch._dynamo" in sys.modules)
"""

ROWS = {
    "import torch": "",
    "+ import typedlm": "import typedlm",
    "+ import jaxtyping, beartype": "import jaxtyping, beartype",
    "+ import torch._dynamo": "import torch._dynamo",
}


def _one(imports: str) -> tuple[float, float, bool]:
    out = subprocess.run(
        [sys.executable, "-c", _TIMER.format(imports=imports)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), out[2] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="fresh processes per row (default: 7)")
    args = parser.parse_args()
    print(f"import time, fresh processes, median of {args.rounds} (range)")
    print(f"{'what':32s} {'torch s':>14s} {'extra s':>22s}  loads dynamo")
    for name, imports in ROWS.items():
        runs = [_one(imports) for _ in range(args.rounds)]
        torch_s = statistics.median(r[0] for r in runs)
        extra = sorted(r[1] for r in runs)
        dynamo = any(r[2] for r in runs)
        extra_text = f"{statistics.median(extra):.3f} ({extra[0]:.3f}-{extra[-1]:.3f})" if imports else "-"
        print(f"{name:32s} {torch_s:14.3f} {extra_text:>22s}  {'yes' if dynamo else 'no'}")


if __name__ == "__main__":
    main()
