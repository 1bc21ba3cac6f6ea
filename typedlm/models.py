"""Model constructors mirroring TorchLean's ``NN.API.nn.models``, and `GPT2`.

All three share one body, `CausalTransformer` (positions → blocks → LayerNorm → head); they differ only
in how tokens enter: as embeddings, as one-hot rows, or as ids.

Every block has the config's ``heads`` and ``ffn_hidden`` unless the model is given its own per block:
``GPT2(cfg, block_heads=[2, 4, 1], block_ffn=[32, 64, 48])`` (one entry per block, all at ``cfg.d_model``).
"""

import contextlib
from collections.abc import Iterator, Sequence

from jaxtyping import Bool, Float, Int
from torch import Tensor

from typedlm.config import CausalConfig
from typedlm.errors import ConfigError
from typedlm.generate import Prompts, generate_tokens, stream_tokens
from typedlm.kv_cache import AttentionCache, attached_kv_cache
from typedlm.layer import Layer
from typedlm.nn import (
    LayerNorm,
    LMHead,
    OneHotEmbedding,
    PositionalEmbedding,
    Stack,
    TokenEmbedding,
    TransformerBlock,
)
from typedlm.sampling import Sampling
from typedlm.shapes import Embedded, Logits, OneHot, TokenIds

__all__ = [
    "GPT2",
    "CausalTransformer",
    "causal_transformer_from_embeddings",
    "causal_transformer_indexed",
    "causal_transformer_one_hot",
]


