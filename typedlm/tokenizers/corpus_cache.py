"""Encoding a corpus (one or more text files) into a uint16 token cache: streamed, in parallel, once.

The files are read as one text, their concatenation in the order given. It is cut into chunks of
about ``chunk_bytes`` at spots where the pre-tokenizer cuts anyway, so the ids are exactly those of
encoding the whole text in one go: a non-whitespace character before a space or a newline
(`SAFE_CUT`, found by a fast bytes search), or, in a stretch of `LONG_STRETCH` chunks without one
(a text with no spaces), a piece boundary found by running the pre-tokenizer over a window of text;
only a single pre-token longer than that window is cut inside, with a warning. Worker processes
encode the chunks; the parent writes them, in order, to a temporary file renamed into place when
complete. Memory stays bounded whatever the corpus size (for a tokenizer `cut_rule` knows): no process
holds more than a few chunks of text or ids.

How a corpus is cut depends on the tokenizer (`cut_rule`): the search above is for GPT-2's
pre-tokenizer (`GPT2BPE`); byte and character tokenizers are cut every ``chunk_bytes`` (between two
characters); a tokenizer the cache does not know is given the whole corpus as one text (exact, but
held in memory whole).

A cache is written once per corpus and tokenizer: a process that finds it missing takes a lock on
the cache folder, so other processes (the other ranks of a ``torchrun`` job) wait and then map the
finished file. A cached start maps the tokens and reads none of the text: the key comes from each
file's name, size and modification time plus a hash of samples of its content, at most about
`SAMPLE_BUDGET` bytes in all (``full_hash=True`` hashes every byte).

Cache file layout (little-endian): a 128-byte header — magic ``TLMTOK02``, token count (u64),
vocabulary size (u64), cache key (32 bytes), sha256 of the token bytes (32 bytes), zero padding —
then the tokens as uint16, then how often each id occurs (u64 × vocabulary size). A cache whose
header or length does not match is rebuilt (``verify=True`` also checks the sha256).
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import hashlib
import itertools
import mmap
import multiprocessing
import os
import re
import struct
import sys
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from typedlm.atomic import write_atomic
from typedlm.errors import ConfigError, DataFileError
from typedlm.memmap import read_only_mapping, release_pages
from typedlm.tokenizers.base import Tokenizer
from typedlm.tokenizers.bpe import GPT2BPE
from typedlm.tokenizers.bytes import ByteTokenizer
from typedlm.tokenizers.chars import CharTokenizer
from typedlm.tokenizers.pretokenize import SAFE_CUT, pretokenize
from typedlm.tokenizers.projection import LocalTokenizer, LocalVocab
from typedlm.tokenizers.special import alternation

if sys.platform != "win32":
    import fcntl

MAGIC = b"TLMTOK02"
_HEADER = struct.Struct("<8sQQ32s32s")
HEADER_BYTES = 128
MAX_VOCAB = 1 << 16  # ids 0..65535 fit in uint16
SAMPLES = 16
"""Blocks hashed per file for the cache key (a file no larger than its share of `SAMPLE_BUDGET` is hashed whole)."""
SAMPLE_BUDGET = 1 << 20
"""Bytes of content the cache key reads at most across a corpus (but at least 4 KiB a file)."""

Segment = tuple[int, int, int]
"""``(file index, start byte, end byte)``: a piece of one file."""
Span = tuple[Segment, ...]
"""A chunk of the corpus: consecutive segments (the end of one file, the start of the next)."""
CutRule = Literal["anywhere", "pieces", "nowhere"]
"""Where a corpus may be cut without changing its ids (see `cut_rule`)."""


@dataclass(frozen=True)
class TokenCache:
    """A corpus's ids mapped from a cache file: ``tokens`` (n,) uint16, read-only; ``counts`` (vocab,)
    how often each id occurs; ``path`` the file; ``key`` what it was built from."""

    tokens: npt.NDArray[np.uint16]
    counts: npt.NDArray[np.int64]
    path: Path
    key: bytes


def default_cache_dir() -> Path:
    """``$TYPEDLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/typedlm/tokens``, else ``~/.cache/typedlm/tokens``."""
    explicit = os.environ.get("TYPEDLM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "typedlm" / "tokens"


def encode_corpus(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    tokenizer: Tokenizer,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    chunk_bytes: int = 1 << 20,
    allowed_special: Set[str] | Literal["all"] = "all",
    progress: bool = True,
    full_hash: bool = False,
    verify: bool = False,
) -> npt.NDArray[np.uint16]:
    """The token ids of a UTF-8 text file (or of several files read as one text), as a read-only
    uint16 array mapped from a cache file: `token_cache`'s ``tokens``."""
    return token_cache(
        path, tokenizer, cache_dir=cache_dir, workers=workers, chunk_bytes=chunk_bytes,
        allowed_special=allowed_special, progress=progress, full_hash=full_hash, verify=verify,
    ).tokens  # fmt: skip


