"""Every unusable vocab.json, merges.txt or corpus file is refused at once with one line naming it.

The table: each case writes bad files into an empty directory and returns the load to try; the test
checks the error class, the fragments the message must hold (the file, or both files of a pair that do
not fit together, and the line where one is known), that the message is one line, that the load gave
up within seconds (a FIFO must not hang it), and that the directory is byte for byte, mtime for mtime,
as before. Then hypothesis fuzzes a tiny vocabulary pair: whatever the files hold, `read_bpe_vocabulary`
returns a consistent vocabulary or raises `DataFileError`, and nothing else escapes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from typedlm.errors import DataFileError, TypedLMError
from typedlm.tokenizers import GPT2BPE, gpt2_files
from typedlm.tokenizers.bpe_files import MAX_FILE_BYTES, BPEVocabulary, read_bpe_vocabulary
from typedlm.tokenizers.byte_level import BYTE_TO_CHAR
from typedlm.training.corpus import MIN_CORPUS_BYTES, CorpusError, load_corpus

GPT2_VOCAB_PATH, GPT2_MERGES_PATH = gpt2_files()
GPT2_VOCAB_TEXT = GPT2_VOCAB_PATH.read_text(encoding="utf-8")
GPT2_MERGES_LINES = GPT2_MERGES_PATH.read_text(encoding="utf-8").splitlines()
GPT2_VOCAB: dict[str, int] = json.loads(GPT2_VOCAB_TEXT)


def merges_head(rules: int) -> str:
    """GPT-2's merges.txt cut after its header and first ``rules`` rules."""
    return "\n".join(GPT2_MERGES_LINES[: 1 + rules]) + "\n"


def nth_merge_result(rank: int) -> str:
    """What GPT-2's merge rule number ``rank`` (0-based) produces, read straight from merges.txt."""
    return "".join(GPT2_MERGES_LINES[1 + rank].split(" "))


BYTES = [BYTE_TO_CHAR[b] for b in range(256)]
TINY_VOCAB = {**{symbol: i for i, symbol in enumerate(BYTES)}, "Ġt": 256, "Ġth": 257, "he": 258, "<|endoftext|>": 259}
TINY_MERGES = "#version: 0.2\nĠ t\nĠt h\nh e\n"
TINY_VOCAB_TEXT = json.dumps(TINY_VOCAB, indent=1, ensure_ascii=False)

# --- writing bad files ------------------------------------------------------------------------------

Content = str | bytes | Callable[[Path], None]
"""What a case puts at a path: text (UTF-8), bytes, or a function that makes the thing."""
Load = Callable[[], object]


def make(path: Path, content: Content) -> None:
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8", errors="surrogatepass"))  # a lone surrogate stays visible
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)


def directory(path: Path) -> None:
    path.mkdir()


def fifo(path: Path) -> None:
    os.mkfifo(path)


def char_device(path: Path) -> None:
    path.symlink_to("/dev/zero")  # a link in the case's directory to a device that never ends


def sparse(size: int) -> Callable[[Path], None]:
    """A file of ``size`` zero bytes that takes no disk space (a huge download gone wrong)."""

    def write(path: Path) -> None:
        with path.open("wb") as file:
            file.truncate(size)

    return write


def unreadable(content: Content) -> Callable[[Path], None]:
    """A file with mode 000 (as root, whom modes do not stop, the load sees EACCES from os.open: see `load_of`)."""

    def write(path: Path) -> None:
        make(path, content)
        path.chmod(0)

    return write


BINARY_GARBAGE = b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(4 * 2**20)
"""4 MiB of an image: its first byte is not UTF-8."""


def load_of(call: Callable[[], object], *paths: Path) -> Load:
    """``call``, but as root ``os.open`` of a mode-000 file among ``paths`` fails as it would for a user."""
    real_open = os.open

    def open_as_user(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) in paths and Path(path).exists() and stat.S_IMODE(Path(path).lstat().st_mode) == 0:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    def load() -> object:
        if os.name == "posix" and os.geteuid() == 0:
            with mock.patch("os.open", open_as_user):
                return call()
        return call()

    return load


