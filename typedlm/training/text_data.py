"""From a corpus to the token array a model trains on: the tokenizer, the cached encoding, and the
projection onto a compact local vocabulary.

>>> data = prepare_text_data(find_corpus_files("books/"), GPT2BPE.from_vendored(), local_vocab=4096)
>>> train_tokens, val_tokens = split_tokens(data.tokens)     # views of the memory-mapped cache

A corpus on disk (`CorpusFiles`: a file, a folder or a glob) goes through the streamed token cache, so
memory does not grow with its size and a second start maps the cached ids without reading the text; a
text in memory (`Corpus`: the embedded Shakespeare, a ``max_chars`` cut) is encoded directly.

Local vocabulary (TorchLean's projection): the ``local_vocab - 1`` most frequent ids of the corpus keep
an id each, every other id reads as OOV (local id 0). It is the default on a CPU (`choose_local_vocab`),
where a 50,257-way head costs most of a small model's time; on a GPU the default is the full head.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from typedlm.errors import ConfigError
from typedlm.tokenizers import GPT2BPE, ByteTokenizer, LocalTokenizer, LocalVocab, Tokenizer
from typedlm.tokenizers.corpus_cache import MAX_VOCAB, check_utf8, project_token_cache, token_cache
from typedlm.training.corpus import Corpus, CorpusError, CorpusFiles, find_corpus_files, load_corpus
from typedlm.training.token_arrays import Tokens

DEFAULT_LOCAL_VOCAB = 4096
"""The local vocabulary size a CPU run projects onto by default (OOV included)."""


@dataclass(frozen=True)
class TextData:
    """A corpus encoded for training: ``tokens`` (n,) ids of ``tokenizer`` (a memmap for a corpus on
    disk); ``name`` the corpus; ``size`` its size in words ("2,047,004 characters", "1.2 GB in 3 files");
    ``coverage`` the fraction of its tokens inside the local vocabulary (None without one) and
    ``distinct`` how many distinct base ids it holds."""

    tokens: Tokens
    tokenizer: Tokenizer
    name: str
    size: str
    coverage: float | None = None
    distinct: int = 0

    def projection_note(self) -> str | None:
        """One line on the local vocabulary and what it covers, or None without one."""
        if self.coverage is None or not isinstance(self.tokenizer, LocalTokenizer):
            return None
        kept = self.tokenizer.vocab_size - 1
        return (
            f"local vocabulary: the {kept:,} most frequent of the corpus's {self.distinct:,} distinct ids "
            f"cover {100 * self.coverage:.2f}% of its tokens (the rest read as OOV, id 0)"
        )


def base_tokenizer(bpe_vocab: str | Path | None = None, bpe_merges: str | Path | None = None) -> Tokenizer:
    """GPT-2 BPE read from ``bpe_vocab`` / ``bpe_merges`` (both files checked), or bytes without them."""
    if bpe_vocab is None or bpe_merges is None:
        return ByteTokenizer()
    return GPT2BPE.from_files(bpe_vocab, bpe_merges)


def corpus_source(
    path: str | Path | None, *, max_chars: int | None = None, allow_small: bool = False, flag: str = "--data-file"
) -> Corpus | CorpusFiles:
    """What to train on: the embedded corpus (``path`` None) or the first ``max_chars`` characters of
    it or of ``path``, in memory; otherwise the files ``path`` names (a file, a folder or a glob), for
    the streamed token cache. A problem with the files is a ConfigError naming ``flag``."""
    if path is None:
        return load_corpus(None, max_chars=max_chars)
    try:
        files = find_corpus_files(path, allow_small=allow_small)
        if max_chars is None:
            return files
        if len(files.files) == 1 and files.files[0] == Path(path):
            return load_corpus(path, allow_small=allow_small, max_chars=max_chars)
        return Corpus(_first_chars(files, max_chars), files.name)
    except CorpusError as e:
        raise ConfigError(f"{flag} {e}") from None


def _first_chars(source: CorpusFiles, max_chars: int, block: int = 1 << 20) -> str:
    """The first ``max_chars`` characters of ``source``'s files read as one text (read in blocks).
    DataFileError ``file:line:`` if what is read is not UTF-8 (a file read to its end that ends inside
    a character included), as the token cache refuses it."""
    parts: list[str] = []
    left = max_chars
    for path in source.files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        with open(path, "rb") as file:
            while left > 0:
                raw = file.read(block)
                try:
                    text = decoder.decode(raw, final=not raw)  # at the end: no character left unfinished
                except UnicodeDecodeError:
                    check_utf8([path])  # raises DataFileError "path:line: not valid UTF-8 (byte offset N)"
                    raise
                parts.append(text[:left])
                left -= len(parts[-1])
                if not raw:
                    break
        if left == 0:
            break
    return "".join(parts)


def corpus_alphabet(source: Corpus | CorpusFiles, block: int = 1 << 24) -> str:
    """The sorted characters of ``source`` (a `CharTokenizer`'s alphabet), read in blocks of ``block``
    bytes: memory does not grow with the corpus."""
    if isinstance(source, Corpus):
        return "".join(sorted(set(source.text)))
    chars: set[str] = set()
    for path in source.files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        with open(path, "rb") as file:
            try:
                while raw := file.read(block):
                    chars.update(decoder.decode(raw))
                chars.update(decoder.decode(b"", final=True))
            except UnicodeDecodeError:
                check_utf8([path])  # raises DataFileError "path:line: not valid UTF-8 (byte offset N)"
                raise
    return "".join(sorted(chars))


def choose_local_vocab(
    base: Tokenizer, device: torch.device, *, requested: int | None = None, full: bool = False
) -> int | None:
    """The local vocabulary size to project ``base``'s ids onto, or None to train on all of them.

    ``requested`` wins; ``full`` asks for the tokenizer's own ids; otherwise a CPU projects a tokenizer
    larger than `DEFAULT_LOCAL_VOCAB` onto that many ids, and a GPU keeps the full head.
    """
    if requested is not None:
        return requested
    if full or device.type != "cpu" or base.vocab_size <= DEFAULT_LOCAL_VOCAB:
        return None
    return DEFAULT_LOCAL_VOCAB


def prepare_text_data(
    source: Corpus | CorpusFiles,
    base: Tokenizer,
    local_vocab: int | None = None,
    *,
    progress: bool = False,
    cache_dir: str | Path | None = None,
) -> TextData:
    """``source`` encoded with ``base``, then projected onto its ``local_vocab`` most frequent ids
    (OOV included) when that is given."""
    tokens, counts = _encode(source, base, progress, cache_dir)
    size = _size(source)
    if local_vocab is None:
        return TextData(tokens, base, source.name, size)
    vocab = LocalVocab.most_frequent(counts, local_vocab)
    local = LocalTokenizer(base, vocab)
    return TextData(
        encode_text(source, local, tokens=tokens, cache_dir=cache_dir),
        local,
        source.name,
        size,
        coverage=vocab.coverage(counts),
        distinct=int(np.count_nonzero(counts)),
    )


def encode_text(
    source: Corpus | CorpusFiles,
    tokenizer: Tokenizer,
    *,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    tokens: Tokens | None = None,
) -> Tokens:
    """``source``'s ids under ``tokenizer`` (a `LocalTokenizer` projects its base's cached ids);
    ``tokens``: the base ids, when already at hand."""
    if not isinstance(tokenizer, LocalTokenizer):
        return _encode(source, tokenizer, progress, cache_dir)[0]
    if isinstance(source, CorpusFiles):
        cache = token_cache(
            source.files, tokenizer.base, name=_cache_name(source), cache_dir=cache_dir, progress=progress
        )
        return project_token_cache(cache, tokenizer.vocab).tokens
    base_ids = tokens if tokens is not None else _encode(source, tokenizer.base, progress, cache_dir)[0]
    return tokenizer.vocab.to_local(base_ids).astype(np.uint16)


def _encode(
    source: Corpus | CorpusFiles, tokenizer: Tokenizer, progress: bool, cache_dir: str | Path | None
) -> tuple[Tokens, npt.NDArray[np.int64]]:
    """The ids of ``source`` and how often each id occurs."""
    if isinstance(source, CorpusFiles) and tokenizer.vocab_size <= MAX_VOCAB:
        cache = token_cache(source.files, tokenizer, name=_cache_name(source), cache_dir=cache_dir, progress=progress)
        return cache.tokens, cache.counts
    text = source.text if isinstance(source, Corpus) else "".join(f.read_text("utf-8") for f in source.files)
    dtype: Any = np.uint16 if tokenizer.vocab_size <= MAX_VOCAB else np.int32
    ids = np.asarray(tokenizer.encode(text, allowed_special="all"), dtype=dtype)
    return ids, np.bincount(ids, minlength=tokenizer.vocab_size).astype(np.int64)


def _cache_name(source: CorpusFiles) -> str:
    """The start of the cache file's name: the file's name, or the folder's (a glob: its folder's)."""
    if len(source.files) == 1 and Path(source.name) == source.files[0]:
        return source.files[0].name
    folder = Path(source.name)
    while folder.name and any(c in folder.name for c in "*?["):
        folder = folder.parent
    return (folder.resolve().name or "corpus") + ".corpus"


def _size(source: Corpus | CorpusFiles) -> str:
    if isinstance(source, Corpus):
        return f"{len(source.text):,} characters"
    files = f" in {len(source.files):,} files" if len(source.files) > 1 else ""
    return f"{source.size:,} bytes{files}"
