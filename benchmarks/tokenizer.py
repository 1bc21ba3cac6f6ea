"""GPT-2 BPE encoding speed: typedlm against tiktoken, HF tokenizers and GPT-2's pure-Python algorithm.

Peers, all built offline from the same vocab.json + merges.txt and run on the same English text
(../shared/data/tinyshakespeare.txt, or typedlm's embedded Shakespeare if that is absent), one thread:

- ``typedlm``: `typedlm.tokenizers.GPT2BPE`, ``encode_ordinary``;
- ``tiktoken``: ``tiktoken.Encoding`` from the byte-decoded vocab.json and GPT-2's pattern;
- ``HF tokenizers``: ``transformers.GPT2TokenizerFast`` (Rust), ``TOKENIZERS_PARALLELISM=false``;
- ``reference``: GPT-2's encoder.py algorithm re-written below (pair ranks, per-word cache).

"cold" is the first encode by a freshly built tokenizer (its caches empty; building it is the "load"
column), "warm" a later encode of the same text by the same object. Each row is the best of
``--repeats`` runs, peers interleaved so machine noise hits all alike. Throughput is UTF-8 MB
(10^6 bytes) per second. Then ``encode_corpus`` puts a >= 100 MiB file (the text repeated) into a
fresh token cache with ``--workers`` processes, and opens it again from the cache; its ids are checked
against tiktoken's ids of the text, repeated.

Run: ``python -m benchmarks.tokenizer`` (about a minute) or ``--corpus-mib 0`` to skip the corpus.
Targets (issue 3): typedlm cold >= 2 MB/s and >= 0.25x tiktoken, warm >= 5 MB/s, 100 MiB <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import regex
import tiktoken

from typedlm.tokenizers import GPT2BPE, encode_corpus, gpt2_files
from typedlm.tokenizers.byte_level import BYTE_TO_CHAR, CHAR_TO_BYTE
from typedlm.tokenizers.pretokenize import GPT2_PATTERN

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
EMBEDDED_TEXT = ROOT / "typedlm" / "data" / "shakespeare.txt.gz"
EOT = "<|endoftext|>"

Encode = Callable[[str], list[int]]


class ReferenceBPE:
    """GPT-2's encoder.py algorithm: merge every copy of the best-ranked bigram, cache per word."""

    def __init__(self, vocab_json: Path, merges_txt: Path) -> None:
        self.encoder: dict[str, int] = json.loads(vocab_json.read_text(encoding="utf-8"))
        rules = [tuple(line.split(" ")) for line in merges_txt.read_text(encoding="utf-8").split("\n")[1:] if line]
        self.ranks = {(rule[0], rule[1]): rank for rank, rule in enumerate(rules)}
        self.pattern = regex.compile(GPT2_PATTERN)
        self.cache: dict[str, list[str]] = {}

    def bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            first, second = min(pairs, key=lambda pair: self.ranks.get(pair, math.inf))
            if (first, second) not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self.pattern.findall(text):
            word = "".join(BYTE_TO_CHAR[byte] for byte in piece.encode("utf-8"))
            if word not in self.cache:
                self.cache[word] = self.bpe(word)
            ids.extend(self.encoder[token] for token in self.cache[word])
        return ids


def build_tiktoken(vocab_json: Path) -> tiktoken.Encoding:
    vocab: dict[str, int] = json.loads(vocab_json.read_text(encoding="utf-8"))
    ranks = {bytes(CHAR_TO_BYTE[char] for char in token): rank for token, rank in vocab.items() if token != EOT}
    return tiktoken.Encoding(
        "gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: vocab[EOT]}
    )


def build_hf(vocab_json: Path, merges_txt: Path) -> Encode:
    import inspect

    import transformers

    # transformers exports its classes lazily, so mypy cannot see them: Any is the honest type here.
    fast_class: Any = getattr(transformers, "GPT2TokenizerFast")  # noqa: B009
    # transformers >= 5 takes vocab=/merges= (and silently ignores vocab_file=); 4.x takes vocab_file=/merges_file=.
    if "vocab" in inspect.signature(fast_class.__init__).parameters:
        hf = fast_class(vocab=str(vocab_json), merges=str(merges_txt))
    else:
        hf = fast_class(vocab_file=str(vocab_json), merges_file=str(merges_txt))
    backend = hf.backend_tokenizer

    def encode(text: str) -> list[int]:
        ids: list[int] = backend.encode(text, add_special_tokens=False).ids
        return ids

    return encode