def pair(vocab: Content, merges: Content, *, swap: bool = False) -> Callable[[Path], Load]:
    """Write vocab.json and merges.txt; the load is ``GPT2BPE.from_files`` (with the paths swapped if asked)."""

    def write(folder: Path) -> Load:
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
        make(vocab_path, vocab)
        make(merges_path, merges)
        first, second = (merges_path, vocab_path) if swap else (vocab_path, merges_path)
        return load_of(lambda: GPT2BPE.from_files(first, second), vocab_path, merges_path)

    return write


def same_file_twice(content: str) -> Callable[[Path], Load]:
    """One file given both as vocab.json and as merges.txt."""

    def write(folder: Path) -> Load:
        name = "merges.txt" if content.startswith("#version") else "vocab.json"
        make(folder / name, content)
        return lambda: GPT2BPE.from_files(folder / name, folder / name)

    return write


def missing(name: str) -> Callable[[Path], Load]:
    """Write nothing; the load names ``name`` in the folder, and GPT-2's real file as the other of the pair."""

    def write(folder: Path) -> Load:
        if name == "vocab.json":
            return lambda: GPT2BPE.from_files(folder / name, GPT2_MERGES_PATH)
        return lambda: GPT2BPE.from_files(GPT2_VOCAB_PATH, folder / name)

    return write


def corpus(content: Content, *, allow_small: bool = True) -> Callable[[Path], Load]:
    def write(folder: Path) -> Load:
        path = folder / "corpus.txt"
        make(path, content)
        return load_of(lambda: load_corpus(path, allow_small=allow_small), path)

    return write


def missing_corpus(folder: Path) -> Load:
    return lambda: load_corpus(folder / "corpus.txt", allow_small=True)


@dataclass(frozen=True)
class Case:
    """``fragments`` are str.format templates: ``{vocab}``, ``{merges}``, ``{corpus}`` are the paths written."""

    id: str
    write: Callable[[Path], Load]
    error: type[TypedLMError]
    fragments: tuple[str, ...]


def bpe_case(id: str, write: Callable[[Path], Load], *fragments: str) -> Case:
    return Case(id, write, DataFileError, fragments)


def corpus_case(id: str, write: Callable[[Path], Load], *fragments: str) -> Case:
    return Case(id, write, CorpusError, fragments)


TRUNCATED_AT = 1000
FIRST_UNBUILT = nth_merge_result(TRUNCATED_AT)