def _block_widths(
    cfg: CausalConfig, block_heads: Sequence[int] | None, block_ffn: Sequence[int] | None, where: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each block's head count and FFN width: the given ones, checked, or the config's (``heads``,
    ``ffn_hidden``) where None. A wrong one is a ConfigError naming ``where``, the argument and the block."""
    heads = _per_block(cfg, "block_heads", block_heads, cfg.heads, where)
    ffn = _per_block(cfg, "block_ffn", block_ffn, cfg.ffn_hidden, where)
    for index, count in enumerate(heads):
        if cfg.d_model % count:
            raise ConfigError(
                f"{where}(block_heads[{index}]={count}): d_model = {cfg.d_model} (cfg.d_model) is not divisible "
                f"by block {index}'s heads = {count}"
            )
    return heads, ffn


def _per_block(cfg: CausalConfig, name: str, values: Sequence[int] | None, default: int, where: str) -> tuple[int, ...]:
    """``values`` (one int >= 1 per block) checked, or ``default`` for every block when None."""
    if values is None:
        return (default,) * cfg.layers
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ConfigError(
            f"{where}({name}={values!r}): must be a list of ints, one per block (cfg.layers = {cfg.layers})"
        )
    if len(values) != cfg.layers:
        raise ConfigError(f"{where}({name}=...): has {len(values)} entries, but cfg.layers = {cfg.layers} blocks")
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{where}({name}[{index}]={value!r}): block {index}'s {name.removeprefix('block_')} must be an int >= 1"
            )
    return tuple(values)


class CausalTransformer(Layer[Embedded, Logits]):
    """The shared body: learned positions, ``cfg.layers`` pre-LN blocks, a final LayerNorm and the LM head.

    ``block_heads`` / ``block_ffn`` (one int per block; default the config's ``heads`` / ``ffn_hidden``)
    give each block its own width; ``self.block_heads`` and ``self.block_ffn`` hold the ones built.
    """

    def __init__(
        self,
        cfg: CausalConfig,
        *,
        seed: int = 0,
        tied_to: TokenEmbedding | OneHotEmbedding | None = None,
        block_heads: Sequence[int] | None = None,
        block_ffn: Sequence[int] | None = None,
    ) -> None:
        super().__init__(cfg)
        self.block_heads, self.block_ffn = _block_widths(cfg, block_heads, block_ffn, type(self).__name__)
        self.pos = PositionalEmbedding(cfg, seed=seed)
        widths = enumerate(zip(self.block_heads, self.block_ffn, strict=True))
        self.blocks = Stack(
            [
                TransformerBlock(cfg, index=i, heads=_own(heads, cfg.heads), ffn=_own(ffn, cfg.ffn_hidden), seed=seed)
                for i, (heads, ffn) in widths
            ]
        )
        self.ln_f = LayerNorm(cfg)
        self.head = LMHead(cfg, tied_to, seed=seed)
        self.dim_env = self.head.dim_env

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq vocab"]:
        x = self.pos(x, start_pos, pad)
        x = self.blocks(x, pad)
        return self.head(self.ln_f(x))


def _own(width: int, configs: int) -> int | None:
    """A block's width as a layer-local size; None (the config's, with its source) when it is the config's."""
    return None if width == configs else width


def causal_transformer_from_embeddings(
    cfg: CausalConfig,
    *,
    seed: int = 0,
    tied_to: TokenEmbedding | OneHotEmbedding | None = None,
    block_heads: Sequence[int] | None = None,
    block_ffn: Sequence[int] | None = None,
) -> CausalTransformer:
    """``Layer[Embedded, Logits]``: pos → blocks → LN → head (head tied to ``tied_to`` if given)."""
    return CausalTransformer(cfg, seed=seed, tied_to=tied_to, block_heads=block_heads, block_ffn=block_ffn)


def causal_transformer_one_hot(
    cfg: CausalConfig,
    *,
    seed: int = 0,
    block_heads: Sequence[int] | None = None,
    block_ffn: Sequence[int] | None = None,
) -> Layer[OneHot, Logits]:
    """``Layer[OneHot, Logits]``: one-hot rows @ embedding table, then the shared body."""
    embed = OneHotEmbedding(cfg, seed=seed)
    body = causal_transformer_from_embeddings(
        cfg, seed=seed, tied_to=_tie(cfg, embed), block_heads=block_heads, block_ffn=block_ffn
    )
    return embed >> body


def causal_transformer_indexed(
    cfg: CausalConfig,
    *,
    seed: int = 0,
    block_heads: Sequence[int] | None = None,
    block_ffn: Sequence[int] | None = None,
) -> Layer[TokenIds, Logits]:
    """``Layer[TokenIds, Logits]``: token ids gathered from the embedding table, then the shared body.

    Built with the same config, seed and widths, it has the same weights (and state-dict keys) as
    `causal_transformer_one_hot`, so both give the same logits.
    """
    embed = TokenEmbedding(cfg, seed=seed)
    body = causal_transformer_from_embeddings(
        cfg, seed=seed, tied_to=_tie(cfg, embed), block_heads=block_heads, block_ffn=block_ffn
    )
    return embed >> body


def _tie(cfg: CausalConfig, embed: TokenEmbedding | OneHotEmbedding) -> TokenEmbedding | OneHotEmbedding | None:
    return embed if cfg.tie_embeddings else None


class GPT2(Layer[TokenIds, Logits]):
    """GPT-2: token ids → logits, with the head tied to the token embedding when ``cfg.tie_embeddings``.

    ``forward(ids, start_pos)`` reads ids at positions ``start_pos .. start_pos + seq - 1``; inside
    ``with model.kv_cache(batch):`` it also reuses the keys and values of positions before ``start_pos``,
    which must then be the number of positions cached (`rewind_kv_cache` goes back). ``pad`` (left-pad
    counts, one per row) makes a row's first ``pad[row]`` columns padding: no position, never attended to.

    ``block_heads`` / ``block_ffn`` (one int per block; default the config's ``heads`` / ``ffn_hidden``)
    give each block its own width at ``cfg.d_model``: ``GPT2(cfg, block_heads=[2, 4, 1], block_ffn=[32, 64,
    48])``. A typedlm checkpoint keeps them (`typedlm.training.load_gpt2_checkpoint`); the Hugging Face
    GPT-2 format cannot, so `typedlm.hf.save_gpt2` refuses a model whose blocks differ from its config.
    """

    boundary = True

    def __init__(
        self,
        cfg: CausalConfig,
        *,
        seed: int = 0,
        block_heads: Sequence[int] | None = None,
        block_ffn: Sequence[int] | None = None,
    ) -> None:
        super().__init__(cfg)
        block_heads, block_ffn = _block_widths(cfg, block_heads, block_ffn, "GPT2")  # errors name GPT2
        self.embed = TokenEmbedding(cfg, seed=seed)
        self.transformer = causal_transformer_from_embeddings(
            cfg, seed=seed, tied_to=_tie(cfg, self.embed), block_heads=block_heads, block_ffn=block_ffn
        )
        self._caches: list[AttentionCache] = []

    @property
    def block_heads(self) -> tuple[int, ...]:
        """Each block's head count, in order."""
        return self.transformer.block_heads

    @property
    def block_ffn(self) -> tuple[int, ...]:
        """Each block's MLP hidden width, in order."""
        return self.transformer.block_ffn

    def forward(
        self, ids: Int[Tensor, "batch seq"], start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq vocab"]:
        for cache in self._caches:
            cache.check_continues(start_pos, "GPT2")
        return self.transformer(self.embed(ids), start_pos, pad)

    def rewind_kv_cache(self, start_pos: int) -> None:
        """Forget cached positions ``start_pos`` and later, so the next call may start at ``start_pos``."""
        for cache in self._caches:
            cache.rewind(start_pos)

    @contextlib.contextmanager
    def kv_cache(self, batch: int) -> Iterator[list[AttentionCache]]:
        """Within the block, attention layers cache keys and values for ``batch`` sequences (the caches
        are what ``as`` gives)."""
        with attached_kv_cache(self, self.cfg, batch) as caches:
            self._caches = caches
            try:
                yield caches
            finally:
                self._caches = []

    def generate(
        self,
        prompts: Prompts,
        max_new_tokens: int,
        sampling: Sampling | None = None,
        *,
        attention_mask: Int[Tensor, "batch seq"] | Bool[Tensor, "batch seq"] | None = None,
        kv_cache: bool = True,
    ) -> Int[Tensor, "batch total"]:
        """The prompts followed by up to ``max_new_tokens`` ids each, ``(batch, seq + new)``; see `typedlm.generate`."""
        return generate_tokens(
            self, prompts, max_new_tokens, sampling, attention_mask=attention_mask, kv_cache=kv_cache
        )

    def stream(
        self,
        prompts: Prompts,
        max_new_tokens: int,
        sampling: Sampling | None = None,
        *,
        attention_mask: Int[Tensor, "batch seq"] | Bool[Tensor, "batch seq"] | None = None,
        kv_cache: bool = True,
    ) -> Iterator[Int[Tensor, " batch"]]:
        """Yield the next id of each prompt as it is chosen, ``(batch,)`` per step; see `typedlm.generate`."""
        return stream_tokens(self, prompts, max_new_tokens, sampling, attention_mask=attention_mask, kv_cache=kv_cache)

    def param_count(self) -> int:
        """Number of parameters, a tied embedding/head table counted once."""
        return sum(p.numel() for p in self.parameters())

    # --- for a fused head loss (typedlm.losses.fused_next_token_cross_entropy) ---------------------

    def hidden_states(
        self, ids: Int[Tensor, "batch seq"], start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        """What the head turns into logits: the final LayerNorm's output ``(batch, seq, d_model)``.

        ``forward(ids, start_pos, pad)`` is ``F.linear(hidden_states(ids, start_pos, pad), head_weight)``.
        """
        for cache in self._caches:
            cache.check_continues(start_pos, "GPT2")
        body = self.transformer
        return body.ln_f(body.blocks(body.pos(self.embed(ids), start_pos, pad), pad))

    @property
    def head_weight(self) -> Float[Tensor, "vocab d_model"]:
        """The head's ``(vocab, d_model)`` table; the token embedding's own when ``cfg.tie_embeddings``."""
        return self.transformer.head.weight
