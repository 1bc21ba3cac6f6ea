"""A real SIGKILL in the middle of a run: ``--resume`` then reproduces the uninterrupted losses exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typedlm.training.checkpoint import find_checkpoint, read_state

ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "-m",
    "examples.text_gpt2",
    "--preset",
    "tiny",
    "--steps",
    "300",
    "--checkpoint-every",
    "25",
    "--eval-every",
    "100",
    "--max-chars",
    "50000",
    "--dropout",
    "0.1",
    "--no-progress",
    "--generate",
    "0",
    "--device",
    "cpu",
]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, *ARGS, "--out", str(out), *extra]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_losses(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = subprocess.run(_cmd(tmp_path / "whole"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    victim = subprocess.Popen(
        _cmd(tmp_path / "killed"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = find_checkpoint(tmp_path / "killed")
        if found is not None and read_state(found)["step"] >= 50:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    found = find_checkpoint(tmp_path / "killed")
    assert found is not None
    killed_at = read_state(found)["step"]
    assert 50 <= killed_at < 300, "the run was not killed mid-way"

    resumed = subprocess.run(
        _cmd(tmp_path / "killed", "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "whole" / "trainlog.json").read_text())
    b = json.loads((tmp_path / "killed" / "trainlog.json").read_text())
    assert [s["loss"] for s in a["steps"]] == [s["loss"] for s in b["steps"]]
    assert a["evals"] == b["evals"]