CASES = [
    # --- vocab.json that cannot be read -----------------------------------------------------------
    bpe_case("vocab-missing", missing("vocab.json"), "{vocab}: no such file"),
    bpe_case("vocab-directory", pair(directory, TINY_MERGES), "{vocab}: is a directory"),
    bpe_case("vocab-fifo", pair(fifo, TINY_MERGES), "{vocab}: is a FIFO"),
    bpe_case("vocab-device", pair(char_device, TINY_MERGES), "{vocab}: is a character device"),
    bpe_case(
        "vocab-unreadable", pair(unreadable(TINY_VOCAB_TEXT), TINY_MERGES), "{vocab}: cannot read: permission denied"
    ),
    bpe_case("vocab-empty", pair("", TINY_MERGES), "{vocab}: the file is empty"),
    bpe_case(
        "vocab-huge-sparse", pair(sparse(MAX_FILE_BYTES + 1), TINY_MERGES), "{vocab}: is 256 MiB", "at most 256 MiB"
    ),
    bpe_case("vocab-binary-garbage", pair(BINARY_GARBAGE, TINY_MERGES), "{vocab}:1: not valid UTF-8 (byte offset 0)"),
    bpe_case("vocab-deeply-nested", pair("[" * 100_000 + "]" * 100_000, TINY_MERGES), "{vocab}: ", "nested too deeply"),
    bpe_case(
        "vocab-huge-integer", pair('{"a": ' + "9" * 5000 + "}", TINY_MERGES), "{vocab}: not a vocabulary", "digits"
    ),
    bpe_case("vocab-not-json", pair('{\n "a": 0,\n "b" 1\n}', TINY_MERGES), "{vocab}:3:6: not valid JSON"),
    bpe_case("vocab-list", pair("[1, 2]", TINY_MERGES), "{vocab}:1: expected a JSON object"),
    bpe_case("vocab-empty-token", pair('{\n "": 0\n}', TINY_MERGES), "{vocab}:2:2: the empty string is not a token"),
    bpe_case(
        "vocab-token-neither-bytes-nor-special",
        pair(TINY_VOCAB_TEXT.replace('"<|endoftext|>"', '"end of text"'), TINY_MERGES),
        "{vocab}:261:2: token 'end of text' is neither written in GPT-2's byte-level alphabet",
    ),
    # --- merges.txt that cannot be read -----------------------------------------------------------
    bpe_case("merges-missing", missing("merges.txt"), "{merges}: no such file"),
    bpe_case("merges-directory", pair(TINY_VOCAB_TEXT, directory), "{merges}: is a directory"),
    bpe_case("merges-fifo", pair(TINY_VOCAB_TEXT, fifo), "{merges}: is a FIFO"),
    bpe_case("merges-device", pair(TINY_VOCAB_TEXT, char_device), "{merges}: is a character device"),
    bpe_case(
        "merges-unreadable", pair(TINY_VOCAB_TEXT, unreadable(TINY_MERGES)), "{merges}: cannot read: permission denied"
    ),
    bpe_case(
        "merges-binary-garbage", pair(TINY_VOCAB_TEXT, BINARY_GARBAGE), "{merges}:1: not valid UTF-8 (byte offset 0)"
    ),
    bpe_case(
        "merges-malformed-line", pair(TINY_VOCAB_TEXT, "#version: 0.2\nĠ t\nĠt  h\n"), "{merges}:3: expected two tokens"
    ),
    # --- a pair that does not fit together: both files named --------------------------------------
    bpe_case("merges-empty", pair(TINY_VOCAB_TEXT, ""), "{merges}: the file is empty", "{vocab}"),
    bpe_case(
        "merges-truncated",
        pair(GPT2_VOCAB_TEXT, merges_head(TRUNCATED_AT)),
        "{merges}: its 1,000 merge rules produce 49,000 fewer tokens than {vocab} holds",
        f"(first missing: {FIRST_UNBUILT!r}, id {GPT2_VOCAB[FIRST_UNBUILT]}, at line 1, column ",
        "truncated, or from another vocabulary?",
    ),
    bpe_case(
        "merges-header-only",
        pair(GPT2_VOCAB_TEXT, merges_head(0)),
        "{merges}: its 0 merge rules produce 50,000 fewer tokens than {vocab} holds",
        f"first missing: {nth_merge_result(0)!r}, id 256,",
    ),
    bpe_case(
        "merges-of-the-tiny-vocab-with-gpt2-vocab",
        pair(GPT2_VOCAB_TEXT, TINY_MERGES),
        "{merges}: its 3 merge rules produce 49,997 fewer tokens than {vocab} holds",
    ),
    bpe_case(
        "merges-of-gpt2-with-the-tiny-vocab",
        pair(TINY_VOCAB_TEXT, merges_head(50_000)),
        f"{{merges}}:3: the merge {GPT2_MERGES_LINES[2]!r} gives",
        "which is not in the vocabulary {vocab}; are the two files from different tokenizers?",
    ),
    bpe_case(
        "vocab-token-no-merge-builds",
        pair(TINY_VOCAB_TEXT.replace('"he"', '"hex"'), TINY_MERGES.replace("h e\n", "")),
        "{merges}: its 2 merge rules produce 1 fewer tokens than {vocab} holds",
        "(first missing: 'hex', id 258, at line 260, column 2)",
    ),
    bpe_case(
        "files-swapped",
        pair(GPT2_VOCAB_TEXT, merges_head(50_000), swap=True),
        "{merges}:1: holds merge rules",
        "{vocab} holds a JSON object: the two files swapped?",
    ),
    bpe_case("vocab-given-twice", same_file_twice(TINY_VOCAB_TEXT), "{vocab}:1: holds a JSON object, not merge rules"),
    bpe_case(
        "merges-given-twice", same_file_twice(TINY_MERGES), "{merges}:1: holds merge rules", "not a JSON vocabulary"
    ),
    # --- corpus files -----------------------------------------------------------------------------
    corpus_case("corpus-missing", missing_corpus, "{corpus}: corpus file not found"),
    corpus_case("corpus-directory", corpus(directory), "{corpus}: is a directory"),
    corpus_case("corpus-fifo", corpus(fifo), "{corpus}: is a FIFO, not a regular file"),
    corpus_case("corpus-device", corpus(char_device), "{corpus}: is a device or socket, not a regular file"),
    corpus_case(
        "corpus-unreadable",
        corpus(unreadable("To be, or not to be.\n")),
        "{corpus}: cannot read corpus: permission denied",
    ),
    corpus_case(
        "corpus-not-utf8",
        corpus(b"line one\nline two\ncaf\xe9 au lait\n"),
        "{corpus}:3: corpus is not valid UTF-8",
        "at byte offset 21)",
    ),
    corpus_case(
        "corpus-binary-garbage", corpus(BINARY_GARBAGE), "{corpus}:1: corpus is not valid UTF-8", "byte offset 0)"
    ),
    corpus_case("corpus-empty", corpus(""), "{corpus}: corpus is empty"),
    corpus_case("corpus-whitespace", corpus(" \n\t\n\r\n  \n"), "{corpus}: corpus holds only whitespace (9 bytes)"),
    corpus_case(
        "corpus-whitespace-and-small",
        corpus("\n" * 1000, allow_small=False),
        "{corpus}: corpus holds only whitespace",
    ),
    corpus_case(
        "corpus-small",
        corpus("To be, or not to be.\n" * 100, allow_small=False),
        "{corpus}: corpus is 0.00 MiB",
        f"under the {MIN_CORPUS_BYTES // 2**20} MiB minimum",
        "--allow-small-data",
    ),
]


