"""A run directory is never replaced by accident nor shared by two runs: refusal, --overwrite, the lock."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import typedlm as tl
from tests.test_text_gpt2_cli import TINY, _main
from tests.test_train_loop import TC, _run
from typedlm.checkpoint import find_checkpoint, load_checkpoint
from typedlm.run_dir import check_run_dir, run_lock


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_in_a_directory_holding_one_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(tl.ConfigError, match=r"already holds a run \(checkpoint after step 3\).*--resume.*--overwrite"):
        _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_the_run_and_contradicting_flags_are_refused(tmp_path: Path) -> None:
    _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    _run(dataclasses.replace(TC, steps=2), out_dir=tmp_path, overwrite=True)
    found = find_checkpoint(tmp_path)
    assert found is not None and load_checkpoint(found).step == 2
    with pytest.raises(tl.ConfigError, match="--resume and --overwrite contradict"):
        check_run_dir(tmp_path, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(tl.ConfigError, match="is a file, not a directory"):
        check_run_dir(tmp_path / "file", resume=False, overwrite=False)


def test_a_second_run_on_a_locked_directory_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with pytest.raises(tl.ConfigError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            _run(dataclasses.replace(TC, steps=2), out_dir=tmp_path)
        other = subprocess.run(
            [sys.executable, "-c", f"from typedlm.run_dir import run_lock\nwith run_lock({str(tmp_path)!r}): pass"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    with run_lock(tmp_path):  # released with the block (and by the OS when a holder dies)
        pass


def test_the_cli_refuses_an_occupied_out_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main([*TINY, "--out", str(tmp_path)], capsys)[0] == 0
    before = _snapshot(tmp_path)
    code, out, err = _main([*TINY, "--out", str(tmp_path)], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "already holds a run (checkpoint after step 6)" in err and "--overwrite" in err
    assert _snapshot(tmp_path) == before
    assert _main([*TINY, "--out", str(tmp_path), "--overwrite", "--steps", "3"], capsys)[0] == 0
    found = find_checkpoint(tmp_path)
    assert found is not None and load_checkpoint(found).step == 3
