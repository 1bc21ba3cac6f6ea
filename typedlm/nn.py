"""The layers of a GPT-2-style causal transformer; each is a `Layer[In, Out]` built from a `CausalConfig`.

Initialisation follows GPT-2: weights N(0, 0.02), biases zero, LayerNorm gain one, and the two
residual projections of each block N(0, 0.02 / sqrt(2 * layers)). Every layer draws from its own
generator seeded by ``seed`` and its role, so the same seed gives the same weights; block ``i``
of a model seeded ``s`` uses seed ``s + i * cfg.seed_stride``.
"""

import math
import zlib

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from typedlm.config import CausalConfig
from typedlm.errors import ConfigError, ShapeError
from typedlm.kv_cache import AttentionCache
from typedlm.layer import Layer, Stack
from typedlm.shapes import Embedded, Logits, OneHot, TokenIds
from typedlm.token_ids import check_token_ids

__all__ = [
    "MLP",
    "CausalSelfAttention",
    "LMHead",
    "LayerNorm",
    "OneHotEmbedding",
    "PositionalEmbedding",
    "Stack",
    "TokenEmbedding",
    "TransformerBlock",
]

INIT_STD = 0.02


def _generator(seed: int, role: str) -> torch.Generator:
    """A CPU generator for one layer's initial weights, distinct per (seed, role)."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + zlib.crc32(role.encode())) % 2**63)
    return generator


def _normal_(tensor: Tensor, std: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        tensor.normal_(0.0, std, generator=generator)


def _residual_std(cfg: CausalConfig) -> float:
    return INIT_STD / math.sqrt(2 * cfg.layers)


def _linear(fan_in: int, fan_out: int, cfg: CausalConfig, std: float, generator: torch.Generator) -> nn.Linear:
    linear = nn.Linear(fan_in, fan_out, bias=cfg.bias)
    _normal_(linear.weight, std, generator)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class TokenEmbedding(Layer[TokenIds, Embedded]):
    """Token ids → rows of the ``(vocab, d_model)`` table, by gather."""

    cfg: CausalConfig

    def __init__(self, cfg: CausalConfig, *, seed: int = 0) -> None:
        super().__init__(cfg)
        self.weight = nn.Parameter(torch.empty(cfg.vocab, cfg.d_model))
        _normal_(self.weight, INIT_STD, _generator(seed, "token_embedding"))

    def forward(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq d_model"]:
        check_token_ids(ids, self.cfg.vocab, where=type(self).__name__, source="cfg.vocab")
        return F.embedding(ids, self.weight)


class OneHotEmbedding(Layer[OneHot, Embedded]):
    """One-hot rows ``(batch, seq, vocab)`` @ the ``(vocab, d_model)`` table; same weights as `TokenEmbedding`."""

    def __init__(self, cfg: CausalConfig, *, seed: int = 0) -> None:
        super().__init__(cfg)
        self.weight = nn.Parameter(torch.empty(cfg.vocab, cfg.d_model))
        _normal_(self.weight, INIT_STD, _generator(seed, "token_embedding"))

    def forward(self, one_hot: Float[Tensor, "batch seq vocab"]) -> Float[Tensor, "batch seq d_model"]:
        return one_hot @ self.weight


class PositionalEmbedding(Layer[Embedded, Embedded]):
    """Adds learned position vectors for positions ``start_pos .. start_pos + seq - 1``.

    With ``pad`` (left-pad counts, one per row) a row's positions count its real tokens only: its column
    ``j`` is at position ``start_pos + j - pad[row]`` (a pad column reads position 0; attention ignores it).
    """

    cfg: CausalConfig

    def __init__(self, cfg: CausalConfig, *, seed: int = 0) -> None:
        super().__init__(cfg)
        self.weight = nn.Parameter(torch.empty(cfg.seq_len, cfg.d_model))
        _normal_(self.weight, INIT_STD, _generator(seed, "positional_embedding"))

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        seq = x.shape[1]
        if start_pos < 0 or start_pos + seq > self.cfg.seq_len:
            raise ShapeError(
                f"PositionalEmbedding: positions {start_pos}..{start_pos + seq - 1} (start_pos={start_pos}, "
                f"seq={seq}) are outside 0..{self.cfg.seq_len - 1} (cfg.seq_len = {self.cfg.seq_len})"
            )
        if pad is None:
            return x + self.weight[start_pos : start_pos + seq]
        columns = torch.arange(start_pos, start_pos + seq, device=x.device)
        positions = (columns - pad[:, None]).clamp(min=0)
        return x + F.embedding(positions, self.weight)


class LayerNorm(Layer[Embedded, Embedded]):
    """LayerNorm over ``d_model`` with a gain and (if ``cfg.bias``) a bias."""

    cfg: CausalConfig

    def __init__(self, cfg: CausalConfig) -> None:
        super().__init__(cfg)
        self.weight = nn.Parameter(torch.ones(cfg.d_model))
        self.bias = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.bias else None

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.cfg.layer_norm_eps)


class CausalSelfAttention(Layer[Embedded, Embedded]):
    """Multi-head causal self-attention: one fused qkv projection, ``scaled_dot_product_attention``.

    With a `AttentionCache` attached (``self.cache``, see `GPT2.kv_cache`), a call appends its keys and
    values to the cache and attends over every cached position, so decoding one token costs one position.
    With ``pad`` (left-pad counts, one per row) no query attends to a row's first ``pad[row]`` keys.
    ``heads`` (default ``cfg.heads``) is local to this layer: ``head_dim = d_model // heads``.
    """

    cfg: CausalConfig

    def __init__(self, cfg: CausalConfig, *, heads: int | None = None, seed: int = 0) -> None:
        super().__init__(cfg, **_head_sizes(cfg, heads, "CausalSelfAttention"))
        self.heads, self.head_dim = self.dim_size("heads"), self.dim_size("head_dim")
        generator = _generator(seed, "attention")
        self.qkv = _linear(cfg.d_model, 3 * cfg.d_model, cfg, INIT_STD, generator)
        self.proj = _linear(cfg.d_model, cfg.d_model, cfg, _residual_std(cfg), generator)
        self.cache: AttentionCache | None = None

    def _split_heads(self, t: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch heads seq head_dim"]:
        batch, seq, _ = t.shape
        return t.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        batch, seq, d_model = x.shape
        q, k, v = (self._split_heads(t) for t in self.qkv(x).split(d_model, dim=2))
        dropout = self.cfg.dropout if self.training else 0.0
        start = 0
        if self.cache is not None:  # attend over every cached position, this call's included
            start = self.cache.length
            k, v = self.cache.append(k, v)
        if pad is not None:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=padded_causal_mask(seq, k.shape[2], pad), dropout_p=dropout
            )
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:  # query i sits at position start + i: it sees keys 0 .. start + i
            mask = None if seq == 1 else torch.ones(seq, start + seq, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, seq, d_model)
        return _dropout(self.proj(y), dropout)


def padded_causal_mask(seq: int, total: int, pad: Int[Tensor, " batch"]) -> Bool[Tensor, "batch 1 seq total"]:
    """Which keys each query may see, for the last ``seq`` of ``total`` positions of left-padded rows.

    Query ``i`` (at position ``total - seq + i``) sees keys ``pad[row] .. total - seq + i``, and always
    itself, so a pad query has one key and no row of the softmax is empty.
    """
    keys = torch.arange(total, device=pad.device)
    queries = torch.arange(total - seq, total, device=pad.device)[:, None]
    real = keys >= pad[:, None, None]
    return ((real & (keys <= queries)) | (keys == queries))[:, None]


def _head_sizes(cfg: CausalConfig, heads: int | None, layer: str) -> dict[str, int]:
    """Layer-local ``heads`` and ``head_dim = d_model // heads``; none when ``heads`` is None (the config's)."""
    if heads is None or not isinstance(cfg, CausalConfig):  # a wrong cfg is refused by Layer.__init__
        return {}
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ConfigError(f"{layer}(heads={heads!r}): must be an int >= 1")
    if cfg.d_model % heads:
        raise ConfigError(
            f"{layer}(heads={heads}): d_model = {cfg.d_model} (cfg.d_model) is not divisible by heads = {heads}"
        )
    return {"heads": heads, "head_dim": cfg.d_model // heads}


def _ffn_size(ffn: int | None) -> dict[str, int]:
    """Layer-local ``ffn``; none when ``ffn`` is None (the config's ``ffn_hidden``)."""
    return {} if ffn is None else {"ffn": ffn}


def _dropout(x: Tensor, p: float) -> Tensor:
    """Residual dropout; free when ``p`` is 0 (evaluation, or a config without dropout)."""
    return F.dropout(x, p, training=True) if p > 0.0 else x


class MLP(Layer[Embedded, Embedded]):
    """``d_model → ffn → d_model`` with GELU (tanh approximation), as in GPT-2; ``ffn`` (default
    ``cfg.ffn_hidden``) is local to this layer."""

    cfg: CausalConfig

    def __init__(self, cfg: CausalConfig, *, ffn: int | None = None, seed: int = 0) -> None:
        super().__init__(cfg, **_ffn_size(ffn))
        generator = _generator(seed, "mlp")
        self.fc = _linear(cfg.d_model, self.dim_size("ffn"), cfg, INIT_STD, generator)
        self.proj = _linear(self.dim_size("ffn"), cfg.d_model, cfg, _residual_std(cfg), generator)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        hidden: Float[Tensor, "batch seq ffn"] = F.gelu(self.fc(x), approximate="tanh")
        return _dropout(self.proj(hidden), self.cfg.dropout if self.training else 0.0)


class TransformerBlock(Layer[Embedded, Embedded]):
    """Pre-LN block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``. Seeded with ``seed + index * seed_stride``.

    ``heads`` and ``ffn`` (default: the config's) are this block's own, so blocks of different widths
    at one ``d_model`` stack.
    """

    cfg: CausalConfig

    def __init__(
        self, cfg: CausalConfig, *, index: int, heads: int | None = None, ffn: int | None = None, seed: int = 0
    ) -> None:
        super().__init__(cfg, **_head_sizes(cfg, heads, "TransformerBlock"), **_ffn_size(ffn))
        self.index = index
        block_seed = seed + index * cfg.seed_stride
        self.ln_1 = LayerNorm(cfg)
        self.attn = CausalSelfAttention(cfg, heads=heads, seed=block_seed)
        self.ln_2 = LayerNorm(cfg)
        self.mlp = MLP(cfg, ffn=ffn, seed=block_seed)

    def describe(self) -> str:
        own = "".join(f", {name}={self.dim_size(name)}" for name in ("heads", "ffn") if name in self.dim_env.local)
        return f"TransformerBlock(index={self.index}{own})"

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        x = x + self.attn(self.ln_1(x), pad)
        return x + self.mlp(self.ln_2(x))


class LMHead(Layer[Embedded, Logits]):
    """``d_model → vocab`` scores without bias; ``tied_to`` an embedding shares its ``(vocab, d_model)`` table."""

    def __init__(
        self, cfg: CausalConfig, tied_to: TokenEmbedding | OneHotEmbedding | None = None, *, seed: int = 0
    ) -> None:
        super().__init__(cfg)
        if tied_to is None:
            self.weight = nn.Parameter(torch.empty(cfg.vocab, cfg.d_model))
            _normal_(self.weight, INIT_STD, _generator(seed, "lm_head"))
        else:
            self.dim_env = self.dim_env.merged(tied_to.dim_env, "LMHead", f"the {tied_to.describe()} it is tied to")
            self.weight = tied_to.weight

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq vocab"]:
        return F.linear(x, self.weight)
