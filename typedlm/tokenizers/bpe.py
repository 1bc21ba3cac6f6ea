"""`GPT2BPE`: OpenAI's GPT-2 byte-pair encoding, id for id the same as tiktoken's ``gpt2``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path
from typing import Any

from typedlm.tokenizers.base import as_int_list, out_of_range, surrogates_replaced
from typedlm.tokenizers.bpe_files import BPEVocabulary, gpt2_files, read_bpe_vocabulary
from typedlm.tokenizers.byte_level import bytes_to_symbols, symbols_to_bytes
from typedlm.tokenizers.merge import merge_symbols
from typedlm.tokenizers.pretokenize import pretokenize
from typedlm.tokenizers.special import (
    AllowedSpecial,
    DisallowedSpecial,
    alternation,
    refuse_disallowed,
    resolve_special,
)

EOT_TEXT = "<|endoftext|>"


class _PieceCache(dict[str, tuple[int, ...]]):
    """Pre-token text → its ids; a miss runs BPE. Seeded with every token that is whole UTF-8 text.

    The seed is tiktoken's fast path (a piece that is itself a token is that token, whatever the
    merges say). When more than ``limit`` pieces have been added the cache starts again from the seed.
    """

    def __init__(self, seed: dict[str, tuple[int, ...]], encode_piece: Callable[[str], tuple[int, ...]], limit: int):
        super().__init__(seed)
        self._seed = seed
        self._encode_piece = encode_piece
        self._limit = len(seed) + limit

    def __missing__(self, piece: str) -> tuple[int, ...]:
        ids = self._encode_piece(piece)
        if len(self) >= self._limit:
            self.clear()
            self.update(self._seed)
        self[piece] = ids
        return ids


class GPT2BPE:
    """GPT-2's byte-level BPE tokenizer, built from a ``vocab.json`` + ``merges.txt`` pair.

    >>> tok = GPT2BPE.from_vendored()
    >>> tok.encode("Hello world")
    [15496, 995]
    >>> tok.decode([15496, 995])
    'Hello world'
    """

    cache_limit = 500_000
    """Pieces cached beyond the vocabulary before the cache is reset."""

    def __init__(self, vocabulary: BPEVocabulary) -> None:
        self._vocabulary = vocabulary
        self._build_tables()

    @classmethod
    def from_files(cls, vocab_json: str | Path, merges_txt: str | Path) -> GPT2BPE:
        """Load a vocabulary; `DataFileError` (a ValueError) naming the file and line if either file is
        missing, unreadable or malformed, or the merges do not build the vocabulary (see `read_bpe_vocabulary`)."""
        return cls(read_bpe_vocabulary(vocab_json, merges_txt))

    @classmethod
    def from_vendored(cls) -> GPT2BPE:
        """OpenAI's GPT-2 vocabulary as shipped with typedlm (see `gpt2_files`)."""
        return cls.from_files(*gpt2_files())

    def _build_tables(self) -> None:
        vocabulary = self._vocabulary
        special = vocabulary.special_tokens
        self._special_ids = {token: vocabulary.token_ids[token] for token in special}
        self._id_to_token = {token_id: token for token, token_id in vocabulary.token_ids.items()}
        self._id_to_bytes = {
            token_id: token.encode("utf-8") if token in special else symbols_to_bytes(token)
            for token, token_id in vocabulary.token_ids.items()
        }
        seed: dict[str, tuple[int, ...]] = {}
        for token_id, data in self._id_to_bytes.items():
            if self._id_to_token[token_id] in special:
                continue
            try:
                seed[data.decode("utf-8")] = (token_id,)
            except UnicodeDecodeError:
                continue  # a token that ends inside a UTF-8 character is never a whole piece
        self._cache = _PieceCache(seed, self._encode_piece, self.cache_limit)

    def __getstate__(self) -> dict[str, Any]:
        return {"vocabulary": self._vocabulary}  # tables are rebuilt: smaller pickles for worker processes

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._vocabulary = state["vocabulary"]
        self._build_tables()

    # --- the Tokenizer protocol ------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids (50257 for GPT-2)."""
        return len(self._id_to_token)

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>`` (50256 for GPT-2), or None if the vocabulary has none."""
        return self._special_ids.get(EOT_TEXT)

    @property
    def special_tokens(self) -> frozenset[str]:
        """Vocabulary entries that are neither a byte nor a merge result (shaped ``<...>`` or ``[...]``),
        e.g. ``{"<|endoftext|>"}``."""
        return self._vocabulary.special_tokens

    @property
    def fingerprint(self) -> str:
        """sha256 of the vocab.json and merges.txt bytes."""
        return self._vocabulary.fingerprint

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: DisallowedSpecial = "all",
    ) -> list[int]:
        """Token ids of ``text``, with tiktoken's rules for special tokens.

        By default a special token in the text raises ValueError; ``allowed_special={"<|endoftext|>"}``
        (or ``"all"``) encodes it as its id, ``disallowed_special=()`` as ordinary text.
        """
        allowed, disallowed = resolve_special(self.special_tokens, allowed_special, disallowed_special)
        refuse_disallowed(text, disallowed)
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for found in alternation(allowed).finditer(text):
            ids += self.encode_ordinary(text[start : found.start()])
            ids.append(self._special_ids[found.group()])
            start = found.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text`` with special tokens treated as ordinary text."""
        try:
            return list(chain.from_iterable(map(self._cache.__getitem__, pretokenize(text))))
        except UnicodeEncodeError:
            return self.encode_ordinary(surrogates_replaced(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that do not form UTF-8 (e.g. half a character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of ``ids``."""
        id_list = as_int_list(ids)
        try:
            return b"".join(map(self._id_to_bytes.__getitem__, id_list))
        except (KeyError, TypeError):
            raise out_of_range(id_list, self.vocab_size) or ValueError(f"ids must be integers: {ids!r}") from None

    # --- lookups ---------------------------------------------------------------------------------

    def id_to_token(self, token_id: int) -> str:
        """The token as written in vocab.json (byte-level alphabet, e.g. ``"Ġthe"``)."""
        try:
            return self._id_to_token[token_id]
        except KeyError:
            raise ValueError(f"token id {token_id} is not in 0..{self.vocab_size - 1}") from None

    def token_to_id(self, token: str) -> int:
        """The id of a token as written in vocab.json."""
        try:
            return self._vocabulary.token_ids[token]
        except KeyError:
            raise ValueError(f"{token!r} is not a token of this vocabulary") from None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that ``token_id`` stands for."""
        return self.decode_bytes([token_id])

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        tokens = merge_symbols(list(bytes_to_symbols(piece.encode("utf-8"))), self._vocabulary.merge_rank)
        return tuple(map(self._vocabulary.token_ids.__getitem__, tokens))

    def __repr__(self) -> str:
        return f"GPT2BPE(vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]}…)"