def token_cache(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    tokenizer: Tokenizer,
    *,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    chunk_bytes: int = 1 << 20,
    allowed_special: Set[str] | Literal["all"] = "all",
    progress: bool = True,
    full_hash: bool = False,
    verify: bool = False,
) -> TokenCache:
    """The ids of ``path`` (a file, or a sequence of files read as their concatenation), cached.

    The cache is keyed by the files (see the module docstring), ``tokenizer.fingerprint`` and
    ``allowed_special``; a later call with the same reuses it without reading the text. Special
    tokens written in the text (GPT-2's ``<|endoftext|>`` between documents) are encoded as their ids
    unless ``allowed_special`` excludes them. ``workers`` defaults to the number of usable cores;
    ``name`` (default: the first file's name) starts the cache file's name. ConfigError if the
    vocabulary does not fit in uint16; DataFileError (a ValueError) if a file is missing, not a regular
    file, or not UTF-8 (``file:line:``, checked before any encoding).
    """
    sources = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    if tokenizer.vocab_size > MAX_VOCAB:
        raise ConfigError(
            f"a vocabulary of {tokenizer.vocab_size} ids does not fit the uint16 token cache (at most {MAX_VOCAB} ids)"
        )
    for source in sources:
        if not source.is_file():
            kind = "not a regular file (a directory, pipe or device)" if source.exists() else "no such file"
            raise DataFileError(f"{source}: {kind}")
    allowed = allowed_special if allowed_special == "all" else frozenset(allowed_special)
    specials = "all" if allowed == "all" else repr(sorted(allowed))
    key = _corpus_key(sources, f"{tokenizer.fingerprint}\0{specials}", full_hash)
    label = name or (sources[0].name if sources else "empty")
    cache_file = (
        Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ) / f"{label}.{key.hex()[:20]}.tokens"

    def build() -> Iterator[npt.NDArray[np.uint16]]:
        _check_utf8(sources)
        specials = tokenizer.special_tokens if allowed == "all" else tokenizer.special_tokens & allowed
        spans = corpus_spans(sources, chunk_bytes, specials, cut_rule(tokenizer))
        yield from _encoded_spans(sources, label, tokenizer, allowed, spans, workers, progress)

    return _cached(cache_file, key, tokenizer.vocab_size, build, verify)


def project_token_cache(cache: TokenCache, vocab: LocalVocab, *, chunk_tokens: int = 1 << 22) -> TokenCache:
    """``cache``'s ids renumbered through ``vocab`` (base ids outside it become OOV), cached beside it:
    built once in chunks of ``chunk_tokens``, so memory stays bounded."""
    if vocab.size > MAX_VOCAB:
        raise ConfigError(f"a local vocabulary of {vocab.size} ids does not fit the uint16 token cache")
    digest = hashlib.sha256(cache.key + np.asarray(vocab.base_ids, dtype=np.int64).tobytes()).digest()
    cache_file = cache.path.with_name(f"{cache.path.stem}.local{vocab.size}-{digest.hex()[:12]}.tokens")

    def build() -> Iterator[npt.NDArray[np.uint16]]:
        for start in range(0, len(cache.tokens), chunk_tokens):
            yield vocab.to_local(cache.tokens[start : start + chunk_tokens]).astype(np.uint16)
            release_pages(cache.tokens)  # memory stays bounded: the read pages leave the process

    return _cached(cache_file, digest, vocab.size, build, verify=False)


