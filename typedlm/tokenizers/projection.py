"""TorchLean's local vocabulary: the GPT-2 ids a corpus uses, renumbered compactly for small models.

Local id 0 is out-of-vocabulary (OOV); local ids 1, 2, … are given to base ids in the order they are
first seen (`LocalVocab.first_seen`) or from the most frequent down (`LocalVocab.most_frequent`, which
covers as much of a corpus as a vocabulary of its size can). A small model then needs a few thousand
output classes instead of 50,257.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from typedlm.tokenizers.base import Tokenizer, as_int_list
from typedlm.tokenizers.special import AllowedSpecial, DisallowedSpecial

OOV = 0
"""The local id of every base id outside the local vocabulary."""

_REPLACEMENT = "\N{REPLACEMENT CHARACTER}".encode()


@dataclass(frozen=True, eq=False)
class LocalVocab:
    """A projection between base ids (e.g. GPT-2's) and compact local ids, both directions.

    ``base_ids[k - 1]`` is the base id of local id ``k``; local id 0 is OOV.
    """

    base_ids: tuple[int, ...]
    base_vocab_size: int
    _to_local: npt.NDArray[np.int64] = field(init=False, repr=False)
    _to_base: npt.NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        to_base = np.asarray((-1, *self.base_ids), dtype=np.int64)
        if len(set(self.base_ids)) != len(self.base_ids):
            raise ValueError("base_ids must not repeat an id")
        if len(self.base_ids) and not (0 <= to_base[1:].min() and to_base[1:].max() < self.base_vocab_size):
            raise ValueError(f"base_ids must lie in 0..{self.base_vocab_size - 1}")
        to_local = np.full(self.base_vocab_size, OOV, dtype=np.int64)
        to_local[to_base[1:]] = np.arange(1, len(to_base), dtype=np.int64)
        object.__setattr__(self, "_to_local", to_local)
        object.__setattr__(self, "_to_base", to_base)

    @classmethod
    def first_seen(cls, base_ids: Iterable[int], base_vocab_size: int, max_size: int | None = None) -> LocalVocab:
        """Number the distinct ``base_ids`` 1, 2, … in order of first appearance.

        ``max_size`` caps the local vocabulary size (OOV included): later ids become OOV.
        """
        ids = np.asarray(as_int_list(base_ids), dtype=np.int64)
        _check_range(ids, base_vocab_size, "base")
        distinct, first_position = np.unique(ids, return_index=True)
        in_order = distinct[np.argsort(first_position, kind="stable")]
        if max_size is not None:
            if max_size < 1:
                raise ValueError(f"max_size must be >= 1 (OOV needs an id), got {max_size}")
            in_order = in_order[: max_size - 1]
        return cls(tuple(int(i) for i in in_order), base_vocab_size)

    @classmethod
    def most_frequent(cls, counts: npt.ArrayLike, max_size: int) -> LocalVocab:
        """The ``max_size - 1`` base ids with the highest ``counts`` (how often each base id occurs in a
        corpus, shape ``(base_vocab_size,)``), numbered 1, 2, … from the most frequent (ties: lower id
        first); ids that never occur are left out."""
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1 (OOV needs an id), got {max_size}")
        occurrences = np.asarray(counts, dtype=np.int64)
        if occurrences.ndim != 1 or (occurrences < 0).any():
            raise ValueError("counts must be a 1-D array of occurrence counts, one per base id")
        order = np.argsort(-occurrences, kind="stable")
        chosen = order[occurrences[order] > 0][: max_size - 1]
        return cls(tuple(int(i) for i in chosen), len(occurrences))

    def coverage(self, counts: npt.ArrayLike) -> float:
        """The fraction of a corpus's tokens (``counts`` per base id) that are in the local vocabulary."""
        occurrences = np.asarray(counts, dtype=np.int64)
        total = int(occurrences.sum())
        return float(occurrences[list(self.base_ids)].sum() / total) if total else 1.0

    @property
    def size(self) -> int:
        """Number of local ids, OOV included."""
        return len(self.base_ids) + 1

    def to_local(self, base_ids: Iterable[int]) -> npt.NDArray[np.int64]:
        """Local ids of ``base_ids``; base ids outside the local vocabulary become 0 (OOV)."""
        if isinstance(base_ids, np.ndarray) and np.issubdtype(base_ids.dtype, np.integer):
            ids = base_ids.astype(np.int64)  # an id array (a chunk of a memmap): no Python list
        else:
            ids = np.asarray(as_int_list(base_ids), dtype=np.int64)
        _check_range(ids, self.base_vocab_size, "base")
        return self._to_local[ids]

    def to_base(self, local_ids: Iterable[int], oov: int | None = None) -> npt.NDArray[np.int64]:
        """Base ids of ``local_ids``; OOV becomes ``oov``, and is an error when ``oov`` is None."""
        ids = np.asarray(as_int_list(local_ids), dtype=np.int64)
        _check_range(ids, self.size, "local")
        base = self._to_base[ids]
        if oov is None:
            if (ids == OOV).any():
                position = int(np.argmax(ids == OOV))
                raise ValueError(f"local id 0 (OOV) at position {position} has no base id; pass oov=...")
            return base
        base[ids == OOV] = oov
        return base


def _check_range(ids: npt.NDArray[np.int64], size: int, kind: str) -> None:
    bad = (ids < 0) | (ids >= size)
    if bad.any():
        position = int(np.argmax(bad))
        raise ValueError(f"{kind} id {int(ids[position])} at position {position} is not in 0..{size - 1}")


class LocalTokenizer:
    """A `Tokenizer` that encodes with ``base`` and renumbers through a `LocalVocab`.

    OOV decodes to U+FFFD. ``eot_token`` is the local id of the base's, or None if it is not local.
    """

    def __init__(self, base: Tokenizer, vocab: LocalVocab) -> None:
        if vocab.base_vocab_size != base.vocab_size:
            raise ValueError(
                f"the local vocabulary projects {vocab.base_vocab_size} base ids, the tokenizer has {base.vocab_size}"
            )
        self.base = base
        self.vocab = vocab

    @classmethod
    def fit(cls, base: Tokenizer, text: str, max_size: int | None = None) -> LocalTokenizer:
        """The local vocabulary of the ids ``base`` gives ``text`` (special tokens allowed)."""
        base_ids = base.encode(text, allowed_special="all")
        return cls(base, LocalVocab.first_seen(base_ids, base.vocab_size, max_size))

    @property
    def vocab_size(self) -> int:
        """Local vocabulary size, OOV included."""
        return self.vocab.size

    @property
    def eot_token(self) -> int | None:
        """The local id of the base tokenizer's end-of-text, or None."""
        base_eot = self.base.eot_token
        if base_eot is None:
            return None
        local = int(self.vocab.to_local([base_eot])[0])
        return None if local == OOV else local

    @property
    def special_tokens(self) -> frozenset[str]:
        """The base tokenizer's."""
        return self.base.special_tokens

    @property
    def fingerprint(self) -> str:
        """Digest of the base fingerprint and the projection."""
        digest = hashlib.sha256(f"typedlm.LocalTokenizer\0{self.base.fingerprint}\0".encode())
        digest.update(np.asarray(self.vocab.base_ids, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: DisallowedSpecial = "all",
    ) -> list[int]:
        """Local ids of ``text`` (OOV = 0)."""
        base_ids = self.base.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        return self._local_list(base_ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Local ids of ``text`` with special tokens treated as ordinary text."""
        return self._local_list(self.base.encode_ordinary(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of local ``ids``; OOV becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Bytes of local ``ids``; OOV becomes the UTF-8 of U+FFFD."""
        local = np.asarray(as_int_list(ids), dtype=np.int64)
        base = self.vocab.to_base(local, oov=-1)
        pieces: list[bytes] = []
        for run in np.split(base, np.flatnonzero(base == -1)):
            if len(run) and run[0] == -1:
                pieces.append(_REPLACEMENT)
                run = run[1:]
            pieces.append(self.base.decode_bytes(run))
        return b"".join(pieces)

    def _local_list(self, base_ids: list[int]) -> list[int]:
        local: list[int] = self.vocab.to_local(base_ids).tolist()
        return local

    def __repr__(self) -> str:
        return f"LocalTokenizer({self.base!r}, vocab_size={self.vocab_size})"
