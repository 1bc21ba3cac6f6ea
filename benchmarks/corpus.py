"""A corpus at constant memory: building the token cache, and starting from it, against nanoGPT's
prepare-then-memmap.

Corpus: generated, realistic-looking English-like text (a fixed seed): 60,000 distinct words drawn
with Zipf frequencies into 300,000 distinct sentences, assembled into documents of 20–400 sentences
with paragraph breaks, about 1 MB of documents per file in one folder. Never one small file repeated:
the tokenizer's piece cache sees a realistic spread of words. ``--data-file`` measures a corpus of
your own instead (a file, a folder or a glob).

Peers, side by side, each step in a fresh process (so peak RSS is that step's alone):

- ``typedlm``: `typedlm.tokenizers.token_cache` over the files with GPT-2 BPE (typedlm's own
  tokenizer), one worker process per core, streamed into a uint16 cache; the cached start is
  ``token_cache`` again (its key from file sizes, times and sampled content, then a memmap) and a
  train/val split by offset;
- ``nanoGPT``: nanoGPT's ``prepare.py`` approach written here: tiktoken's ``encode_ordinary`` over
  each document file (a pool of one process per core, an end-of-text id after each, as in its
  OpenWebText recipe), the ids appended to a ``np.uint16`` ``.bin``; the start is ``np.memmap`` of it.

Training rows, also each in a fresh process: `TRAIN_STEPS` steps of a small model from the cached
corpus — typedlm's ``train()`` (on the local vocabulary, text_gpt2's CPU default) against nanoGPT's
``get_batch`` (a new memmap every batch) in a plain loop — time from the start to the first step done,
steps/s, and peak RSS: the memory a whole run on the corpus takes must not grow with it.

Columns: MB/s of cache building (corpus bytes / wall time, 10^6 bytes), tokens/s, and peak RSS (the
largest of the process and its workers); the start's wall time (from after the imports to the first
batch of windows read) and its peak RSS. Targets (issue 12): build >= 8 MB/s on 2 cores; a cached start
<= 2 s; peak RSS <= 1.5 GB, not growing with the corpus.

Run: ``python -m benchmarks.corpus`` (100 MB; a few minutes on 2 cores), ``--sizes 100 1000``, or
``--data-file PATH``. Generated corpora are kept in ``--work`` (default: the temp folder) for reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SEED = 1234
COMMON = (
    "the of and to a in that is was he for it with as his on be at by I had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any my "
    "now such like our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very make world "
    "still own see men work long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three"
).split()
FILE_BYTES = 1 << 20


def generate_corpus(folder: Path, megabytes: int) -> None:
    """``megabytes`` MB of generated English-like documents in ~1 MB files under ``folder`` (fixed seed)."""
    rng = np.random.default_rng(SEED)
    syllables = [a + b for a in ("", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "th", "w")
                 for b in ("a", "e", "i", "o", "u", "ea", "ou", "an", "er", "in", "on", "st", "ing", "ed")]  # fmt: skip
    counts, parts = rng.integers(1, 5, size=200_000).tolist(), rng.integers(0, len(syllables), size=(200_000, 4))
    candidates = ("".join(syllables[k] for k in row[:n]) for n, row in zip(counts, parts.tolist(), strict=True))
    words = list(dict.fromkeys(candidates))[:60_000]  # distinct, in order of appearance
    words.sort(key=len)  # frequent words are short (Zipf's law of abbreviation) ...
    common = set(COMMON)
    words = [*COMMON, *(w for w in words if w not in common)][:60_000]  # ... and the commonest are English
    frequency = 1.0 / (np.arange(len(words)) + 2.7) ** 1.07
    picks = rng.choice(len(words), size=300_000 * 16, p=frequency / frequency.sum()).tolist()
    lengths = rng.integers(4, 29, size=300_000).tolist()
    ends = rng.choice([".", ".", ".", "!", "?", ";", ",", ":"], size=300_000).tolist()
    sentences: list[str] = []
    position = 0
    for length, end in zip(lengths, ends, strict=True):
        chosen = [words[i] for i in picks[position : position + length]]
        position = (position + length) % (len(picks) - 30)
        sentences.append(" ".join(chosen).capitalize() + str(end))
    folder.mkdir(parents=True, exist_ok=True)
    written, index = 0, 0
    target = megabytes * 10**6
    while written < target:
        documents: list[str] = []
        size = 0
        while size < FILE_BYTES:
            count = int(rng.integers(20, 400))
            chosen_ids = rng.integers(0, len(sentences), size=count).tolist()
            breaks = (rng.random(count) < 0.2).tolist()
            document = "".join(sentences[i] + ("\n\n" if b else " ") for i, b in zip(chosen_ids, breaks, strict=True))
            documents.append(document.rstrip() + "\n")
            size += len(document)
        text = "\n".join(documents)[: max(0, target - written)]
        (folder / f"doc{index:05d}.txt").write_text(text, encoding="ascii")
        written += len(text)
        index += 1


def measure(kind: str, spec: str, work: Path) -> dict[str, Any]:
    """One step in this process: build, start or train, typedlm or nanoGPT. Returns wall time, tokens, RSS."""
    from typedlm.tokenizers import GPT2BPE
    from typedlm.training.batches import split_tokens
    from typedlm.training.corpus import find_corpus_files
    from typedlm.training.text_data import prepare_text_data

    source = find_corpus_files(spec, allow_small=True)
    cache = work / "cache"
    tokenizer = GPT2BPE.from_vendored()  # loaded before the clock starts: a run needs it to decode anyway
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if kind == "typedlm build":
        shutil.rmtree(cache, ignore_errors=True)
        tokens: Any = prepare_text_data(source, tokenizer, cache_dir=cache).tokens
    elif kind == "typedlm start":
        tokens = prepare_text_data(source, tokenizer, cache_dir=cache).tokens
        train, _ = split_tokens(tokens, 0.1)
        _first_batch(train)
    elif kind == "typedlm train":
        data = prepare_text_data(source, tokenizer, LOCAL_VOCAB, cache_dir=cache)  # text_gpt2's CPU default
        tokens = data.tokens
        result = _typedlm_train(data.tokens, data.tokenizer.vocab_size, started)
    elif kind == "nanoGPT build":
        tokens = _nanogpt_prepare(list(source.files), work / "train.bin")
    elif kind == "nanoGPT start":
        tokens = np.memmap(work / "train.bin", dtype=np.uint16, mode="r")
        train = tokens[: int(len(tokens) * 0.9)]
        _first_batch(train)
    else:
        tokens = np.memmap(work / "train.bin", dtype=np.uint16, mode="r")
        result = _nanogpt_train(work / "train.bin", started)
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "tokens": len(tokens), "rss_mb": max(own, workers) / 1024, **result}


LOCAL_VOCAB = 4096
TRAIN_STEPS = 100
TRAIN_SHAPE: dict[str, Any] = dict(layers=2, heads=2, head_dim=16, seq_len=64, batch=8, ffn_hidden=128)
"""The training rows' model: small, so the data side shows (both peers train this shape)."""


