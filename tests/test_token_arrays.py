"""A token array of any size at constant memory and time: the id check, the fingerprint, the pages.

References: hashlib over the arrays' bytes (the fingerprint checkpoints have always stored), numpy's own
search for the first bad id, and /proc's count of the file pages mapped into the process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import typedlm as tl
from typedlm.memmap import release_pages
from typedlm.tokenizers import ByteTokenizer
from typedlm.tokenizers.corpus_cache import cache_content, token_cache
from typedlm.training import token_arrays
from typedlm.training.batches import TokenWindows, sample_windows, split_tokens
from typedlm.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from typedlm.training.token_arrays import (
    check_token_array,
    full_token_fingerprint,
    token_fingerprint,
)
from typedlm.training.trainer import TrainConfig, train

TEXT = "".join(f"line {i}: the quick brown fox {i * 7919 % 1000} jumps over the lazy dog.\n" for i in range(3000))


def _cache(tmp_path: Path, text: str = TEXT) -> np.ndarray[Any, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    return token_cache(corpus, ByteTokenizer(), cache_dir=tmp_path / "cache", progress=False).tokens


def _plain_sha256(*arrays: np.ndarray[Any, Any]) -> str:
    digest = hashlib.sha256()
    for tokens in arrays:
        digest.update(str(tokens.dtype).encode() + tokens.tobytes())
    return digest.hexdigest()


def test_the_full_fingerprint_is_the_sha256_checkpoints_have_always_stored(tmp_path: Path) -> None:
    train_ids, val_ids = split_tokens(_cache(tmp_path), 0.1)
    assert full_token_fingerprint(train_ids, val_ids) == _plain_sha256(train_ids, val_ids)
    ints = np.arange(10_000, dtype=np.int32)[::3]  # a strided view hashes as its ids
    assert full_token_fingerprint(ints) == _plain_sha256(np.ascontiguousarray(ints))
    assert token_fingerprint(train_ids, val_ids) == _plain_sha256(train_ids, val_ids)  # small: hashed whole


def test_a_large_arrays_fingerprint_is_sampled_and_still_tells_data_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_arrays, "FULL_HASH_BYTES", 0)
    tokens = _cache(tmp_path)
    train_ids, val_ids = split_tokens(tokens, 0.1)
    sampled = token_fingerprint(train_ids, val_ids)
    assert sampled.startswith("sampled:") and sampled == token_fingerprint(*split_tokens(tokens, 0.1))
    assert sampled != token_fingerprint(*split_tokens(tokens, 0.2))  # another split of one cache
    assert sampled != token_fingerprint(tokens[1:-1], val_ids)  # shifted by one id
    copy = np.array(train_ids)
    assert token_fingerprint(copy, val_ids) != sampled  # not the cache: its checksum is not vouched for
    copy[0] += 1
    assert token_fingerprint(copy, val_ids) != token_fingerprint(np.array(train_ids), val_ids)
    assert token_fingerprint(copy.astype(np.int32), val_ids) != token_fingerprint(copy, val_ids)
    # a cache of other text (one character changed mid-corpus, same length) is told apart by its checksum
    middle = len(TEXT) // 2 + 3
    edited = TEXT[:middle] + ("x" if TEXT[middle] != "x" else "y") + TEXT[middle + 1 :]
    other = _cache(tmp_path / "other", edited)
    assert len(other) == len(tokens) and token_fingerprint(*split_tokens(other, 0.1)) != sampled


def test_the_cache_header_bounds_the_ids_and_other_arrays_are_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = _cache(tmp_path)
    content = cache_content(tokens[10:100])  # a view of the cache finds its header
    assert content is not None and content.vocab_size == ByteTokenizer().vocab_size
    assert cache_content(np.array(tokens)) is None and cache_content(np.zeros(3, np.uint16)) is None
    monkeypatch.setattr(token_arrays, "_SCAN_BLOCK_IDS", 1000)  # many blocks
    ids = np.array(tokens, dtype=np.int64)
    for bad_at, bad in ((0, 300), (4321, -1), (len(ids) - 1, 256)):
        broken = ids.copy()
        broken[bad_at] = bad
        first = int(np.flatnonzero((broken < 0) | (broken >= 256))[0])
        with pytest.raises(tl.ShapeError, match=rf"train\(\): t\[{first}\] is token id {bad}, outside .* 0\.\.255"):
            check_token_array(broken, 256, "t")
    check_token_array(ids, 256, "t")
    scanned: list[int] = []
    monkeypatch.setattr(token_arrays, "release_pages", lambda t: scanned.append(len(t)))
    check_token_array(tokens, content.vocab_size, "t")  # the cache's header bounds its ids: nothing read
    assert scanned == []
    check_token_array(np.array(tokens), content.vocab_size, "t")  # the same ids, not a cache: scanned
    assert len(scanned) == -(-len(tokens) // 1000)


def _file_pages_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_reading_a_memmapped_corpus_whole_or_by_batches_keeps_its_pages_out_of_the_process(tmp_path: Path) -> None:
    path = tmp_path / "train.bin"
    rng = np.random.default_rng(0)
    rng.integers(0, 4000, size=48 << 20, dtype=np.uint16).tofile(path)  # 96 MB, nanoGPT's train.bin layout
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    before = _file_pages_mb()
    check_token_array(tokens, 4096, "train_tokens")
    full_token_fingerprint(tokens)
    for step in range(200):
        sample_windows(tokens, batch=8, seq_len=256, seed=0, step=step)
    assert _file_pages_mb() - before < 24  # without release_pages: the file's 96 MB
    np.asarray(tokens[::4096]).max()  # the same reads without releasing: the pages stay
    assert _file_pages_mb() - before > 48
    release_pages(tokens)
    assert _file_pages_mb() - before < 24


CFG = tl.CausalConfig(batch=4, seq_len=16, vocab=300, heads=2, head_dim=8, ffn_hidden=32, layers=1)
TC = TrainConfig(steps=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, eval_every=0, log_every=1, device="cpu", progress=False)


def test_a_checkpoint_hashed_whole_resumes_under_the_sampled_fingerprint_and_other_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_ids, val_ids = split_tokens(_cache(tmp_path), 0.1)
    out = tmp_path / "run"
    train(tl.models.GPT2(CFG), CFG, train_ids, val_ids, dataclasses.replace(TC, steps=2), out_dir=out)
    found = find_checkpoint(out)
    assert found is not None and load_checkpoint(found).state["data_hash"] == _plain_sha256(train_ids, val_ids)
    monkeypatch.setattr(token_arrays, "FULL_HASH_BYTES", 0)  # this data is now "large"
    log = train(tl.models.GPT2(CFG), CFG, train_ids, val_ids, TC, out_dir=out, resume=True)
    assert [s.step for s in log.steps] == [0, 1, 2, 3]
    found = find_checkpoint(out)
    assert found is not None
    assert (
        load_checkpoint(found).state["data_hash"]
        == TokenWindows(train_ids, val_ids, batch=CFG.batch, seq_len=CFG.seq_len, seed=TC.seed).fingerprint()
    )
    middle = len(TEXT) // 2 + 3
    edited = TEXT[:middle] + ("x" if TEXT[middle] != "x" else "y") + TEXT[middle + 1 :]  # same length
    other_train, other_val = split_tokens(_cache(tmp_path / "other", edited), 0.1)
    with pytest.raises(CheckpointError, match="data_hash was 'sampled:"):
        train(
            tl.models.GPT2(CFG), CFG, other_train, other_val, dataclasses.replace(TC, steps=6), out_dir=out, resume=True
        )


def test_only_the_caches_own_map_of_its_ids_is_vouched_for_by_its_header(tmp_path: Path) -> None:
    tokens = _cache(tmp_path)
    path = str(getattr(tokens, "filename"))  # noqa: B009 (np.memmap's attribute; the array type lacks it)
    vocab = ByteTokenizer().vocab_size
    whole_file = np.memmap(path, dtype=np.uint16, mode="r")  # nanoGPT-style: the header read as ids
    with_trailer = np.memmap(path, dtype=np.uint16, mode="r", offset=128)  # the per-id counts read as ids
    writable = np.memmap(path, dtype=np.uint16, mode="r+", offset=128, shape=tokens.shape)
    for other in (whole_file, with_trailer, writable):
        assert cache_content(other) is None
    assert cache_content(tokens[5:50]) is not None and cache_content(tokens[::2]) is not None
    with pytest.raises(tl.ShapeError, match="outside the model's vocabulary"):
        check_token_array(whole_file, vocab, "train_tokens")  # scanned, so the header's bytes are found
    del writable


def test_the_out_of_vocabulary_message_asks_for_the_largest_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_arrays, "_SCAN_BLOCK_IDS", 100)
    ids = np.zeros(1000, dtype=np.int64)
    ids[10], ids[500] = 300, 5000
    with pytest.raises(tl.ShapeError, match=r"t\[10\] is token id 300, .* vocab >= 5001"):
        check_token_array(ids, 256, "t")


def test_resuming_different_data_under_a_sampled_fingerprint_reads_no_full_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_arrays, "FULL_HASH_BYTES", 0)
    train_ids, val_ids = split_tokens(_cache(tmp_path), 0.1)
    out = tmp_path / "run"
    train(tl.models.GPT2(CFG), CFG, train_ids, val_ids, dataclasses.replace(TC, steps=2), out_dir=out)
    full_reads: list[int] = []

    def full_fingerprint(self: TokenWindows) -> str:
        full_reads.append(1)
        return ""

    monkeypatch.setattr(TokenWindows, "full_fingerprint", full_fingerprint)
    edited = np.array(train_ids)
    edited[7] += 1
    with pytest.raises(CheckpointError, match="data_hash was 'sampled:"):
        train(tl.models.GPT2(CFG), CFG, edited, val_ids, dataclasses.replace(TC, steps=3), out_dir=out, resume=True)
    assert full_reads == []  # the checkpoint's hash is a sampled one: reading every id could not match it
