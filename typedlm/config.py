"""`CausalConfig`: the one frozen, validated description of a causal transformer's sizes."""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Self

from typedlm.errors import ConfigError

_POSITIVE_INTS = ("batch", "seq_len", "vocab", "heads", "head_dim", "ffn_hidden", "layers")


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"CausalConfig.{name}={value!r}: must be an int >= {minimum}")
    if value < minimum:
        raise ConfigError(f"CausalConfig.{name}={value!r}: must be >= {minimum}")


@dataclass(frozen=True)
class CausalConfig:
    """Sizes of a GPT-2-style causal transformer: batch × seq_len tokens over a vocab, heads × head_dim wide.

    ``batch`` is the nominal training batch (calls may use any batch); every other size is binding:
    a tensor whose last dimension is not ``d_model`` is refused by every layer built from this config.
    A frozen subclass may add int fields (``kv_heads: int = 2``): each is a dim of that name, checked like
    ``d_model`` in the layers whose ``__init__`` takes the subclass.
    """

    batch: int
    seq_len: int
    vocab: int
    heads: int
    head_dim: int
    ffn_hidden: int
    layers: int
    seed_stride: int = 1
    dropout: float = 0.0
    tie_embeddings: bool = True
    bias: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            _require_int(name, getattr(self, name), 1)
        _require_int("seed_stride", self.seed_stride, 0)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ConfigError(f"CausalConfig.dropout={self.dropout!r}: must be a float in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"CausalConfig.dropout={self.dropout!r}: must be in [0, 1)")
        for name in ("tie_embeddings", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"CausalConfig.{name}={getattr(self, name)!r}: must be a bool")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"CausalConfig.layer_norm_eps={eps!r}: must be a finite float > 0")

    @property
    def d_model(self) -> int:
        """Model width: ``d_model = heads * head_dim``."""
        return self.heads * self.head_dim

    @property
    def one_hot_shape(self) -> tuple[int, int, int]:
        """``(batch, seq_len, vocab)``: the shape of a one-hot input batch."""
        return (self.batch, self.seq_len, self.vocab)

    @property
    def embedded_shape(self) -> tuple[int, int, int]:
        """``(batch, seq_len, d_model)``: the shape of the residual stream."""
        return (self.batch, self.seq_len, self.d_model)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated like any new config."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name; ``from_dict(to_dict())`` gives an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a dict such as a checkpoint's ``config``; unknown or missing fields are a ConfigError."""
        if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
            raise ConfigError(f"CausalConfig.from_dict: expected a dict of field names, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"CausalConfig: unknown field(s) {', '.join(unknown)}")
        missing = sorted(
            f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in data
        )
        if missing:
            raise ConfigError(f"CausalConfig: missing field(s) {', '.join(missing)}")
        return cls(**data)

    # GPT-2 presets (Radford et al. 2019): 1024 positions, 50,257 tokens, 64-wide heads, ffn = 4 * d_model.

    @classmethod
    def _gpt2(cls, heads: int, layers: int, overrides: dict[str, Any]) -> Self:
        sizes: dict[str, Any] = dict(
            batch=8, seq_len=1024, vocab=50257, heads=heads, head_dim=64, ffn_hidden=4 * heads * 64, layers=layers
        )
        return cls(**(sizes | overrides))

    @classmethod
    def gpt2_small(cls, **overrides: Any) -> Self:
        """GPT-2 124M: 12 layers, 12 heads × 64 (d_model 768), ffn 3072."""
        return cls._gpt2(12, 12, overrides)

    @classmethod
    def gpt2_medium(cls, **overrides: Any) -> Self:
        """GPT-2 350M: 24 layers, 16 heads × 64 (d_model 1024), ffn 4096."""
        return cls._gpt2(16, 24, overrides)

    @classmethod
    def gpt2_large(cls, **overrides: Any) -> Self:
        """GPT-2 774M: 36 layers, 20 heads × 64 (d_model 1280), ffn 5120."""
        return cls._gpt2(20, 36, overrides)

    @classmethod
    def gpt2_xl(cls, **overrides: Any) -> Self:
        """GPT-2 1558M: 48 layers, 25 heads × 64 (d_model 1600), ffn 6400."""
        return cls._gpt2(25, 48, overrides)