def cut_rule(tokenizer: Tokenizer) -> CutRule:
    """Where the cache may cut a corpus for ``tokenizer`` without changing its ids: ``"anywhere"``
    between two characters (`ByteTokenizer`, `CharTokenizer`: each character is encoded alone),
    ``"pieces"`` where GPT-2's pre-tokenizer cuts (`GPT2BPE`), ``"nowhere"`` for any other tokenizer
    (its pre-tokenizer is unknown: the corpus is encoded as one text). A `LocalTokenizer` renumbers
    its base's ids one by one, so it has its base's rule."""
    while isinstance(tokenizer, LocalTokenizer):
        tokenizer = tokenizer.base
    if isinstance(tokenizer, (ByteTokenizer, CharTokenizer)):
        return "anywhere"
    return "pieces" if isinstance(tokenizer, GPT2BPE) else "nowhere"


def corpus_spans(
    sources: Sequence[Path], chunk_bytes: int, specials: Collection[str] = (), rule: CutRule = "pieces"
) -> list[Span]:
    """Chunks of about ``chunk_bytes`` covering the concatenation of ``sources``, cut where ``rule``
    (see `cut_rule`) says the ids do not change (``specials``: the special tokens encoded as such,
    never cut inside). Reads only around the cuts (the files are memory-mapped one at a time)."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    with _Concatenation(sources) as text:
        bounds = [0, *_cuts(text, chunk_bytes, frozenset(specials), rule), text.size]
        return [text.segments(start, end) for start, end in itertools.pairwise(bounds)]


def chunk_spans(
    data: bytes | mmap.mmap, chunk_bytes: int, specials: Collection[str] = (), rule: CutRule = "pieces"
) -> list[tuple[int, int]]:
    """Byte ranges of about ``chunk_bytes`` that cover the UTF-8 text ``data``, cut as `corpus_spans` cuts."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    with _Concatenation([data]) as text:
        bounds = [0, *_cuts(text, chunk_bytes, frozenset(specials), rule), text.size]
    return list(itertools.pairwise(bounds))


def _cuts(text: _Concatenation, chunk_bytes: int, specials: frozenset[str], rule: CutRule) -> Iterator[int]:
    """The cuts of ``text`` into chunks of about ``chunk_bytes`` under ``rule``."""
    if rule == "anywhere":
        return _character_cuts(text, chunk_bytes)
    if rule == "pieces":
        return _cut_points(text, chunk_bytes, specials)
    return iter(())


def _character_cuts(text: _Concatenation, chunk_bytes: int) -> Iterator[int]:
    """A cut every ``chunk_bytes``, moved forward past the continuation bytes of a UTF-8 character."""
    cut = chunk_bytes
    while cut < text.size:
        ahead = text.read(cut, cut + 4)  # a character has at most 3 continuation bytes
        cut += next((k for k, byte in enumerate(ahead) if not 0x80 <= byte < 0xC0), len(ahead))
        if cut >= text.size:
            return
        yield cut
        cut += chunk_bytes


_SPACE_RUN = re.compile(rb"[ \n]+")

LONG_STRETCH = 8
"""A chunk that would grow past this many ``chunk_bytes`` for want of a `SAFE_CUT` spot is cut at a
piece boundary of the pre-tokenizer instead (`_piece_cut`), so memory stays bounded for any text."""

