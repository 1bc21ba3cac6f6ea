"""A run directory (``--out``) is never replaced by accident nor shared by two runs at once.

`check_run_dir` refuses to start a new run where one already is (resume it or overwrite it, on
purpose), and `RunLock` holds an exclusive lock on the directory while a run uses it: a second run on
the same directory stops at once, naming the process that holds it. The lock is an ``flock`` on
``OUT/.lock``, released by the operating system when the holder exits, however it exits.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from typedlm.errors import ConfigError
from typedlm.training.checkpoint import find_checkpoint, partial_checkpoint, read_state

if sys.platform != "win32":
    import fcntl

LOCK_FILE = ".lock"


def check_run_dir(out_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a new run in ``out_dir`` when it already holds one (a checkpoint), unless ``overwrite``."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run, or replace it")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    found = find_checkpoint(out)
    partial = partial_checkpoint(out)
    if partial is not None and not overwrite:
        where, missing = partial
        raise ConfigError(
            f"--out {out}: {where} lacks {missing}, so it cannot be resumed; restore the file, or replace "
            "the run with --overwrite (overwrite=True)"
        )
    if resume and found is None:
        raise ConfigError(f"--out {out}: no checkpoint to --resume (resume=True) from; start a new run")
    if resume or overwrite:
        return
    if found is not None:
        step = read_state(found).get("step", "?")
        raise ConfigError(
            f"--out {out}: already holds a run (checkpoint after step {step}); continue it with --resume "
            "(resume=True) or replace it with --overwrite (overwrite=True)"
        )


@contextlib.contextmanager
def run_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for the block; ConfigError at once if another run holds it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # no flock there: runs are not protected from each other
        yield
        return
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"--out {out}: in use by another run (pid {holder}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