def snapshot(folder: Path) -> dict[str, tuple[object, ...]]:
    """Each entry under ``folder`` (and itself): its type, mode, mtime, and a regular file's sha256."""
    entries: dict[str, tuple[object, ...]] = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        info = path.lstat()
        content = None
        if stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
            with path.open("rb") as file:
                content = hashlib.file_digest(file, "sha256").hexdigest()
        entries[str(path)] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_mtime_ns, content)
    return entries


class _TooSlow(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (rather than hang) if the body takes longer than ``seconds``, e.g. blocked opening a FIFO."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _TooSlow(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(os.name != "posix", reason="FIFOs, devices, modes and SIGALRM are POSIX")
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_file_is_refused_with_one_line_naming_it(tmp_path: Path, case: Case) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    load = case.write(folder)
    before = snapshot(folder)
    with deadline(10), pytest.raises(TypedLMError) as caught:
        load()
    assert type(caught.value) is case.error
    assert isinstance(caught.value, ValueError)  # callers catching ValueError go on working
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    names = {"vocab": folder / "vocab.json", "merges": folder / "merges.txt", "corpus": folder / "corpus.txt"}
    for fragment in case.fragments:
        assert fragment.format(**names) in message
    assert snapshot(folder) == before


def test_the_table_covers_every_file_kind() -> None:
    """Each loader meets a missing file, a directory, a FIFO, a device, an unreadable, an empty file and garbage."""
    kinds = ["missing", "directory", "fifo", "device", "unreadable", "empty", "binary-garbage"]
    ids = {case.id for case in CASES}
    for prefix in ("vocab", "merges", "corpus"):
        assert {f"{prefix}-{kind}" for kind in kinds} <= ids


def test_the_real_pair_loads_and_was_not_refused_by_the_new_rule() -> None:
    """The special-token rule accepts GPT-2's own files: one special, every other entry a byte or a merge."""
    vocabulary = read_bpe_vocabulary(GPT2_VOCAB_PATH, GPT2_MERGES_PATH)
    assert vocabulary.special_tokens == {"<|endoftext|>"}
    assert len(vocabulary.token_ids) == 50_257 and len(vocabulary.merge_rank) == 50_000


# --- fuzzing ----------------------------------------------------------------------------------------

SPECIAL_SHAPE_REFERENCE = ("<", ">"), ("[", "]")


def check_consistent(vocabulary: BPEVocabulary) -> None:
    """What a vocabulary that loaded promises, checked without the loader's own helpers."""
    assert sorted(vocabulary.token_ids.values()) == list(range(len(vocabulary.token_ids)))
    for token in vocabulary.token_ids:
        if token in BYTES or token in vocabulary.merge_rank:
            assert token not in vocabulary.special_tokens
        else:
            assert token in vocabulary.special_tokens
            assert (token[0], token[-1]) in SPECIAL_SHAPE_REFERENCE and len(token) >= 3
            assert token.isprintable() and not any(char.isspace() for char in token)
    tok = GPT2BPE(vocabulary)
    text = "the théâtre <pad>\n\tthe end"
    assert tok.decode(tok.encode_ordinary(text)) == text


def written(folder: Path, vocab: str | bytes, merges: str | bytes) -> tuple[Path, Path]:
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    make(vocab_path, vocab)
    make(merges_path, merges)
    return vocab_path, merges_path


def try_pair(folder: Path, vocab: str | bytes, merges: str | bytes) -> None:
    """Load the pair: a consistent vocabulary or a one-line DataFileError that starts with a path."""
    vocab_path, merges_path = written(folder, vocab, merges)
    try:
        vocabulary = read_bpe_vocabulary(vocab_path, merges_path)
    except DataFileError as error:
        event("refused")
        message = str(error)
        assert message.startswith((f"{vocab_path}:", f"{merges_path}:")) and len(message.splitlines()) == 1
    else:
        event(f"loaded, {len(vocabulary.special_tokens)} special")
        check_consistent(vocabulary)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
odd_tokens = st.sampled_from(
    ["<pad>", "[CLS]", "<a b>", "<>", "[]", "Ġthe", "x y", "", "<\ud800>", "Ġt", "<|endoftext|>"]
)


@st.composite
def mutated_vocab(draw: st.DrawFn) -> str:
    """The tiny vocabulary, maybe with entries dropped, with entries added (odd tokens, odd ids), maybe renumbered."""
    vocab: dict[str, object] = dict(TINY_VOCAB)
    if draw(st.booleans()):
        for token in draw(st.lists(st.sampled_from(sorted(TINY_VOCAB)), min_size=1, max_size=2)):
            vocab.pop(token, None)
    extra = draw(st.dictionaries(odd_tokens | st.text(max_size=5), st.integers(0, 262) | json_values, max_size=3))
    vocab.update(extra)
    if draw(st.booleans()):
        vocab = {token: i for i, token in enumerate(vocab)}
    return json.dumps(vocab, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))