@dataclass
class Peer:
    name: str
    build: Callable[[], Encode]
    load_s: float = math.inf
    cold_s: float = math.inf
    warm_s: float = math.inf
    ids: list[int] = field(default_factory=list)

    def run_once(self, text: str) -> None:
        start = time.perf_counter()
        encode = self.build()
        built = time.perf_counter()
        self.ids = encode(text)
        cold = time.perf_counter()
        encode(text)
        warm = time.perf_counter()
        self.load_s = min(self.load_s, built - start)
        self.cold_s = min(self.cold_s, cold - built)
        self.warm_s = min(self.warm_s, warm - cold)


def read_text(path: Path | None) -> tuple[str, str]:
    if path is not None:
        return path.read_text(encoding="utf-8"), str(path)
    if SHARED_TEXT.exists():
        return SHARED_TEXT.read_text(encoding="utf-8"), str(SHARED_TEXT.relative_to(ROOT.parent))
    with gzip.open(EMBEDDED_TEXT, "rt", encoding="utf-8") as file:
        return file.read(), str(EMBEDDED_TEXT.relative_to(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, default=None, help="UTF-8 text to encode (default: Tiny Shakespeare)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus-mib", type=int, default=100, help="corpus cache size to time; 0 skips it")
    parser.add_argument("--workers", type=int, default=2, help="processes for the corpus cache")
    args = parser.parse_args()

    vocab_json, merges_txt = gpt2_files()
    text, text_name = read_text(args.text)
    megabytes = len(text.encode("utf-8")) / 1e6

    peers = [
        Peer("typedlm", lambda: GPT2BPE.from_files(vocab_json, merges_txt).encode_ordinary),
        Peer("tiktoken", lambda: build_tiktoken(vocab_json).encode_ordinary),
        Peer("HF tokenizers", lambda: build_hf(vocab_json, merges_txt)),
        Peer("reference (encoder.py)", lambda: ReferenceBPE(vocab_json, merges_txt).encode),
    ]
    for round_no in range(args.repeats):
        for peer in peers[round_no % len(peers) :] + peers[: round_no % len(peers)]:
            peer.run_once(text)
    tiktoken_peer = peers[1]
    truth = tiktoken_peer.ids

    rows: list[tuple[str, str, str, str, str, str]] = []
    for peer in peers:
        rows.append(
            (
                peer.name,
                f"{peer.load_s:.2f}",
                f"{megabytes / peer.cold_s:.2f}",
                f"{megabytes / peer.warm_s:.2f}",
                f"{tiktoken_peer.cold_s / peer.cold_s:.2f}x",
                "yes" if peer.ids == truth else f"NO ({len(peer.ids)} ids)",
            )
        )
    ratio_cold = tiktoken_peer.cold_s / peers[0].cold_s

    if args.corpus_mib > 0:
        rows += corpus_rows(text, truth, args.corpus_mib, args.workers)

    header = ("case", "load s", "cold MB/s", "warm MB/s", "speed vs tiktoken (cold)", "ids = tiktoken")
    print(f"GPT-2 BPE on {text_name} ({megabytes:.2f} MB), one thread; best of {args.repeats}")
    print_table(header, rows)
    print(
        f"\ntargets: typedlm cold {megabytes / peers[0].cold_s:.2f} MB/s (>= 2) and {ratio_cold:.2f}x tiktoken "
        f"(>= 0.25); warm {megabytes / peers[0].warm_s:.2f} MB/s (>= 5)"
    )


def corpus_rows(text: str, truth: list[int], mib: int, workers: int) -> list[tuple[str, str, str, str, str, str]]:
    """Time encode_corpus on a file of ``mib`` MiB or more (the text repeated), cold and reused."""
    data = text.encode("utf-8")
    repeats = math.ceil(mib * 2**20 / len(data))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(data * repeats)
        size_mb = path.stat().st_size / 1e6
        tokenizer = GPT2BPE.from_vendored()
        start = time.perf_counter()
        ids = encode_corpus(path, tokenizer, cache_dir=Path(tmp) / "cache", workers=workers, progress=False)
        built = time.perf_counter() - start
        start = time.perf_counter()
        again = encode_corpus(path, tokenizer, cache_dir=Path(tmp) / "cache", workers=workers, progress=False)
        reused = time.perf_counter() - start
        # Text ending in "<non-space>\n" repeats without changing its pieces, so its ids repeat too.
        expected = np.tile(np.asarray(truth, dtype=np.uint16), repeats)
        same = bool(np.array_equal(ids, expected)) and bool(np.array_equal(again, expected))
        verdict = "yes" if same else "NO"
        del ids, again
    name = f"encode_corpus {size_mb / 1.048576:.0f} MiB, {workers} procs"
    return [
        (f"{name}: build cache", "", f"{size_mb / built:.2f} ({built:.1f} s)", "", "", verdict),
        (f"{name}: reuse cache", "", "", f"{size_mb / reused:.0f} ({reused:.2f} s)", "", verdict),
    ]


def print_table(header: tuple[str, ...], rows: list[tuple[str, str, str, str, str, str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
