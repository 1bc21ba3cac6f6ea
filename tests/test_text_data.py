"""A corpus of any size: folders and globs read as one text, the streamed token cache (one writer, a
cached start that reads no text, bounded memory), and the local-vocabulary projection chosen on a CPU.

References: tiktoken built from the same vocab.json (ids of the concatenated files), Counter over the
ids (coverage, most frequent ids), a second process (the cache lock)."""

from __future__ import annotations

import builtins
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import tiktoken
import torch

from typedlm.errors import DataFileError
from typedlm.tokenizers import GPT2BPE, ByteTokenizer, CharTokenizer, LocalTokenizer, gpt2_files
from typedlm.tokenizers import corpus_cache as cc
from typedlm.tokenizers.byte_level import CHAR_TO_BYTE
from typedlm.tokenizers.pretokenize import GPT2_PATTERN
from typedlm.training import split_tokens
from typedlm.training.corpus import Corpus, CorpusError, find_corpus_files, load_corpus
from typedlm.training.text_data import (
    DEFAULT_LOCAL_VOCAB,
    _first_chars,
    choose_local_vocab,
    corpus_alphabet,
    corpus_source,
    encode_text,
    prepare_text_data,
)

GPT2 = GPT2BPE.from_vendored()
EOT = "<|endoftext|>"


def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's gpt2 encoding, built offline from the vendored vocab.json."""
    vocab: dict[str, int] = json.loads(gpt2_files()[0].read_text(encoding="utf-8"))
    ranks = {bytes(CHAR_TO_BYTE[char] for char in token): rank for token, rank in vocab.items() if token != EOT}
    return tiktoken.Encoding("gpt2-files", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


TIKTOKEN = tiktoken_gpt2()

# File boundaries that the pre-tokenizer would not cut at: "\n" + "\n", "word" + "word", " " + "x".
DOCUMENTS = {
    "a.txt": "First document.\nIt ends with a newline\n",
    "b.txt": "\n\nstarts with blank lines and ends mid-word: hello",
    "sub/c.txt": "world, continued across the file boundary; café 中文 😀 it's " + EOT + " next\n",
    "sub/d.txt": "",  # an empty file adds nothing
    "e.txt": " leading space and trailing spaces   ",
    "f.txt": "x" * 300 + "\n" + "Lorem ipsum dolor sit amet, " * 40,
}


def write_corpus(root: Path) -> str:
    """The documents under ``root`` (plus a hidden file that is left out); their concatenation in path order."""
    for name, text in DOCUMENTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8", newline="")
    (root / ".hidden.txt").write_text("not part of the corpus")
    return "".join(DOCUMENTS[name] for name in sorted(DOCUMENTS, key=lambda n: str(root / n)))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_folder_and_a_glob_give_the_ids_of_the_concatenated_files(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "books"
    text = write_corpus(root)
    expected = TIKTOKEN.encode(text, allowed_special="all")
    folder = find_corpus_files(root, allow_small=True)
    assert [f.relative_to(root).as_posix() for f in folder.files] == ["a.txt", "b.txt", "e.txt", "f.txt", "sub/c.txt",
                                                                      "sub/d.txt"]  # fmt: skip
    ids = cc.token_cache(folder.files, GPT2, cache_dir=tmp_path / "c1", workers=workers, chunk_bytes=7, progress=False)
    assert ids.tokens.tolist() == expected
    assert ids.counts.tolist() == np.bincount(expected, minlength=GPT2.vocab_size).tolist()
    pattern = find_corpus_files(f"{root}/**/*.txt", allow_small=True)
    assert pattern.files == folder.files
    assert encode_text(pattern, GPT2, cache_dir=tmp_path / "c2").tolist() == expected
    spans = cc.corpus_spans(folder.files, 7)
    assert len(spans) > 20 and any(len({i for i, _, _ in span}) > 1 for span in spans)  # cuts inside and across files


def test_max_chars_over_a_folder_reads_whole_characters_and_refuses_what_the_cache_refuses(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    texts = ["Привет, мир\n" * 3, "中文 😀 é\n" * 3]
    for k, text in enumerate(texts):
        (books / f"{k}.txt").write_text(text, encoding="utf-8")
    whole = "".join(texts)
    for max_chars in (1, 20, len(texts[0]) + 5, 10**6):
        source = corpus_source(books, max_chars=max_chars, allow_small=True)
        assert isinstance(source, Corpus) and source.text == whole[:max_chars]
    files = find_corpus_files(books, allow_small=True)
    assert _first_chars(files, 50, block=3) == whole[:50]  # blocks end inside characters
    (books / "2.txt").write_bytes(b"ok line\n" * 20 + "é".encode()[:1])  # ends inside a character
    with pytest.raises(DataFileError, match=re.escape(f"{books / '2.txt'}:21: not valid UTF-8 (byte offset 160)")):
        corpus_source(books, max_chars=10**6, allow_small=True)
    with pytest.raises(DataFileError, match=r"2\.txt:21: not valid UTF-8"):
        cc.token_cache(find_corpus_files(books, allow_small=True).files, ByteTokenizer(), cache_dir=tmp_path / "c",
                       progress=False)  # fmt: skip
    prefix = corpus_source(books, max_chars=len(whole) + 5, allow_small=True)  # the end is not read
    assert isinstance(prefix, Corpus) and prefix.text == whole + "ok li"


def test_corpus_files_refusals_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="empty_dir: is a directory with no text files"):
        find_corpus_files(tmp_path / "empty_dir")
    with pytest.raises(CorpusError, match=r"nothing\*\.txt: no file matches"):
        find_corpus_files(tmp_path / "nothing*.txt")
    (tmp_path / "zero.txt").write_text("")
    with pytest.raises(CorpusError, match=r"zero\.txt: corpus is empty"):
        find_corpus_files(tmp_path / "zero.txt", allow_small=True)
    (tmp_path / "small.txt").write_text("hello\n")
    with pytest.raises(CorpusError, match="--allow-small-data"):
        find_corpus_files(tmp_path / "small.txt")


def test_a_changed_file_invalidates_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "books"
    write_corpus(root)
    corpus = find_corpus_files(root, allow_small=True)
    first = encode_text(corpus, GPT2, cache_dir=tmp_path / "cache").tolist()
    changed = root / "a.txt"
    stat = changed.stat()
    changed.write_text(DOCUMENTS["a.txt"].replace("First", "Other"))  # same size
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    text = "".join(f.read_text(encoding="utf-8") for f in corpus.files)
    again = encode_text(corpus, GPT2, cache_dir=tmp_path / "cache").tolist()
    assert again != first and again == TIKTOKEN.encode(text, allowed_special="all")
    assert len(list((tmp_path / "cache").glob("*.tokens"))) == 2


def test_a_cached_start_reads_no_text_and_encodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"".join(b"line %d of a text that is long enough to be sampled\n" % i for i in range(80_000)))
    expected = cc.token_cache(big, ByteTokenizer(), cache_dir=tmp_path / "cache", progress=False).tokens.tolist()
    read = Counter[str]()

    class CountingFile:
        def __init__(self, file: IO[bytes]) -> None:
            self._file = file

        def read(self, size: int = -1) -> bytes:
            data = self._file.read(size)
            read[self._file.name] += len(data)
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self._file, name)

        def __enter__(self) -> CountingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._file.close()

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> CountingFile:
        return CountingFile(builtins.open(path, *args, **kwargs))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached start encoded the text")

    monkeypatch.setattr(cc, "open", counting_open, raising=False)
    monkeypatch.setattr(cc, "_encoded_spans", never)
    monkeypatch.setattr(cc, "_check_utf8", never)
    cached = cc.token_cache(big, ByteTokenizer(), cache_dir=tmp_path / "cache", progress=False)
    assert isinstance(cached.tokens, np.memmap) and cached.tokens.tolist() == expected
    assert read[str(big)] <= cc.SAMPLE_BUDGET < big.stat().st_size / 3  # only the key's samples


