"""Reading and checking GPT-2-style ``vocab.json`` + ``merges.txt``, and the copies typedlm ships.

Every problem with a file is a ValueError that starts with ``path:line:`` (``path:line:column:`` for
JSON), so an editor can jump to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from typedlm.tokenizers.byte_level import BYTE_ALPHABET, BYTE_TO_CHAR

_VENDORED = Path(__file__).resolve().parent.parent / "data" / "gpt2"


def gpt2_files() -> tuple[Path, Path]:
    """Paths of the GPT-2 ``vocab.json`` and ``merges.txt`` shipped with typedlm (MIT, (c) 2019 OpenAI)."""
    return _VENDORED / "vocab.json", _VENDORED / "merges.txt"


@dataclass(frozen=True)
class BPEVocabulary:
    """The checked content of a vocab.json + merges.txt pair.

    ``token_ids`` maps each token (in the byte-level alphabet, or literal text for a special token) to
    its id; ids run from 0 to ``len(token_ids) - 1``. ``merge_rank`` maps the result of each merge
    rule to its position in merges.txt (lower merges first). ``special_tokens`` are the vocabulary
    entries that are neither one of the 256 byte symbols nor the result of a merge, such as
    ``<|endoftext|>``. ``fingerprint`` is a sha256 of both files' bytes.
    """

    token_ids: dict[str, int]
    merge_rank: dict[str, int]
    special_tokens: frozenset[str]
    fingerprint: str


def read_bpe_vocabulary(vocab_json: str | Path, merges_txt: str | Path) -> BPEVocabulary:
    """Read and check both files; raise ValueError naming the file and line of the first problem."""
    vocab_path, merges_path = Path(vocab_json), Path(merges_txt)
    vocab_raw = _read_bytes(vocab_path)
    merges_raw = _read_bytes(merges_path)
    token_ids = _parse_vocab(vocab_path, _decode_utf8(vocab_path, vocab_raw))
    merge_rank = _parse_merges(merges_path, _decode_utf8(merges_path, merges_raw), token_ids, vocab_path)
    byte_symbols = frozenset(BYTE_TO_CHAR.values())
    missing = sorted(byte_symbols - token_ids.keys())
    if missing:
        raise ValueError(
            f"{vocab_path}: the vocabulary lacks {len(missing)} of the 256 byte symbols "
            f"(first: {missing[0]!r}); a byte-level BPE needs all of them to encode any text"
        )
    special = frozenset(token_ids.keys() - byte_symbols - merge_rank.keys())
    digest = hashlib.sha256()
    for raw in (vocab_raw, merges_raw):
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return BPEVocabulary(token_ids, merge_rank, special, digest.hexdigest())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a file") from None


def _decode_utf8(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte offset {err.start})") from None


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
        raise ValueError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    if not isinstance(pairs, _JSONObject):
        raise ValueError(
            f"{path}:1: expected a JSON object mapping token strings to integer ids, found a {type(pairs).__name__}"
        )
    token_ids: dict[str, int] = {}
    owner_of_id: dict[int, str] = {}
    for index, (token, token_id) in enumerate(pairs):
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            where = _line_col(text, _entry_offsets(text)[index])
            raise ValueError(f"{path}:{where}: token {token!r} has id {token_id!r}; ids must be non-negative integers")
        if token in token_ids:
            where = _line_col(text, _entry_offsets(text)[index])
            raise ValueError(f"{path}:{where}: token {token!r} appears twice")
        if token_id in owner_of_id:
            where = _line_col(text, _entry_offsets(text)[index])
            raise ValueError(
                f"{path}:{where}: duplicate id {token_id}: used by {owner_of_id[token_id]!r} and {token!r}"
            )
        token_ids[token] = token_id
        owner_of_id[token_id] = token
    for expected, actual in enumerate(sorted(owner_of_id)):
        if expected != actual:
            raise ValueError(
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


def _parse_merges(path: Path, text: str, token_ids: dict[str, int], vocab_path: Path) -> dict[str, int]:
    lines = text.split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"{path}:1: the first line must be the '#version: ...' header, found {lines[0]!r}")
    while len(lines) > 1 and lines[-1].strip() == "":
        lines.pop()  # trailing blank lines
    merge_rank: dict[str, int] = {}
    line_of_rule: dict[tuple[str, str], int] = {}
    for rank, line in enumerate(lines[1:]):
        line_no = rank + 2
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{path}:{line_no}: expected two tokens separated by one space, found {line!r}")
        left, right = parts
        merged = left + right
        if not BYTE_ALPHABET.issuperset(merged):
            raise ValueError(f"{path}:{line_no}: {line!r} uses characters outside GPT-2's byte-level alphabet")
        if (left, right) in line_of_rule:
            raise ValueError(f"{path}:{line_no}: the merge {line!r} repeats line {line_of_rule[left, right]}")
        for part in (left, right):
            if part not in token_ids:
                raise ValueError(f"{path}:{line_no}: merge part {part!r} is not in the vocabulary {vocab_path}")
        if merged not in token_ids:
            raise ValueError(
                f"{path}:{line_no}: the merge {line!r} gives {merged!r}, which is not in the vocabulary {vocab_path}"
            )
        line_of_rule[left, right] = line_no
        merge_rank.setdefault(merged, rank)
    return merge_rank
