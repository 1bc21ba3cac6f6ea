"""Writing files and directories so that nothing is half-written.

A file: write a temporary sibling, flush it, then rename it over the target (`write_atomic`,
`write_text_atomic`). A whole directory: build the new one as a temporary sibling (named with
`temporary_prefix`), then `swap_in` puts it in place, on Linux with one atomic
``renameat2(RENAME_EXCHANGE)`` (`exchange`), elsewhere with two renames through `old_sibling`
(``.NAME.old``); `remove_leftovers` clears what interrupted swaps of dead processes left, and
`fsync_directory` flushes a directory's entries to disk.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process's umask: read from ``/proc/self/status`` on Linux (setting it, even briefly, would
    change the permissions of files other threads create meanwhile), else by setting it and back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it and rename it onto ``path``.

    A crash leaves either the old file or the new one, never a mix. The file gets the permissions a
    plain ``open(path, "w")`` would give (0o666 less the umask), not ``mkstemp``'s private 0o600.
    """
    path = Path(os.path.realpath(path))  # through a symbolic link: the file it names is replaced, not the link
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # after: a writer may replace the file it was given
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --- replacing a whole directory -------------------------------------------------------------------


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (a rename or new file in it) to disk, where the system allows it."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (Linux, glibc 2.28 or later), or None."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]  # ctypes functions are untyped


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step; False where the system or filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def old_sibling(directory: Path) -> Path:
    """Where the two-rename `swap_in` parks the previous directory: ``.NAME.old`` beside ``directory``."""
    return directory.with_name(f".{directory.name}.old")


def swap_in(new: Path, directory: Path) -> None:
    """Put the complete directory ``new`` at ``directory`` in one step; ``new`` then holds the old one, if any."""
    if not directory.exists():
        os.replace(new, directory)
        return
    if exchange(new, directory):
        return
    old = old_sibling(directory)
    if old.exists():  # left by an earlier interrupted swap, and superseded by ``directory``
        shutil.rmtree(old)
    os.replace(directory, old)  # until the next rename, ``directory`` is missing and ``old`` holds it
    try:
        os.replace(new, directory)
    except BaseException:
        os.replace(old, directory)
        raise


def temporary_prefix(directory: Path) -> str:
    """The name prefix of this process's temporary siblings of ``directory``: host and pid tell stale ones."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]
    return f".{directory.name}.save-{host}-{os.getpid()}-"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (assumed so where that cannot be asked)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def remove_leftovers(directory: Path) -> None:
    """Remove what interrupted swaps of ``directory`` left: ``.NAME.old`` and temporary siblings of dead processes."""
    old = old_sibling(directory)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)  # the swap succeeded: what cannot be removed is only clutter
    prefix = temporary_prefix(directory).removesuffix(f"{os.getpid()}-")
    for entry in os.scandir(directory.parent):
        pid = entry.name.removeprefix(prefix).split("-", 1)[0]
        if (
            entry.name.startswith(prefix)
            and entry.name.endswith(".tmp")
            and pid.isdecimal()
            and not process_alive(int(pid))
        ):
            shutil.rmtree(entry.path, ignore_errors=True)
