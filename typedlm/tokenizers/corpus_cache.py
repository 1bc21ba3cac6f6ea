"""Encoding a whole text file into a uint16 token cache, in parallel, once.

The file is cut into chunks at spots where the pre-tokenizer cuts anyway (`SAFE_CUT`), so the ids
are exactly those of encoding the whole file in one go. Worker processes encode the chunks; the
parent writes them, in order, to a temporary file that is renamed into place when complete.

Cache file layout (little-endian): a 128-byte header — magic ``TLMTOK01``, token count (u64),
vocabulary size (u64), cache key (32 bytes), sha256 of the token bytes (32 bytes), zero padding —
then the tokens as uint16. A cache whose header, length or checksum does not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator, Set
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from typedlm.errors import ConfigError, DataFileError
from typedlm.tokenizers.base import Tokenizer
from typedlm.tokenizers.pretokenize import SAFE_CUT

MAGIC = b"TLMTOK01"
_HEADER = struct.Struct("<8sQQ32s32s")
HEADER_BYTES = 128
MAX_VOCAB = 1 << 16  # ids 0..65535 fit in uint16

Span = tuple[int, int]


def default_cache_dir() -> Path:
    """``$TYPEDLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/typedlm/tokens``, else ``~/.cache/typedlm/tokens``."""
    explicit = os.environ.get("TYPEDLM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "typedlm" / "tokens"


def encode_corpus(
    path: str | os.PathLike[str],
    tokenizer: Tokenizer,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    chunk_bytes: int = 1 << 20,
    allowed_special: Set[str] | Literal["all"] = "all",
    progress: bool = True,
) -> npt.NDArray[np.uint16]:
    """The token ids of a UTF-8 text file, as a read-only uint16 array mapped from a cache file.

    The cache is keyed by a hash of the file's content, ``tokenizer.fingerprint`` and
    ``allowed_special``; a later call with the same three reuses it. Special tokens written in the file
    (GPT-2's ``<|endoftext|>`` between documents) are encoded as their ids unless ``allowed_special``
    excludes them, in which case they are ordinary text. ``workers`` defaults to the number of usable
    cores. ConfigError if the vocabulary does not fit in uint16; DataFileError (a ValueError) if the file is
    missing, not a regular file, or not UTF-8.
    """
    source = Path(path)
    if tokenizer.vocab_size > MAX_VOCAB:
        raise ConfigError(
            f"a vocabulary of {tokenizer.vocab_size} ids does not fit the uint16 token cache (at most {MAX_VOCAB} ids)"
        )
    if not source.is_file():
        kind = "not a regular file (a directory, pipe or device)" if source.exists() else "no such file"
        raise DataFileError(f"{source}: {kind}")
    allowed = allowed_special if allowed_special == "all" else frozenset(allowed_special)
    key = _cache_key(source, tokenizer, allowed)
    cache_path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_path / f"{source.name}.{key.hex()[:20]}.tokens"
    if cache_file.exists():
        problem = _cache_problem(cache_file, key)
        if problem is None:
            return _open_cache(cache_file)
        warnings.warn(f"token cache {cache_file} {problem}; rebuilding it", stacklevel=2)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    _build_cache(source, tokenizer, allowed, key, cache_file, workers, chunk_bytes, progress)
    return _open_cache(cache_file)


def chunk_spans(data: bytes | mmap.mmap, chunk_bytes: int) -> list[Span]:
    """Byte ranges of about ``chunk_bytes`` that cover ``data``, cut only at `SAFE_CUT` spots."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    spans: list[Span] = []
    start = 0
    while len(data) - start > chunk_bytes:
        found = SAFE_CUT.search(data, start + chunk_bytes - 1)
        if found is None:
            break
        cut = found.start() + 1
        spans.append((start, cut))
        start = cut
    spans.append((start, len(data)))
    return spans


# --- building -------------------------------------------------------------------------------------


def _cache_key(source: Path, tokenizer: Tokenizer, allowed: frozenset[str] | Literal["all"]) -> bytes:
    with open(source, "rb") as file:
        content = hashlib.file_digest(file, "sha256").hexdigest()
    specials = "all" if allowed == "all" else repr(sorted(allowed))
    recipe = f"typedlm token cache v1\0{content}\0{tokenizer.fingerprint}\0{specials}"
    return hashlib.sha256(recipe.encode()).digest()


def _build_cache(
    source: Path,
    tokenizer: Tokenizer,
    allowed: frozenset[str] | Literal["all"],
    key: bytes,
    cache_file: Path,
    workers: int | None,
    chunk_bytes: int,
    progress: bool,
) -> None:
    size = source.stat().st_size
    if size == 0:
        spans = [(0, 0)]
    else:
        with open(source, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as text_bytes:
            spans = chunk_spans(text_bytes, chunk_bytes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{cache_file.name}.", suffix=".tmp", dir=cache_file.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(HEADER_BYTES))
            checksum = hashlib.sha256()
            count = 0
            for ids in _encoded_spans(source, tokenizer, allowed, spans, workers, progress):
                token_bytes = ids.tobytes()
                out.write(token_bytes)
                checksum.update(token_bytes)
                count += len(ids)
            out.seek(0)
            out.write(_HEADER.pack(MAGIC, count, tokenizer.vocab_size, key, checksum.digest()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, cache_file)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _encoded_spans(
    source: Path,
    tokenizer: Tokenizer,
    allowed: frozenset[str] | Literal["all"],
    spans: list[Span],
    workers: int | None,
    progress: bool,
) -> Iterator[npt.NDArray[np.uint16]]:
    """The ids of each span, in order, from worker processes when more than one is worth it."""
    workers = min(workers or _usable_cores(), len(spans))
    total = sum(end - start for start, end in spans)
    if workers <= 1:
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"tokenizing {source.name}", disable=not progress
        ) as bar:
            for span in spans:
                yield _encode_file_span(source, tokenizer, allowed, span)
                bar.update(span[1] - span[0])
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with context.Pool(workers, initializer=_start_worker, initargs=(source, tokenizer, allowed)) as pool:
        desc = f"tokenizing {source.name} ({workers} processes)"
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
            for span, ids in zip(spans, pool.imap(_encode_span, spans), strict=True):
                yield ids
                bar.update(span[1] - span[0])


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Per-process state of a worker, set by _start_worker.
_worker_source: Path | None = None
_worker_tokenizer: Tokenizer | None = None
_worker_allowed: frozenset[str] | Literal["all"] = "all"


def _start_worker(source: Path, tokenizer: Tokenizer, allowed: frozenset[str] | Literal["all"]) -> None:
    global _worker_source, _worker_tokenizer, _worker_allowed
    _worker_source, _worker_tokenizer, _worker_allowed = source, tokenizer, allowed


def _encode_span(span: Span) -> npt.NDArray[np.uint16]:
    assert _worker_source is not None and _worker_tokenizer is not None, "worker not started"
    return _encode_file_span(_worker_source, _worker_tokenizer, _worker_allowed, span)


def _encode_file_span(
    source: Path, tokenizer: Tokenizer, allowed: frozenset[str] | Literal["all"], span: Span
) -> npt.NDArray[np.uint16]:
    start, end = span
    with open(source, "rb") as file:
        file.seek(start)
        raw = file.read(end - start)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            offset = start + err.start
            raise DataFileError(f"{source}:{_line_of(file, offset)}: not valid UTF-8 (byte offset {offset})") from None
    ids = tokenizer.encode(text, allowed_special=allowed, disallowed_special=())
    return np.asarray(ids, dtype=np.uint16)


def _line_of(file: BinaryIO, offset: int) -> int:
    file.seek(0)
    return file.read(offset).count(b"\n") + 1


# --- reading --------------------------------------------------------------------------------------


def _cache_problem(cache_file: Path, key: bytes) -> str | None:
    """Why ``cache_file`` cannot be used, or None if it is complete and intact."""
    size = cache_file.stat().st_size
    if size < HEADER_BYTES:
        return "is shorter than its header"
    with open(cache_file, "rb") as file:
        magic, count, _, stored_key, stored_checksum = _HEADER.unpack(file.read(_HEADER.size))
        if magic != MAGIC:
            return "is not a typedlm token cache"
        if stored_key != key:
            return "belongs to other content"
        if size != HEADER_BYTES + 2 * count:
            return f"has {size - HEADER_BYTES} token bytes where its header says {2 * count}"
        file.seek(HEADER_BYTES)
        if hashlib.file_digest(file, "sha256").digest() != stored_checksum:
            return "fails its checksum"
    return None


def _open_cache(cache_file: Path) -> npt.NDArray[np.uint16]:
    with open(cache_file, "rb") as file:
        count = _HEADER.unpack(file.read(_HEADER.size))[1]
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(cache_file, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(count,))