class SlowRecordingBPE(GPT2BPE):
    """GPT-2 BPE that records which process encodes, slowly enough for two processes to overlap."""

    log: Path

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        return super().encode(text, **kwargs)


def _rank(tokenizer: SlowRecordingBPE, corpus: Path, cache: Path, start: Any, out: Any) -> None:
    start.wait()
    ids = cc.token_cache(corpus, tokenizer, cache_dir=cache, workers=1, chunk_bytes=200, progress=False)
    out.put(ids.tokens.tolist())


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_two_processes_one_writer_the_other_waits_and_maps(tmp_path: Path) -> None:
    root = tmp_path / "books"
    text = write_corpus(root)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8", newline="")
    tokenizer = SlowRecordingBPE.from_vendored()
    assert isinstance(tokenizer, SlowRecordingBPE)
    tokenizer.log = tmp_path / "encoders.log"
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(2), context.Queue()
    ranks = [context.Process(target=_rank, args=(tokenizer, corpus, tmp_path / "cache", start, out)) for _ in range(2)]
    for rank in ranks:
        rank.start()
    results = [out.get(timeout=120) for _ in ranks]
    for rank in ranks:
        rank.join(timeout=60)
        assert rank.exitcode == 0
    expected = TIKTOKEN.encode(text, allowed_special="all")
    assert results == [expected, expected]
    encoders = set(tokenizer.log.read_text().split())
    assert len(encoders) == 1 and tokenizer.log.read_text().count("\n") > 3  # one process built it, in chunks
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no temporary file left


