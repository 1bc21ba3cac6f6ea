"""Bad vocab.json / merges.txt files raise DataFileError (a ValueError) naming the file and the line;
which vocabulary entries count as special tokens, checked against tiktoken built from the same pair.

More bad files (unreadable, FIFOs, garbage, mismatched pairs) and fuzzing: tests/test_bad_data_files.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tiktoken

from typedlm.errors import DataFileError
from typedlm.tokenizers import GPT2BPE, gpt2_files
from typedlm.tokenizers.bpe_files import looks_special
from typedlm.tokenizers.byte_level import BYTE_TO_CHAR, symbols_to_bytes
from typedlm.tokenizers.pretokenize import GPT2_PATTERN

BYTES = [BYTE_TO_CHAR[b] for b in range(256)]


def small_vocab() -> dict[str, int]:
    """A tiny valid vocabulary: the 256 byte symbols, two merges, and <|endoftext|>."""
    vocab = {symbol: i for i, symbol in enumerate(BYTES)}
    vocab["Ġt"] = 256
    vocab["Ġth"] = 257
    vocab["<|endoftext|>"] = 258
    return vocab


def write_pair(tmp_path: Path, vocab_text: str, merges_text: str) -> tuple[Path, Path]:
    vocab_path, merges_path = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab_path.write_text(vocab_text, encoding="utf-8")
    merges_path.write_text(merges_text, encoding="utf-8")
    return vocab_path, merges_path


def pretty(vocab: dict[str, int]) -> str:
    return json.dumps(vocab, indent=1, ensure_ascii=False)


GOOD_MERGES = "#version: 0.2\nĠ t\nĠt h\n"


def test_a_small_valid_pair_loads_and_encodes(tmp_path: Path) -> None:
    tok = GPT2BPE.from_files(*write_pair(tmp_path, pretty(small_vocab()), GOOD_MERGES))
    assert tok.vocab_size == 259
    assert tok.eot_token == 258
    assert tok.encode(" the") == [257, BYTES.index("e")]
    assert tok.decode(tok.encode(" the thin")) == " the thin"


def test_missing_files(tmp_path: Path) -> None:
    vocab, merges = gpt2_files()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'nope.json'}: no such file")):
        GPT2BPE.from_files(tmp_path / "nope.json", merges)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'nope.txt'}: no such file")):
        GPT2BPE.from_files(vocab, tmp_path / "nope.txt")


def test_vocab_not_json_names_line_and_column(tmp_path: Path) -> None:
    text = pretty(small_vocab()).replace('"Ġt": 256,', '"Ġt": 256,,')
    line = text.splitlines().index(' "Ġt": 256,,') + 1
    paths = write_pair(tmp_path, text, GOOD_MERGES)
    with pytest.raises(ValueError, match=rf"vocab\.json:{line}:\d+: not valid JSON"):
        GPT2BPE.from_files(*paths)


def test_vocab_not_utf8(tmp_path: Path) -> None:
    vocab_path, merges_path = write_pair(tmp_path, "{}", GOOD_MERGES)
    vocab_path.write_bytes(b'{\n"a": 1,\n"\xff": 2}')
    with pytest.raises(ValueError, match=r"vocab\.json:3: not valid UTF-8"):
        GPT2BPE.from_files(vocab_path, merges_path)


def test_vocab_that_is_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"vocab\.json:1: expected a JSON object.*found a list"):
        GPT2BPE.from_files(*write_pair(tmp_path, "[1, 2]", GOOD_MERGES))


@pytest.mark.parametrize("bad_value", ['"256"', "2.5", "-3", "true", "null", '{"x": 1}'])
def test_vocab_with_a_wrong_value_type_names_its_line(tmp_path: Path, bad_value: str) -> None:
    text = pretty(small_vocab()).replace('"Ġt": 256', f'"Ġt": {bad_value}')
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith(' "Ġt":'))
    with pytest.raises(ValueError, match=rf"vocab\.json:{line}:2: token 'Ġt' has id .*non-negative integers"):
        GPT2BPE.from_files(*write_pair(tmp_path, text, GOOD_MERGES))


def test_vocab_with_duplicate_ids_names_both_tokens(tmp_path: Path) -> None:
    text = pretty(small_vocab()).replace('"Ġth": 257', '"Ġth": 256')
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith(' "Ġth":'))
    with pytest.raises(ValueError, match=rf"vocab\.json:{line}:2: duplicate id 256: used by 'Ġt' and 'Ġth'"):
        GPT2BPE.from_files(*write_pair(tmp_path, text, GOOD_MERGES))


def test_vocab_with_a_repeated_token(tmp_path: Path) -> None:
    text = pretty(small_vocab()).replace('"Ġth": 257', '"Ġt": 257')
    with pytest.raises(ValueError, match=r"vocab\.json:\d+:2: token 'Ġt' appears twice"):
        GPT2BPE.from_files(*write_pair(tmp_path, text, GOOD_MERGES))


def test_single_line_vocab_names_the_column(tmp_path: Path) -> None:
    text = json.dumps(small_vocab()).replace('"\\u0120th": 257', '"\\u0120th": 256')
    column = text.index('"\\u0120th"') + 1
    with pytest.raises(ValueError, match=rf"vocab\.json:1:{column}: duplicate id 256"):
        GPT2BPE.from_files(*write_pair(tmp_path, text, GOOD_MERGES))


def test_vocab_with_a_gap_in_ids(tmp_path: Path) -> None:
    vocab = small_vocab()
    vocab["<|endoftext|>"] = 300
    with pytest.raises(ValueError, match=r"vocab\.json: ids must run from 0 to 258 without gaps; id 258 is missing"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), GOOD_MERGES))


def test_vocab_without_all_bytes(tmp_path: Path) -> None:
    vocab = {token: i for i, token in enumerate(t for t in small_vocab() if t != "Ġ")}
    with pytest.raises(ValueError, match=r"vocab\.json: the vocabulary lacks 1 of the 256 byte symbols"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), "#version: 0.2\n"))


def test_merges_without_version_header(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"merges\.txt:1: the first line must be the '#version: \.\.\.' header"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(small_vocab()), "Ġ t\nĠt h\n"))


@pytest.mark.parametrize("bad_line", ["Ġt", "Ġ t h", "Ġ  t", "", " t"])
def test_merges_with_a_malformed_line_names_it(tmp_path: Path, bad_line: str) -> None:
    merges = f"#version: 0.2\nĠ t\n{bad_line}\nĠt h\n"
    with pytest.raises(ValueError, match=r"merges\.txt:3: expected two tokens separated by one space"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(small_vocab()), merges))


def test_merge_whose_result_is_not_in_the_vocab(tmp_path: Path) -> None:
    merges = "#version: 0.2\nĠ t\nĠt h\nh e\n"
    with pytest.raises(ValueError, match=r"merges\.txt:4: the merge 'h e' gives 'he', which is not in the vocabulary"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(small_vocab()), merges))


def test_merge_of_a_part_not_in_the_vocab(tmp_path: Path) -> None:
    merges = "#version: 0.2\nĠ t\nĠt h\nĠth e\n"
    vocab = small_vocab()
    vocab["Ġthe"] = 259
    del vocab["Ġth"]
    vocab = {token: i for i, token in enumerate(vocab)}
    with pytest.raises(ValueError, match=r"merges\.txt:3: merge part 'Ġt' is not|merges\.txt:3: the merge 'Ġt h'"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), merges))


def test_repeated_merge_and_non_byte_level_merge(tmp_path: Path) -> None:
    vocab_text = pretty(small_vocab())
    with pytest.raises(ValueError, match=r"merges\.txt:4: the merge 'Ġ t' repeats line 2"):
        GPT2BPE.from_files(*write_pair(tmp_path, vocab_text, "#version: 0.2\nĠ t\nĠt h\nĠ t\n"))
    with pytest.raises(ValueError, match=r"merges\.txt:2: .* outside GPT-2's byte-level alphabet"):
        GPT2BPE.from_files(*write_pair(tmp_path, vocab_text, "#version: 0.2\n€ t\n"))


def test_crlf_merges_and_trailing_blank_lines_are_accepted(tmp_path: Path) -> None:
    merges = "#version: 0.2\r\nĠ t\r\nĠt h\r\n\r\n\n"
    tok = GPT2BPE.from_files(*write_pair(tmp_path, pretty(small_vocab()), merges))
    assert tok.encode(" th") == [257]


def test_every_error_is_a_data_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"merges\.txt:1: the first line must be"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(small_vocab()), "Ġ t\n"))


@pytest.mark.parametrize(
    ("token", "special"),
    [
        ("<|endoftext|>", True),
        ("<s>", True),
        ("</s>", True),
        ("<pad>", True),
        ("[CLS]", True),
        ("<｜begin▁of▁sentence｜>", True),
        ("<>", False),  # nothing inside
        ("[]", False),
        ("<a b>", False),  # whitespace
        ("<tab\t>", False),
        ("<x\u200b>", False),  # not printable
        ("<\ud800>", False),  # not encodable
        ("<s", False),
        ("s>", False),
        ("<a>b>", False),
        ("[CLS>", False),
        ("Ġthe", False),
    ],
)
def test_the_shape_of_a_special_token(token: str, special: bool) -> None:
    assert looks_special(token) is special


def tiktoken_of(vocab: dict[str, int], specials: set[str]) -> tiktoken.Encoding:
    """tiktoken over the same pair: byte-level tokens are ranked by id, the rest are its special tokens."""
    ranks = {symbols_to_bytes(token): i for token, i in vocab.items() if token not in specials}
    return tiktoken.Encoding(
        "tiny", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={t: vocab[t] for t in specials}
    )


def test_special_tokens_that_look_special_are_accepted_and_encode_as_tiktoken_does(tmp_path: Path) -> None:
    vocab = small_vocab()
    specials = {"<|endoftext|>", "<pad>", "[CLS]", "</s>"}
    for token in sorted(specials - vocab.keys()):
        vocab[token] = len(vocab)
    tok = GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), GOOD_MERGES))
    assert tok.special_tokens == specials
    text = "[CLS] the <pad><pad> thin</s><|endoftext|> [CLS"
    reference = tiktoken_of(vocab, specials)
    assert tok.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert tok.encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_a_byte_level_token_no_merge_builds_is_refused_naming_both_files(tmp_path: Path) -> None:
    vocab = small_vocab()
    vocab["Ġthe"] = 259  # no merge rule makes it: merges.txt is short of one
    vocab_path, merges_path = write_pair(tmp_path, pretty(vocab), GOOD_MERGES)
    line = pretty(vocab).splitlines().index(' "Ġthe": 259') + 1
    with pytest.raises(DataFileError) as caught:
        GPT2BPE.from_files(vocab_path, merges_path)
    assert str(caught.value) == (
        f"{merges_path}: its 2 merge rules produce 1 fewer tokens than {vocab_path} holds "
        f"(first missing: 'Ġthe', id 259, at line {line}, column 2); truncated, or from another vocabulary?"
    )
    with_merge = GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), GOOD_MERGES + "Ġth e\n"))
    assert with_merge.encode(" the") == [259] and with_merge.special_tokens == {"<|endoftext|>"}


@pytest.mark.parametrize("token", ["<a b>", "end of text", "<\x00>"])
def test_a_token_outside_the_byte_alphabet_that_does_not_look_special_is_refused(tmp_path: Path, token: str) -> None:
    vocab = small_vocab()
    vocab[token] = 259
    text = pretty(vocab)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.endswith(": 259"))
    with pytest.raises(
        DataFileError, match=rf"vocab\.json:{line}:2: token .* is neither written in GPT-2's byte-level"
    ):
        GPT2BPE.from_files(*write_pair(tmp_path, text, GOOD_MERGES))


def test_a_token_of_printable_ascii_shaped_wrong_is_taken_for_a_missing_merge(tmp_path: Path) -> None:
    """``<>`` is written in the byte-level alphabet but is not special: only a merge could build it."""
    vocab = small_vocab()
    vocab["<>"] = 259
    with pytest.raises(DataFileError, match=r"merges\.txt: its 2 merge rules produce 1 fewer tokens .*'<>', id 259"):
        GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), GOOD_MERGES))
    assert GPT2BPE.from_files(*write_pair(tmp_path, pretty(vocab), GOOD_MERGES + "< >\n")).encode("<>") == [259]
