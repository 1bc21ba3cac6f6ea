"""The embedded corpus, corpus files and the small-data guard; token windows and batches.

Every kind of unusable corpus file (directory, FIFO, device, unreadable, garbage): tests/test_bad_data_files.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from typedlm.errors import ConfigError
from typedlm.training.batches import TRAIN_STREAM, VAL_STREAM, check_windows, sample_batch, split_tokens
from typedlm.training.corpus import DEFAULT_CORPUS_NAME, MIN_CORPUS_BYTES, CorpusError, default_corpus_text, load_corpus


def test_embedded_corpus_is_the_recorded_shakespeare() -> None:
    import hashlib

    text = default_corpus_text()
    assert len(text) == 2_047_004
    assert hashlib.sha256(text.encode()).hexdigest().startswith("d6a555540c42b218")
    assert "CORIOLANUS" in text[:200]
    assert "To be, or not to be" in text


def test_default_corpus_needs_no_permission_and_can_be_cut() -> None:
    corpus = load_corpus(None, max_chars=1000)
    assert corpus.name == DEFAULT_CORPUS_NAME
    assert len(corpus.text) == 1000


def test_small_file_refused_without_allow_small(tmp_path: Path) -> None:
    f = tmp_path / "tiny.txt"
    f.write_text("hello world\n" * 100)
    with pytest.raises(CorpusError) as e:
        load_corpus(f)
    msg = str(e.value)
    assert str(f) in msg and "--allow-small-data" in msg and f"{MIN_CORPUS_BYTES // 2**20} MiB" in msg
    assert load_corpus(f, allow_small=True).text.startswith("hello world")


def test_bad_corpus_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "missing.txt", allow_small=True)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"line one\nline two caf\xe9\n")
    with pytest.raises(CorpusError, match=r"latin1\.txt:2: corpus is not valid UTF-8 \(.* at byte offset 21\)"):
        load_corpus(bad, allow_small=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(empty, allow_small=True)


def test_a_small_file_reports_what_allow_small_would_not_fix(tmp_path: Path) -> None:
    """Content is checked before size: a small file that is also unusable says why, not 'too small'."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9\n")
    with pytest.raises(CorpusError, match=r"latin1\.txt:1: corpus is not valid UTF-8"):
        load_corpus(bad)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n")
    with pytest.raises(CorpusError, match=r"blank\.txt: corpus holds only whitespace \(5 bytes\)"):
        load_corpus(blank)


def test_a_cut_corpus_keeps_the_first_characters(tmp_path: Path) -> None:
    f = tmp_path / "text.txt"
    f.write_text("héllo wörld\n" * 10, encoding="utf-8")
    whole = load_corpus(f, allow_small=True)
    assert whole.text == f.read_text(encoding="utf-8") and whole.path == f and whole.name == str(f)
    cut = load_corpus(f, allow_small=True, max_chars=7)
    assert cut.text == "héllo w" and cut.path is None


def test_split_keeps_order_and_tail_is_val() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(ConfigError, match="val_fraction"):
        split_tokens(tokens, 1.0)


def test_batches_are_next_token_windows() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = sample_batch(tokens, batch=4, seq_len=16, seed=0, step=3)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # consecutive ids: every target is the next input
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))


def test_batches_are_a_pure_function_of_the_step() -> None:
    tokens = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8)
    a = sample_batch(tokens, batch=8, seq_len=32, seed=1, step=7, micro_step=1, micro_steps=2)
    b = sample_batch(tokens, batch=8, seq_len=32, seed=1, step=7, micro_step=1, micro_steps=2)
    c = sample_batch(tokens, batch=8, seq_len=32, seed=1, step=8, micro_step=1, micro_steps=2)
    v = sample_batch(tokens, batch=8, seq_len=32, seed=1, step=7, micro_step=1, micro_steps=2, stream=VAL_STREAM)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0]) and not torch.equal(a[0], v[0])
    assert TRAIN_STREAM != VAL_STREAM


def test_rank_shards_tile_the_global_batch() -> None:
    tokens = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8)
    whole, _ = sample_batch(tokens, batch=6, seq_len=8, seed=2, step=5)
    shards = [sample_batch(tokens, batch=3, seq_len=8, seed=2, step=5, rank=r, world=2)[0] for r in range(2)]
    assert torch.equal(torch.cat(shards), whole)


def test_too_few_tokens_for_a_window() -> None:
    with pytest.raises(ConfigError, match=r"val split has 8 tokens, fewer than seq_len \+ 1 = 9"):
        check_windows(np.zeros(8, dtype=np.uint8), 8, "val")
    sample_batch(np.zeros(9, dtype=np.uint8), batch=2, seq_len=8, seed=0, step=0)  # exactly one window


def test_memmapped_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(300, dtype=np.uint16).tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    x, y = sample_batch(mm, batch=2, seq_len=10, seed=0, step=0)
    assert torch.equal(y, x + 1)


def test_micro_batches_and_ranks_tile_the_global_batch() -> None:
    tokens = np.random.default_rng(1).integers(0, 256, 5000).astype(np.uint8)
    whole, _ = sample_batch(tokens, batch=8, seq_len=8, seed=3, step=2)
    blocks = [
        sample_batch(tokens, batch=2, seq_len=8, seed=3, step=2, micro_step=m, micro_steps=2, rank=r, world=2)[0]
        for m in range(2)
        for r in range(2)
    ]
    assert torch.equal(torch.cat(blocks), whole)
    with pytest.raises(ConfigError, match="out of range"):
        sample_batch(tokens, batch=2, seq_len=8, seed=3, step=2, micro_step=2, micro_steps=2)