def _typedlm_train(tokens: np.ndarray[Any, Any], vocab: int, started: float) -> dict[str, Any]:
    """`typedlm.training.train` for `TRAIN_STEPS` on ``tokens``: seconds to the first step done, steps/s."""
    import typedlm as tl
    from typedlm.training import TrainConfig, split_tokens, train

    train_ids, val_ids = split_tokens(tokens, 0.1)
    cfg = tl.CausalConfig(vocab=vocab, **TRAIN_SHAPE)
    tc = TrainConfig(steps=TRAIN_STEPS, eval_every=0, eval_batches=1, log_every=50, device="cpu", progress=False)
    times: list[float] = []
    train(tl.models.GPT2(cfg), cfg, train_ids, val_ids, tc, on_step=lambda _: times.append(time.perf_counter()))
    return {"first_step": times[0] - started, "steps_per_s": (len(times) - 1) / (times[-1] - times[0])}


def _nanogpt_train(path: Path, started: float) -> dict[str, Any]:
    """nanoGPT's train.py data side: ``get_batch`` re-opens the ``np.memmap`` each batch (its cure for the
    memmap's growing memory), x/y int64 windows; the same model shape, the GPT-2 vocabulary padded to
    50,304 as nanoGPT does, AdamW, a plain loop."""
    import torch

    import typedlm as tl

    cfg = tl.CausalConfig(vocab=50304, **TRAIN_SHAPE)
    model = tl.models.GPT2(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    times: list[float] = []
    for _ in range(TRAIN_STEPS):
        whole = np.memmap(path, dtype=np.uint16, mode="r")
        data = whole[: int(len(whole) * 0.9)]
        ix = rng.integers(0, len(data) - cfg.seq_len - 1, size=cfg.batch)
        x = torch.stack([torch.from_numpy(data[i : i + cfg.seq_len].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + cfg.seq_len].astype(np.int64)) for i in ix])
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter())
    return {"first_step": times[0] - started, "steps_per_s": (len(times) - 1) / (times[-1] - times[0])}


def _first_batch(tokens: np.ndarray[Any, Any]) -> None:
    starts = np.random.default_rng(0).integers(0, len(tokens) - 1025, size=12)
    np.asarray(tokens[starts[:, None] + np.arange(1025)], dtype=np.int64)