_WINDOW_MIN = 1 << 16
"""How many bytes past ``chunk_bytes`` `_piece_cut` pre-tokenizes (at least)."""

_LOOKAHEAD_CHARS = 8
"""Characters a piece's match may read past its end (the pattern reads at most 3): pieces ending closer
than this (plus the longest special token) to the end of a window of text may continue past it."""


def _cut_points(text: _Concatenation, chunk_bytes: int, specials: frozenset[str]) -> Iterator[int]:
    """Where to cut ``text`` into chunks of about ``chunk_bytes`` whose ids, encoded one by one, are
    the ids of the whole text: at the first `SAFE_CUT` spot past ``chunk_bytes`` (the common case: a
    fast bytes search); where none comes within `LONG_STRETCH` chunks, at a piece boundary (`_piece_cut`)."""
    start = 0
    while text.size - start > chunk_bytes:
        cut = text.find_safe(start + chunk_bytes - 1, specials)
        if cut is None or cut - start > LONG_STRETCH * chunk_bytes:
            cut = _piece_cut(text, start, chunk_bytes, specials)
            if cut is None:
                return  # the rest is one piece, shorter than a window
        yield cut
        start = cut


def _piece_cut(text: _Concatenation, start: int, chunk_bytes: int, specials: frozenset[str]) -> int | None:
    """A cut about ``chunk_bytes`` after ``start`` (a boundary of pieces) at a boundary of pieces: the
    pre-tokenizer runs over a window of text from ``start``, split at ``specials`` as ``encode`` splits
    it; the pieces that end well before the window's end are those of the whole text (a match reads at
    most 3 characters past its start, and a match that reaches the window's end ends there).

    Where no piece ends in the window (one pre-token longer than it), the cut is at a character
    boundary and a warning says that the ids there may differ from those of the whole text. None if
    the window holds the rest of the text and no piece ends inside it: the rest is one chunk."""
    margin = _LOOKAHEAD_CHARS + max(map(len, specials), default=0)  # characters
    window = text.read(start, start + chunk_bytes + max(_WINDOW_MIN, 16 * margin))
    chars, _ = codecs.utf_8_decode(window, "strict", False)  # a character cut by the window's end is left out
    at_end = start + len(window) == text.size  # then every piece is final
    final_end = len(chars) - (0 if at_end else margin)
    boundaries: list[int] = []  # character offsets from start, increasing
    segment_starts = [0]  # where the text after each special token starts
    matches = list(alternation(specials).finditer(chars)) if specials else []
    for segment_end, special_end in [*((m.start(), m.end()) for m in matches), (len(chars), len(chars))]:
        pieces = pretokenize(chars[segment_starts[-1] : segment_end])
        boundaries += itertools.accumulate(map(len, pieces), initial=segment_starts[-1])
        boundaries.append(special_end)
        segment_starts.append(special_end)
    useful = [b for b in boundaries if 0 < b <= final_end and b < len(chars)]
    target = len(codecs.utf_8_decode(window[:chunk_bytes], "strict", False)[0])  # chunk_bytes, in characters
    for cut in [b for b in useful if b >= target] + useful[::-1]:
        if _ends_alike(chars, cut, boundaries, segment_starts):
            return start + len(chars[:cut].encode("utf-8"))
    if at_end:
        return None
    cut = min(chunk_bytes, len(window) - 1)
    while cut > 0 and 0x80 <= window[cut] < 0xC0:  # a continuation byte: inside a character
        cut -= 1
    while cut == 0 or 0x80 <= window[cut] < 0xC0:
        cut += 1
    if not text.warned:
        text.warned = True
        where = text.describe(start + cut)
        warnings.warn(
            f"{where}: no pre-token boundary in {len(window):,} bytes of text (one pre-token that long), so it is "
            "cut inside a pre-token: the ids at such cuts may differ from encoding the whole text",
            stacklevel=4,
        )
    return start + cut