def extended(tokens: list[str]) -> str:
    """The tiny vocabulary with ``tokens`` added at the next ids."""
    return json.dumps({**TINY_VOCAB, **{token: len(TINY_VOCAB) + i for i, token in enumerate(tokens)}})


@st.composite
def spliced(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters cut out or put in somewhere."""
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 4)))
    return text[:start] + draw(st.text(max_size=3)) + text[end:]


vocab_files = st.one_of(
    json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=5), st.integers(-1, 300) | json_values, max_size=5).map(json.dumps),
    mutated_vocab(),
    st.lists(odd_tokens, unique=True, max_size=3).map(extended),
    spliced(TINY_VOCAB_TEXT),
    st.binary(max_size=300),
)

MERGE_PARTS = ["Ġ", "t", "h", "e", "Ġt", "Ġth", "he", "<|endoftext|>", "a", "<pad>"]
merge_files = st.one_of(
    st.lists(st.text(max_size=8), max_size=5).map(lambda lines: "#version: 0.2\n" + "\n".join(lines)),
    st.lists(st.tuples(st.sampled_from(MERGE_PARTS), st.sampled_from(MERGE_PARTS)), max_size=6).map(
        lambda rules: "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in rules)
    ),
    st.permutations(TINY_MERGES.splitlines()[1:]).map(lambda rules: "#version: 0.2\n" + "\n".join(rules)),
    spliced(TINY_MERGES),
    st.text(max_size=40),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab=vocab_files)
def test_any_vocab_json_loads_or_raises_data_file_error(fuzz_folder: Path, vocab: str | bytes) -> None:
    try_pair(fuzz_folder, vocab, TINY_MERGES)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(merges=merge_files)
def test_any_merges_txt_loads_or_raises_data_file_error(fuzz_folder: Path, merges: str | bytes) -> None:
    try_pair(fuzz_folder, TINY_VOCAB_TEXT, merges)


def test_the_fuzzed_pair_is_valid_to_start_with(fuzz_folder: Path) -> None:
    """The fuzzers start from a pair that loads, with <|endoftext|> as its one special token."""
    vocabulary = read_bpe_vocabulary(*written(fuzz_folder, TINY_VOCAB_TEXT, TINY_MERGES))
    check_consistent(vocabulary)
    assert vocabulary.special_tokens == {"<|endoftext|>"}
    assert GPT2BPE(vocabulary).encode(" the") == [257, TINY_VOCAB["e"]]
