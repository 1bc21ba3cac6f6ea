"""Reading a file a user names: a regular file only, opened without blocking (a FIFO would wait for a
writer forever), with the reason in words when it cannot be read. Callers turn `UnreadableFile` into
their own error, worded for what the file is (a corpus, a vocab.json)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
"""What a path that is not a regular file is, in words."""


class UnreadableFile(Exception):
    """Why a path cannot be read: ``problem`` is "missing", "permission", "directory", "irregular"
    (``detail``: its kind, e.g. "a FIFO"), "too large" (``detail``: its size, e.g. "300 MiB"), "open" or
    "read" (``detail``: the system's reason)."""

    def __init__(self, problem: str, detail: str = "") -> None:
        super().__init__(problem, detail)
        self.problem, self.detail = problem, detail

    @property
    def reason(self) -> str:
        """The problem in a few words ("permission denied", "a FIFO, not a regular file")."""
        return {
            "missing": "no such file",
            "permission": "permission denied",
            "directory": "a directory, not a file",
            "irregular": f"{self.detail}, not a regular file",
            "too large": f"too large ({self.detail})",
        }.get(self.problem, self.detail)


def read_regular_file(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (of at most ``limit`` bytes); `UnreadableFile` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except FileNotFoundError:
        raise UnreadableFile("missing") from None
    except PermissionError:
        raise UnreadableFile("permission") from None
    except IsADirectoryError:
        raise UnreadableFile("directory") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise UnreadableFile("open", _reason(error)) from None
    try:
        mode = os.fstat(fd)
        if stat.S_ISDIR(mode.st_mode):
            raise UnreadableFile("directory")
        if not stat.S_ISREG(mode.st_mode):
            raise UnreadableFile("irregular", FILE_KINDS.get(stat.S_IFMT(mode.st_mode), "not a regular file"))
        if limit is not None and mode.st_size > limit:
            raise UnreadableFile("too large", f"{mode.st_size / 2**20:,.0f} MiB")
        with open(fd, "rb", closefd=False) as file:
            return file.read() if limit is None else file.read(limit + 1)
    except OSError as error:
        raise UnreadableFile("read", _reason(error)) from None
    finally:
        os.close(fd)


def _reason(error: Exception) -> str:
    return (error.strerror if isinstance(error, OSError) else None) or str(error)
