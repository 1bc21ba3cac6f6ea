"""Reading and checking GPT-2-style ``vocab.json`` + ``merges.txt``, and the copies typedlm ships.

Every problem with either file is a `DataFileError` (a ValueError) whose one-line message starts with
``path:line:`` (``path:line:column:`` for JSON) where a line is known, so an editor can jump to it.
Only regular files are read (a FIFO or device is refused before reading, so nothing hangs), and none
over `MAX_FILE_BYTES`.

The merges must build the vocabulary: every entry of vocab.json is one of the 256 byte symbols, the
result of a merge rule, or a special token. An entry that is none of the first two is taken as a
special token only if it looks like one (see `looks_special`: ``<|endoftext|>``, ``<s>``, ``[CLS]``);
any other is refused, naming both files, because it means merges.txt is truncated, from another
vocabulary, or the two files are swapped.
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path

from typedlm.errors import DataFileError
from typedlm.regular_file import UnreadableFile, read_regular_file
from typedlm.tokenizers.byte_level import BYTE_ALPHABET, BYTE_TO_CHAR

_VENDORED = Path(__file__).resolve().parent.parent / "data" / "gpt2"

MAX_FILE_BYTES = 256 * 2**20
"""Largest vocab.json or merges.txt read (GPT-2's are 1 MB and 0.5 MB); a bigger file is the wrong file."""

_SPECIAL_SHAPE = re.compile(r"<[^\s<>]+>|\[[^\s\[\]]+\]")


def gpt2_files() -> tuple[Path, Path]:
    """Paths of the GPT-2 ``vocab.json`` and ``merges.txt`` shipped with typedlm (MIT, (c) 2019 OpenAI)."""
    return _VENDORED / "vocab.json", _VENDORED / "merges.txt"


def looks_special(token: str) -> bool:
    """Whether ``token`` has the shape of a special token: ``<...>`` (``<|endoftext|>``, ``<s>``) or
    ``[...]`` (``[CLS]``): at least one character inside, none of them whitespace or another bracket of
    the same kind, and the whole token printable (so it is plain UTF-8 text)."""
    return _SPECIAL_SHAPE.fullmatch(token) is not None and token.isprintable()


@dataclass(frozen=True)
class BPEVocabulary:
    """The checked content of a vocab.json + merges.txt pair.

    ``token_ids`` maps each token (in the byte-level alphabet, or literal text for a special token) to
    its id; ids run from 0 to ``len(token_ids) - 1``. ``merge_rank`` maps the result of each merge
    rule to its position in merges.txt (lower merges first). ``special_tokens`` are the vocabulary
    entries that are neither one of the 256 byte symbols nor the result of a merge, such as
    ``<|endoftext|>``; each passes `looks_special`. ``fingerprint`` is a sha256 of both files' bytes.
    """

    token_ids: dict[str, int]
    merge_rank: dict[str, int]
    special_tokens: frozenset[str]
    fingerprint: str


def read_bpe_vocabulary(vocab_json: str | Path, merges_txt: str | Path) -> BPEVocabulary:
    """Read and check both files; raise DataFileError naming the file (and line) of the first problem."""
    vocab_path, merges_path = Path(vocab_json), Path(merges_txt)
    vocab_raw = _read_bytes(vocab_path)
    merges_raw = _read_bytes(merges_path)
    if not vocab_raw:
        raise DataFileError(f"{vocab_path}: the file is empty; expected a JSON object mapping tokens to ids")
    if not merges_raw:
        raise DataFileError(
            f"{merges_path}: the file is empty; expected a '#version' header and the merge rules that build "
            f"the vocabulary {vocab_path}"
        )
    vocab_text = _decode_utf8(vocab_path, vocab_raw)
    merges_text = _decode_utf8(merges_path, merges_raw)
    _refuse_swapped(vocab_path, vocab_text, merges_path, merges_text)
    token_ids = _parse_vocab(vocab_path, vocab_text)
    merge_rank, rules = _parse_merges(merges_path, merges_text, token_ids, vocab_path)
    byte_symbols = frozenset(BYTE_TO_CHAR.values())
    missing = sorted(byte_symbols - token_ids.keys())
    if missing:
        raise DataFileError(
            f"{vocab_path}: the vocabulary lacks {len(missing)} of the 256 byte symbols "
            f"(first: {missing[0]!r}); a byte-level BPE needs all of them to encode any text"
        )
    unbuilt = [token for token in token_ids if token not in byte_symbols and token not in merge_rank]
    special = frozenset(filter(looks_special, unbuilt))
    _refuse_unbuilt(vocab_path, vocab_text, merges_path, rules, token_ids, [t for t in unbuilt if t not in special])
    digest = hashlib.sha256()
    for raw in (vocab_raw, merges_raw):
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return BPEVocabulary(token_ids, merge_rank, special, digest.hexdigest())


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; anything else is a DataFileError."""
    try:
        return read_regular_file(path, limit=MAX_FILE_BYTES)
    except UnreadableFile as e:
        problem = {
            "missing": "no such file",
            "directory": "is a directory, not a file",
            "permission": "cannot read: permission denied",
            "irregular": f"is {e.detail}; give the path of a regular file",
            "too large": f"is {e.detail}; a vocab.json or merges.txt is at most "
            f"{MAX_FILE_BYTES // 2**20} MiB, so this is not one",
            "open": f"cannot open: {e.detail}",
            "read": f"cannot read: {e.detail}",
        }[e.problem]
        raise DataFileError(f"{path}: {problem}") from None


def _decode_utf8(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFileError(f"{path}:{line}: not valid UTF-8 (byte offset {err.start})") from None


def _refuse_swapped(vocab_path: Path, vocab_text: str, merges_path: Path, merges_text: str) -> None:
    """Refuse merge rules given as the vocabulary, or a JSON object given as the merge rules."""
    vocab_is_merges = vocab_text.startswith("#version")
    merges_is_json = merges_text.lstrip().startswith("{")
    if vocab_is_merges and merges_is_json:
        raise DataFileError(
            f"{vocab_path}:1: holds merge rules ('#version' header) and {merges_path} holds a JSON object: "
            "the two files swapped? Give vocab.json first, then merges.txt"
        )
    if vocab_is_merges:
        raise DataFileError(
            f"{vocab_path}:1: holds merge rules ('#version' header), not a JSON vocabulary; "
            f"is it a merges.txt? (the merges file given is {merges_path})"
        )
    if merges_is_json:
        raise DataFileError(
            f"{merges_path}:1: holds a JSON object, not merge rules; is it a vocab.json? "
            f"(the vocabulary given is {vocab_path})"
        )


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


def _shown(value: object) -> str:
    """``repr(value)``, shortened so that a message stays one line; a JSON list or object is ``[…]`` / ``{…}``."""
    if isinstance(value, list):
        return "{…}" if isinstance(value, _JSONObject) else "[…]"
    return _REPR.repr(value)


def _line_col(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"{line}:{column}"


class _JSONObject(list[tuple[str, object]]):
    """A JSON object as its (key, value) pairs in file order, so repeated keys are seen."""


def _parse_vocab(path: Path, text: str) -> dict[str, int]:
    try:
        pairs = json.loads(text, object_pairs_hook=_JSONObject)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    except RecursionError:
        raise DataFileError(f"{path}: not a vocabulary: JSON nested too deeply to read") from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise DataFileError(f"{path}: not a vocabulary: {str(err).split(';')[0]}") from None
    if not isinstance(pairs, _JSONObject):
        raise DataFileError(
            f"{path}:1: expected a JSON object mapping token strings to integer ids, found a {type(pairs).__name__}"
        )
    token_ids: dict[str, int] = {}
    owner_of_id: dict[int, str] = {}
    for index, (token, token_id) in enumerate(pairs):
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            problem = f"token {_shown(token)} has id {_shown(token_id)}; ids must be non-negative integers"
        elif not token:
            problem = "the empty string is not a token"
        elif token in token_ids:
            problem = f"token {_shown(token)} appears twice"
        elif token_id in owner_of_id:
            problem = f"duplicate id {token_id}: used by {_shown(owner_of_id[token_id])} and {_shown(token)}"
        else:
            token_ids[token] = token_id
            owner_of_id[token_id] = token
            continue
        raise DataFileError(f"{path}:{_line_col(text, _entry_offsets(text)[index])}: {problem}")
    for expected, actual in enumerate(sorted(owner_of_id)):
        if expected != actual:
            raise DataFileError(
                f"{path}: ids must run from 0 to {len(owner_of_id) - 1} without gaps; id {expected} is missing"
            )
    return token_ids


def _entry_offsets(text: str) -> list[int]:
    """Character offset of each key of a JSON object that is already known to parse (for messages)."""
    decoder = json.JSONDecoder()
    offsets: list[int] = []

    def skip_space(offset: int) -> int:
        while text[offset] in " \t\n\r":
            offset += 1
        return offset

    offset = skip_space(0) + 1  # past "{"
    while True:
        offset = skip_space(offset)
        if text[offset] == "}":
            return offsets
        offsets.append(offset)
        _, offset = decoder.raw_decode(text, offset)  # the key
        offset = skip_space(skip_space(offset) + 1)  # past ":"
        _, offset = decoder.raw_decode(text, offset)  # the value
        offset = skip_space(offset)
        if text[offset] == ",":
            offset += 1


def _parse_merges(path: Path, text: str, token_ids: dict[str, int], vocab_path: Path) -> tuple[dict[str, int], int]:
    """The rank of each merge result, and the number of rules."""
    lines = text.split("\n")
    if not lines[0].startswith("#version"):
        raise DataFileError(f"{path}:1: the first line must be the '#version: ...' header, found {_shown(lines[0])}")
    while len(lines) > 1 and lines[-1].strip() == "":
        lines.pop()  # trailing blank lines
    other_vocabulary = f"the vocabulary {vocab_path}; are the two files from different tokenizers?"
    merge_rank: dict[str, int] = {}
    line_of_rule: dict[tuple[str, str], int] = {}
    for rank, line in enumerate(lines[1:]):
        line_no = rank + 2
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise DataFileError(f"{path}:{line_no}: expected two tokens separated by one space, found {_shown(line)}")
        left, right = parts
        merged = left + right
        if not BYTE_ALPHABET.issuperset(merged):
            raise DataFileError(f"{path}:{line_no}: {_shown(line)} uses characters outside GPT-2's byte-level alphabet")
        if (left, right) in line_of_rule:
            raise DataFileError(f"{path}:{line_no}: the merge {_shown(line)} repeats line {line_of_rule[left, right]}")
        for part in (left, right):
            if part not in token_ids:
                raise DataFileError(f"{path}:{line_no}: merge part {_shown(part)} is not in {other_vocabulary}")
        if merged not in token_ids:
            raise DataFileError(
                f"{path}:{line_no}: the merge {_shown(line)} gives {_shown(merged)}, which is not in {other_vocabulary}"
            )
        line_of_rule[left, right] = line_no
        merge_rank.setdefault(merged, rank)
    return merge_rank, len(lines) - 1


def _refuse_unbuilt(
    vocab_path: Path, vocab_text: str, merges_path: Path, rules: int, token_ids: dict[str, int], unbuilt: list[str]
) -> None:
    """Refuse vocabulary entries that are not bytes, not built by a merge, and do not look special."""
    if not unbuilt:
        return
    foreign = [token for token in unbuilt if not BYTE_ALPHABET.issuperset(token)]
    if foreign:
        first = foreign[0]
        where = _line_col(vocab_text, _entry_offsets(vocab_text)[list(token_ids).index(first)])
        raise DataFileError(
            f"{vocab_path}:{where}: token {_shown(first)} is neither written in GPT-2's byte-level alphabet "
            "nor shaped like a special token (<...> or [...], printable, no spaces)"
        )
    first = min(unbuilt, key=token_ids.__getitem__)
    line, column = _line_col(vocab_text, _entry_offsets(vocab_text)[list(token_ids).index(first)]).split(":")
    raise DataFileError(
        f"{merges_path}: its {rules:,} merge rules produce {len(unbuilt):,} fewer tokens than {vocab_path} holds "
        f"(first missing: {_shown(first)}, id {token_ids[first]}, at line {line}, column {column}); "
        "truncated, or from another vocabulary?"
    )