def test_the_default_projection_on_a_cpu_and_the_full_head_on_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_local_vocab(GPT2, cpu) == DEFAULT_LOCAL_VOCAB
    assert choose_local_vocab(GPT2, cuda) is None
    assert choose_local_vocab(GPT2, cpu, full=True) is None
    assert choose_local_vocab(GPT2, cuda, requested=300) == 300
    assert choose_local_vocab(ByteTokenizer(), cpu) is None  # 256 ids: nothing to project


def test_local_vocabulary_keeps_the_most_frequent_ids_and_reports_their_coverage() -> None:
    corpus = load_corpus(None, max_chars=200_000)
    data = prepare_text_data(corpus, GPT2, 500)
    base = TIKTOKEN.encode(corpus.text, allowed_special="all")
    frequency = Counter(base)
    assert isinstance(data.tokenizer, LocalTokenizer) and data.tokenizer.vocab_size == 500
    kept = set(data.tokenizer.vocab.base_ids)
    best = sum(count for _, count in frequency.most_common(499))
    assert sum(frequency[i] for i in kept) == best  # no choice of 499 ids covers more
    assert data.coverage == pytest.approx(best / len(base)) and data.distinct == len(frequency)
    expected = [data.tokenizer.vocab.base_ids.index(i) + 1 if i in kept else 0 for i in base]
    assert data.tokens.tolist() == expected
    note = data.projection_note()
    assert note is not None and f"{100 * best / len(base):.2f}%" in note and f"{len(frequency):,} distinct" in note


def test_the_projection_of_a_corpus_on_disk_is_cached_and_split_without_copying(tmp_path: Path) -> None:
    root = tmp_path / "books"
    text = write_corpus(root)
    corpus = find_corpus_files(root, allow_small=True)
    data = prepare_text_data(corpus, GPT2, 40, cache_dir=tmp_path / "cache")
    assert isinstance(data.tokens, np.memmap) and isinstance(data.tokenizer, LocalTokenizer)
    base = TIKTOKEN.encode(text, allowed_special="all")
    assert data.tokenizer.vocab.to_base(data.tokens, oov=-1).tolist() == [
        i if i in data.tokenizer.vocab.base_ids else -1 for i in base
    ]
    assert len(list((tmp_path / "cache").glob("*.local40-*.tokens"))) == 1
    train, val = split_tokens(data.tokens, 0.1)
    assert np.shares_memory(train, data.tokens) and np.shares_memory(val, data.tokens)
    assert isinstance(train, np.memmap) and len(train) + len(val) == len(base)


def test_the_char_alphabet_is_streamed(tmp_path: Path) -> None:
    root = tmp_path / "books"
    text = write_corpus(root)
    corpus = find_corpus_files(root, allow_small=True)
    alphabet = corpus_alphabet(corpus, block=5)  # blocks that cut multi-byte characters
    assert alphabet == "".join(sorted(set(text)))
    chars = CharTokenizer(alphabet)
    assert chars.decode(encode_text(corpus, chars, cache_dir=tmp_path / "cache")) == text


MEMORY_PROBE = """
import resource, sys, random
from pathlib import Path
from typedlm.tokenizers import GPT2BPE
from typedlm.tokenizers.corpus_cache import token_cache
root, mb = Path(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 10))) for _ in range(50_000)]
root.mkdir(parents=True)
for doc in range(mb):
    lines = [" ".join(rng.choices(words, k=14)) for _ in range((1 << 20) // 100)]
    (root / f"doc{doc:04d}.txt").write_text("\\n".join(lines) + "\\n")
tok = GPT2BPE.from_vendored()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cache = token_cache(sorted(root.iterdir()), tok, cache_dir=root.parent / "cache", workers=2, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(len(cache.tokens), (after - before) // 1024, children // 1024)
"""


@pytest.mark.slow
def test_building_the_cache_of_a_50_mb_corpus_takes_bounded_memory(tmp_path: Path) -> None:
    def probe(mb: int) -> tuple[int, int, int]:
        done = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / f"c{mb}" / "docs"), str(mb)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
        )  # fmt: skip
        tokens, parent_growth, worker_peak = (int(x) for x in done.stdout.split())
        return tokens, parent_growth, worker_peak

    small, large = probe(5), probe(50)
    assert large[0] > 9 * small[0]  # ten times the text
    # Reading the text whole would hold >= 50 MB of bytes + 50 MB of str + ~400 MB of Python ids.
    assert large[1] < 60, f"the writer grew by {large[1]} MB"
    assert large[2] < small[2] + 60, f"a worker peaked at {large[2]} MB (vs {small[2]} MB for 5 MB)"
