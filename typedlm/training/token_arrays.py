"""A token array of any size read at constant memory and time: its id check and its fingerprint.

A corpus's ids come as a 1-D numpy array, often a ``np.memmap`` of the token cache (or of nanoGPT's
``train.bin``) far larger than what a training step reads. Whatever reads all of it keeps its pages
mapped into the process (its resident memory grows with the corpus), and whatever reads all of it at
start makes the start grow with the corpus. So:

- `check_token_array` trusts the token cache's header for the id range (constant time), and scans any
  other array in blocks, releasing a memmap's pages after each;
- `token_fingerprint` hashes an array whole only up to `FULL_HASH_BYTES`; a larger one is identified
  by its length, dtype, the cache's checksum of all its ids when it is a cache, and evenly spaced
  samples (`SAMPLED_BLOCKS` blocks), in constant time;
- both release a memmap's pages (`typedlm.memmap.release_pages`) after every read, as the batch sampler
  does after each batch (nanoGPT re-opens its memmap every batch for the same reason): one read of a
  file just written can map megabytes (a large folio of the page cache), so a few hundred scattered
  reads would otherwise map most of a corpus into the process.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

from typedlm.errors import ShapeError
from typedlm.memmap import release_pages
from typedlm.tokenizers.corpus_cache import cache_content

Tokens = npt.NDArray[np.integer[Any]]
"""A 1-D array of token ids (uint8/uint16/int32/int64; a ``np.memmap`` works too)."""

FULL_HASH_BYTES = 64 << 20
"""Token arrays up to this many bytes in all are fingerprinted whole (sha256 of every id)."""
SAMPLED_BLOCKS = 256
"""Blocks of `SAMPLED_BLOCK_IDS` ids a larger array's fingerprint reads."""
SAMPLED_BLOCK_IDS = 1024
_SCAN_BLOCK_IDS = 1 << 24


def check_token_array(tokens: object, vocab: int, name: str) -> None:
    """Refuse token data that is not a 1-D integer array of ids in ``0..vocab-1`` (a ShapeError naming
    the first id outside the vocabulary). A token cache whose vocabulary fits is not read at all."""
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 1:
        found = f"shape {tokens.shape}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise ShapeError(f"train(): {name} must be a 1-D numpy array of token ids, got {found}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ShapeError(f"train(): {name} must hold integer token ids, got dtype {tokens.dtype}")
    if len(tokens) == 0:
        return
    unsigned = np.issubdtype(tokens.dtype, np.unsignedinteger)
    if unsigned and np.iinfo(tokens.dtype).max < vocab:
        return  # every value the dtype holds is an id (uint16 tokens, a vocabulary above 65,535)
    cache = cache_content(tokens)
    if cache is not None and cache.vocab_size <= vocab:
        return  # the cache's ids are its tokenizer's, all below its vocabulary size
    for start in range(0, len(tokens), _SCAN_BLOCK_IDS):
        block = tokens[start : start + _SCAN_BLOCK_IDS]
        low, high = 0 if unsigned else int(block.min()), int(block.max())
        release_pages(tokens)
        if low < 0 or high >= vocab:
            index = start + int(np.argmax((block < 0) | (block >= vocab)))
            for later in range(start + _SCAN_BLOCK_IDS, len(tokens), _SCAN_BLOCK_IDS):  # the largest id of all
                high = max(high, int(tokens[later : later + _SCAN_BLOCK_IDS].max()))
                release_pages(tokens)
            raise ShapeError(
                f"train(): {name}[{index}] is token id {int(tokens[index])}, outside the model's vocabulary "
                f"0..{vocab - 1} (CausalConfig.vocab={vocab}): build the model with vocab >= {high + 1}, or "
                "project the tokens onto a smaller local vocabulary (--local-vocab)"
            )


def token_fingerprint(*arrays: Tokens) -> str:
    """A hex digest of ``arrays`` that a resumed run compares: sha256 of every id (`full_token_fingerprint`)
    up to `FULL_HASH_BYTES` in all; above, ``"sampled:"`` and a sha256 of each array's dtype and length,
    its token cache's checksum (when it is a cache or a view of one) and `SAMPLED_BLOCKS` evenly spaced
    blocks of ids — constant time, and it tells apart different splits of one cache."""
    if sum(a.nbytes for a in arrays) <= FULL_HASH_BYTES:
        return full_token_fingerprint(*arrays)
    digest = hashlib.sha256(b"typedlm sampled token fingerprint v1\0")
    for tokens in arrays:
        digest.update(f"{tokens.dtype}\0{len(tokens)}\0".encode())
        cache = cache_content(tokens)
        digest.update(cache.checksum if cache is not None else b"")
        last = max(len(tokens) - SAMPLED_BLOCK_IDS, 0)
        for start in np.linspace(0, last, SAMPLED_BLOCKS, dtype=np.int64).tolist():
            digest.update(np.ascontiguousarray(tokens[start : start + SAMPLED_BLOCK_IDS]).data)
            release_pages(tokens)  # one read can map a whole large folio (MBs) of a freshly written file
    return "sampled:" + digest.hexdigest()


def full_token_fingerprint(*arrays: Tokens) -> str:
    """sha256 of every array's dtype and ids, in order (the fingerprint of small arrays, and of every
    array in checkpoints written before sampled fingerprints)."""
    digest = hashlib.sha256()
    for tokens in arrays:
        digest.update(str(tokens.dtype).encode())
        for start in range(0, len(tokens), _SCAN_BLOCK_IDS):
            digest.update(np.ascontiguousarray(tokens[start : start + _SCAN_BLOCK_IDS]).data)
            release_pages(tokens)
    return digest.hexdigest()
