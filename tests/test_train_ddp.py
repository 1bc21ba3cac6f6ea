"""Data parallelism: two CPU processes under torchrun (gloo) train like one process with twice the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples import text_gpt2

ARGS = [
    "--preset",
    "tiny",
    "--steps",
    "4",
    "--eval-every",
    "2",
    "--eval-batches",
    "2",
    "--max-chars",
    "20000",
    "--no-progress",
    "--generate",
    "0",
    "--device",
    "cpu",
    "--seed",
    "5",
]
ROOT = Path(__file__).resolve().parent.parent


def _torchrun(out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "examples.text_gpt2",
        *ARGS,
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_two_gloo_ranks_match_one_process_with_the_global_batch(tmp_path: Path) -> None:
    ddp = _torchrun(tmp_path / "ddp", 2, "--batch", "4")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert text_gpt2.main([*ARGS, "--batch", "8", "--out", str(tmp_path / "one")]) == 0

    two = json.loads((tmp_path / "ddp" / "trainlog.json").read_text())
    one = json.loads((tmp_path / "one" / "trainlog.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert [s["loss"] for s in two["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], abs=1e-4)
    assert [e["val_loss"] for e in two["evals"]] == pytest.approx([e["val_loss"] for e in one["evals"]], abs=1e-4)
    # only rank 0 wrote (and held the run lock), and printed the summary once
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [".lock", "checkpoint", "loss.png", "trainlog.json"]
    assert ddp.stdout.count("tokens/s; log") == 1