def _ends_alike(chars: str, cut: int, boundaries: list[int], segment_starts: list[int]) -> bool:
    """Whether ``chars[:cut]`` alone ends in the pieces that ``boundaries`` (those of ``chars``) give it.

    A match reads at most 2 characters past its end or 3 past its start, so pieces ending
    `_LOOKAHEAD_CHARS` before ``cut`` are the same either way; the pieces after them are checked
    (``"\\n\\n"`` is one piece at the end of a text, two before a letter)."""
    settled = max(
        max((b for b in boundaries if b <= cut - _LOOKAHEAD_CHARS), default=0),
        max(s for s in segment_starts if s <= cut),
    )
    tail = list(itertools.accumulate(map(len, pretokenize(chars[settled:cut])), initial=settled))
    return tail == sorted({b for b in boundaries if settled <= b <= cut})


class _Concatenation:
    """The concatenation of ``parts`` (files or bytes) read as one byte string, without holding it:
    a file is memory-mapped while it is searched (one at a time)."""

    def __init__(self, parts: Sequence[Path | bytes | mmap.mmap]) -> None:
        self.parts = list(parts)
        sizes = [p.stat().st_size if isinstance(p, Path) else len(p) for p in self.parts]
        self.starts = [0, *itertools.accumulate(sizes)]
        self.size = self.starts[-1]
        self.warned = False
        self._open: tuple[int, bytes | mmap.mmap] | None = None
        self._stack = contextlib.ExitStack()
        self._found: tuple[int, int | None] = (-1, None)  # searched after, the cut found

    def __enter__(self) -> _Concatenation:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def data(self, index: int) -> bytes | mmap.mmap:
        """The bytes of part ``index`` (a file is mapped; the previous mapping is closed, so only
        `_search` calls this: its scan of a mapping ends before it maps the next file)."""
        part = self.parts[index]
        if not isinstance(part, Path):
            return part
        if self._open is None or self._open[0] != index:
            self._stack.close()
            file = self._stack.enter_context(open(part, "rb"))
            self._open = (index, self._stack.enter_context(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)))
        return self._open[1]

    def part_at(self, position: int) -> int:
        """The index of the non-empty part holding byte ``position`` (< size)."""
        return bisect.bisect_right(self.starts, position) - 1

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of the concatenation (``end`` clipped to its size)."""
        end = min(end, self.size)
        out = []
        while start < end:
            index = self.part_at(start)
            base = self.starts[index]
            stop = min(end, self.starts[index + 1])
            out.append(self._part_bytes(index, start - base, stop - base))
            start = stop
        return b"".join(out)

    def _part_bytes(self, index: int, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of part ``index``: from its mapping if it is the file mapped now, else read
        from the file (switching mappings would close one that `_search` may be scanning)."""
        part = self.parts[index]
        if not isinstance(part, Path):
            return bytes(part[start:end])
        if self._open is not None and self._open[0] == index:
            return bytes(self._open[1][start:end])
        with open(part, "rb") as file:
            file.seek(start)
            return file.read(end - start)

    def segments(self, start: int, end: int) -> Span:
        """Bytes ``start:end`` as ``(part, start, end)`` pieces of the parts, empty ones left out."""
        out = []
        while start < end:
            index = self.part_at(start)
            stop = min(end, self.starts[index + 1])
            out.append((index, start - self.starts[index], stop - self.starts[index]))
            start = stop
        return tuple(out)

    def describe(self, position: int) -> str:
        index = self.part_at(position)
        part = self.parts[index]
        name = str(part) if isinstance(part, Path) else "text"
        return f"{name}: byte {position - self.starts[index]:,}"

    def find_safe(self, position: int, specials: frozenset[str]) -> int | None:
        """The first cut after ``position`` at a `SAFE_CUT` spot not inside a special token; None if
        there is none up to the end. Remembers the last one found, so a long stretch without one is
        searched once."""
        searched, cut = self._found
        if not (0 <= searched <= position and (cut is None or cut > position)):
            cut = self._search(position + 1)
            while cut is not None and self._inside_special(cut, specials):
                cut = self._search(cut + 1)
            self._found = (position, cut)
        return cut

    def _search(self, position: int) -> int | None:
        """The first ``cut >= position`` at a `SAFE_CUT` spot. Fast: a search for runs of spaces and
        newlines (as fast as a byte scan), then `SAFE_CUT` on the character before each run."""
        index = self.part_at(position) if position < self.size else len(self.parts)
        for part in range(index, len(self.parts)):
            base = self.starts[part]
            if self.starts[part + 1] == base:
                continue
            for run in _SPACE_RUN.finditer(self.data(part), max(position - base, 0)):
                cut = base + run.start()
                if cut > 0 and self._safe_before(cut):
                    return cut
        return None

    def _safe_before(self, cut: int) -> bool:
        """Whether the character that ends at ``cut`` is a `SAFE_CUT` match (``cut`` holds a space or newline)."""
        before = self.read(max(cut - 4, 0), cut + 1)
        end = len(before) - 1
        return any(
            (found := SAFE_CUT.match(before, start, end + 1)) is not None and found.end() == end
            for start in range(max(end - 4, 0), end)
        )

    def _inside_special(self, cut: int, specials: frozenset[str]) -> bool:
        """Whether ``cut`` falls strictly inside an occurrence of one of ``specials``."""
        for special in specials:
            token = special.encode("utf-8")
            around = self.read(max(cut - len(token) + 1, 0), cut + len(token) - 1)
            first = max(cut - len(token) + 1, 0)
            at = around.find(token)
            while at != -1:
                if first + at < cut < first + at + len(token):
                    return True
                at = around.find(token, at + 1)
        return False