def _tiktoken_gpt2() -> Any:
    """tiktoken's gpt2 encoding, built offline from the vendored vocab.json (as the tests do)."""
    import tiktoken

    from typedlm.tokenizers import gpt2_files
    from typedlm.tokenizers.byte_level import CHAR_TO_BYTE
    from typedlm.tokenizers.pretokenize import GPT2_PATTERN

    vocab: dict[str, int] = json.loads(gpt2_files()[0].read_text(encoding="utf-8"))
    eot = "<|endoftext|>"
    ranks = {bytes(CHAR_TO_BYTE[c] for c in token): rank for token, rank in vocab.items() if token != eot}
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={eot: vocab[eot]})


_ENCODING: Any = None


def _nanogpt_encode(path: Path) -> np.ndarray[Any, Any]:
    global _ENCODING
    if _ENCODING is None:
        _ENCODING = _tiktoken_gpt2()
    ids = _ENCODING.encode_ordinary(path.read_text(encoding="utf-8"))
    ids.append(_ENCODING.eot_token)
    return np.array(ids, dtype=np.uint16)


def _nanogpt_prepare(files: list[Path], out: Path) -> np.ndarray[Any, Any]:
    """nanoGPT's prepare.py: encode_ordinary per document in a process pool, uint16 ids into a .bin."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with open(out, "wb") as bin_file, multiprocessing.get_context("fork").Pool(cores) as pool:
        for ids in pool.imap(_nanogpt_encode, files, chunksize=4):
            bin_file.write(ids.tobytes())
    return np.memmap(out, dtype=np.uint16, mode="r")


def run_step(kind: str, spec: str, work: Path) -> dict[str, Any]:
    """``measure`` in a fresh Python process."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.corpus", "--step", kind, "--data-file", spec, "--work", str(work)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100], help="generated corpus sizes in MB")
    parser.add_argument("--data-file", help="measure this corpus (a file, folder or glob) instead")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "typedlm-bench-corpus")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(measure(args.step, args.data_file, args.work)))
        return
    corpora: list[tuple[str, str, Path]] = []
    if args.data_file:
        corpora.append((args.data_file, args.data_file, args.work / "custom"))
    for mb in [] if args.data_file else args.sizes:
        folder = args.work / f"generated-{mb}MB"
        if not (folder / ".complete").exists():
            print(f"generating {mb} MB of text in {folder} ...", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
            generate_corpus(folder / "docs", mb)
            (folder / ".complete").write_text("")
        corpora.append((f"generated {mb} MB", str(folder / "docs"), folder))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    for label, spec, work in corpora:
        from typedlm.training.corpus import find_corpus_files

        size = find_corpus_files(spec, allow_small=True).size
        for peer in ("typedlm", "nanoGPT"):
            build = run_step(f"{peer} build", spec, work)
            start = run_step(f"{peer} start", spec, work)
            if peer == "typedlm":
                run_step("typedlm train", spec, work)  # once, untimed: the local-vocabulary cache is built
            trained = run_step(f"{peer} train", spec, work)
            rows.append((label, peer, size, build, start, trained))
            print(
                f"  {label}, {peer}: built in {build['seconds']:.1f} s, started in {start['seconds']:.2f} s, "
                f"trained {TRAIN_STEPS} steps in {trained['seconds']:.1f} s",
                flush=True,
            )
    print(f"\nToken cache of a corpus (GPT-2 BPE), {cores} cores, load average {os.getloadavg()[0]:.1f}\n")
    print(
        "| corpus            | peer    | build MB/s | build tokens/s | build peak RSS | start  | start peak RSS "
        "| train: first step | steps/s | train peak RSS |"
    )
    print(
        "|-------------------|---------|-----------:|---------------:|---------------:|-------:|---------------:"
        "|------------------:|--------:|---------------:|"
    )
    for label, peer, size, build, start, trained in rows:
        print(
            f"| {label:17s} | {peer:7s} | {size / 1e6 / build['seconds']:10.1f} | "
            f"{build['tokens'] / build['seconds']:14,.0f} | {build['rss_mb']:11,.0f} MB | "
            f"{start['seconds']:5.2f}s | {start['rss_mb']:11,.0f} MB | {trained['first_step']:16.2f}s | "
            f"{trained['steps_per_s']:7.1f} | {trained['rss_mb']:11,.0f} MB |"
        )
    print(
        f"\nTraining rows: {TRAIN_STEPS} steps of {TRAIN_SHAPE} from the cached corpus (typedlm: `train()` on the "
        f"{LOCAL_VOCAB}-id local vocabulary, text_gpt2's CPU default; nanoGPT: its get_batch and a plain loop, "
        "full vocabulary, so its steps/s are of a 12x larger head: compare the memory and the start, not the "
        "speed); first step = from the start (cache opened) to the first step done."
    )
    print("Targets: build >= 8 MB/s on 2 cores; cached start <= 2 s; peak RSS <= 1.5 GB, flat in the corpus size.")


if __name__ == "__main__":
    main()