# --- building -------------------------------------------------------------------------------------


def _corpus_key(sources: Sequence[Path], recipe: str, full_hash: bool) -> bytes:
    """Names, sizes, modification times and sampled (or full) content of ``sources``, and ``recipe``."""
    key = hashlib.sha256(f"typedlm token cache v2\0{recipe}\0{len(sources)}\0".encode())
    share = max(4096, SAMPLE_BUDGET // max(len(sources), 1))
    for source in sources:
        info = source.stat()
        key.update(f"{source.name}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
        with open(source, "rb") as file:
            if full_hash or info.st_size <= share:
                key.update(hashlib.file_digest(file, "sha256").digest())
                continue
            block = share // SAMPLES
            step = (info.st_size - block) // (SAMPLES - 1)
            for k in range(SAMPLES):
                file.seek(k * step)
                key.update(file.read(block))
    return key.digest()


def check_utf8(sources: Sequence[Path]) -> None:
    """DataFileError ``file:line: not valid UTF-8 (byte offset N)`` at the first byte of ``sources``
    that is not UTF-8; reads in blocks."""
    _check_utf8(sources)


def _check_utf8(sources: Sequence[Path], block: int = 1 << 24) -> None:
    """DataFileError ``file:line:`` at the first byte of ``sources`` that is not UTF-8 (streamed)."""
    for source in sources:
        with open(source, "rb") as file:
            carry, position = b"", 0  # bytes of a character cut by the block's end; where they start
            while True:
                raw = file.read(block)
                data = carry + raw
                try:
                    _, used = codecs.utf_8_decode(data, "strict", not raw)
                except UnicodeDecodeError as err:
                    bad = position + err.start
                    raise DataFileError(
                        f"{source}:{_line_of(file, bad)}: not valid UTF-8 (byte offset {bad})"
                    ) from None
                carry, position = data[used:], position + used
                if not raw:
                    break


def _cached(
    cache_file: Path,
    key: bytes,
    vocab_size: int,
    build: Callable[[], Iterator[npt.NDArray[np.uint16]]],
    verify: bool,
) -> TokenCache:
    """Open ``cache_file``; if it is missing or unusable, build it first under the cache folder's lock."""
    if cache_file.exists() and _cache_problem(cache_file, key, verify) is None:
        return _open_cache(cache_file, key)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(cache_file.parent):
        if cache_file.exists():  # built by another process while this one waited, or damaged
            problem = _cache_problem(cache_file, key, verify)
            if problem is None:
                return _open_cache(cache_file, key)
            warnings.warn(f"token cache {cache_file} {problem}; rebuilding it", stacklevel=3)
        _write_cache(cache_file, key, vocab_size, build)
    return _open_cache(cache_file, key)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (waiting for it): one process builds at a time."""
    if sys.platform == "win32":
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_cache(
    cache_file: Path, key: bytes, vocab_size: int, build: Callable[[], Iterator[npt.NDArray[np.uint16]]]
) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            out.write(bytes(HEADER_BYTES))
            checksum = hashlib.sha256()
            counts = np.zeros(vocab_size, dtype=np.int64)
            count = 0
            for ids in build():
                token_bytes = ids.tobytes()
                out.write(token_bytes)
                checksum.update(token_bytes)
                counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
                count += len(ids)
            out.write(counts.astype("<u8").tobytes())
            out.seek(0)
            out.write(_HEADER.pack(MAGIC, count, vocab_size, key, checksum.digest()))

    write_atomic(cache_file, write)


def _encoded_spans(
    sources: Sequence[Path],
    label: str,
    tokenizer: Tokenizer,
    allowed: frozenset[str] | Literal["all"],
    spans: list[Span],
    workers: int | None,
    progress: bool,
) -> Iterator[npt.NDArray[np.uint16]]:
    """The ids of each span, in order, from worker processes when more than one is worth it."""
    workers = min(workers or _usable_cores(), len(spans))
    total = sum(end - start for span in spans for _, start, end in span)
    desc = f"tokenizing {label}" + (f" ({workers} processes)" if workers > 1 else "")
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
        if workers <= 1:
            for span in spans:
                yield _encode_span_of(sources, tokenizer, allowed, span)
                bar.update(sum(end - start for _, start, end in span))
            return
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with context.Pool(workers, initializer=_start_worker, initargs=(list(sources), tokenizer, allowed)) as pool:
            for span, ids in zip(spans, pool.imap(_encode_span, spans), strict=True):
                yield ids
                bar.update(sum(end - start for _, start, end in span))


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Per-process state of a worker, set by _start_worker.
_worker_sources: list[Path] = []
_worker_tokenizer: Tokenizer | None = None
_worker_allowed: frozenset[str] | Literal["all"] = "all"


def _start_worker(sources: list[Path], tokenizer: Tokenizer, allowed: frozenset[str] | Literal["all"]) -> None:
    global _worker_sources, _worker_tokenizer, _worker_allowed
    _worker_sources, _worker_tokenizer, _worker_allowed = sources, tokenizer, allowed


def _encode_span(span: Span) -> npt.NDArray[np.uint16]:
    assert _worker_tokenizer is not None, "worker not started"
    return _encode_span_of(_worker_sources, _worker_tokenizer, _worker_allowed, span)


def _encode_span_of(
    sources: Sequence[Path], tokenizer: Tokenizer, allowed: frozenset[str] | Literal["all"], span: Span
) -> npt.NDArray[np.uint16]:
    text = "".join(_read_segment(sources[index], start, end) for index, start, end in span)
    ids = tokenizer.encode(text, allowed_special=allowed, disallowed_special=())
    return np.asarray(ids, dtype=np.uint16)


def _read_segment(source: Path, start: int, end: int) -> str:
    with open(source, "rb") as file:
        file.seek(start)
        raw = file.read(end - start)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            offset = start + err.start
            raise DataFileError(f"{source}:{_line_of(file, offset)}: not valid UTF-8 (byte offset {offset})") from None


def _line_of(file: BinaryIO, offset: int) -> int:
    file.seek(0)
    lines, left = 1, offset
    while left > 0:
        block = file.read(min(left, 1 << 24))
        if not block:
            break
        lines += block.count(b"\n")
        left -= len(block)
    return lines


# --- reading --------------------------------------------------------------------------------------


def _cache_problem(cache_file: Path, key: bytes, verify: bool) -> str | None:
    """Why ``cache_file`` cannot be used, or None if it is complete (and, with ``verify``, intact)."""
    size = cache_file.stat().st_size
    if size < HEADER_BYTES:
        return "is shorter than its header"
    with open(cache_file, "rb") as file:
        magic, count, vocab_size, stored_key, stored_checksum = _HEADER.unpack(file.read(_HEADER.size))
        if magic != MAGIC:
            return "is not a typedlm token cache"
        if stored_key != key:
            return "belongs to other content"
        expected = 2 * count + 8 * vocab_size
        if size != HEADER_BYTES + expected:
            return f"has {size - HEADER_BYTES} bytes after its header where its header says {expected}"
        if verify:
            checksum = hashlib.sha256()
            left = 2 * count
            while left > 0:
                block = file.read(min(left, 1 << 24))
                checksum.update(block)
                left -= len(block)
            if checksum.digest() != stored_checksum:
                return "fails its checksum"
    return None


@dataclass(frozen=True)
class CacheContent:
    """What a token cache's header says of its ids: every id is below ``vocab_size``; ``checksum`` is the
    sha256 of all its token bytes (see the module docstring)."""

    vocab_size: int
    checksum: bytes


def cache_content(tokens: npt.NDArray[np.integer[Any]]) -> CacheContent | None:
    """What the header of the token cache ``tokens`` is read from says (``tokens``: the ids as `token_cache`
    maps them, or a view of them such as a train/val split), or None for any other array — another map of
    the file (its header read as ids, say), a writable one, a copy. Reads 128 bytes of the mapping itself
    (a file replaced meanwhile does not count): constant time whatever the corpus."""
    mapping = read_only_mapping(tokens)
    if (
        mapping is None
        or tokens.dtype != np.uint16
        or getattr(tokens, "offset", None) != HEADER_BYTES  # so the mapping starts at the file's first byte
        or len(mapping) < HEADER_BYTES
    ):
        return None
    magic, count, vocab_size, _, checksum = _HEADER.unpack(mapping[: _HEADER.size])
    first = np.frombuffer(mapping, dtype=np.uint8, count=1).__array_interface__["data"][0]
    start = tokens.__array_interface__["data"][0] - first  # where the ids lie in the file
    reach = (len(tokens) - 1) * tokens.strides[0] if tokens.ndim == 1 and len(tokens) else 0
    low, high = start + min(reach, 0), start + max(reach, 0) + 2
    if magic != MAGIC or tokens.ndim != 1 or low < HEADER_BYTES or high > HEADER_BYTES + 2 * count:
        return None
    return CacheContent(vocab_size, checksum)


def _open_cache(cache_file: Path, key: bytes) -> TokenCache:
    with open(cache_file, "rb") as file:
        _, count, vocab_size, _, _ = _HEADER.unpack(file.read(_HEADER.size))
        file.seek(HEADER_BYTES + 2 * count)
        counts = np.frombuffer(file.read(8 * vocab_size), dtype="<u8").astype(np.int64)
    tokens: npt.NDArray[np.uint16] = (
        np.zeros(0, dtype=np.uint16)
        if count == 0
        else np.memmap(cache_file, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(count,))
    )
    return TokenCache(tokens, counts, cache_file, key)


__all__ = [
    "CacheContent",
    "CutRule",
    "TokenCache",
    "cache_content",
    "check_utf8",
    "chunk_spans",
    "corpus_spans",
    "cut_rule",
    "default_cache_dir",
    "encode_corpus",
    "project_token_cache",
    "token_cache",
]
