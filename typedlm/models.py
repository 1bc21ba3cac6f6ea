"""Model constructors mirroring TorchLean's ``NN.API.nn.models``, and `GPT2`.

All three share one body, `CausalTransformer` (positions → blocks → LayerNorm → head); they differ only
in how tokens enter: as embeddings, as one-hot rows, or as ids.
"""

import contextlib
from collections.abc import Iterator

from jaxtyping import Bool, Float, Int
from torch import Tensor

from typedlm.config import CausalConfig
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


class CausalTransformer(Layer[Embedded, Logits]):
    """The shared body: learned positions, ``cfg.layers`` pre-LN blocks, a final LayerNorm and the LM head."""

    def __init__(
        self, cfg: CausalConfig, *, seed: int = 0, tied_to: TokenEmbedding | OneHotEmbedding | None = None
    ) -> None:
        super().__init__(cfg)
        self.pos = PositionalEmbedding(cfg, seed=seed)
        self.blocks = Stack([TransformerBlock(cfg, index=i, seed=seed) for i in range(cfg.layers)])
        self.ln_f = LayerNorm(cfg)
        self.head = LMHead(cfg, tied_to, seed=seed)
        self.dim_env = self.head.dim_env

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq vocab"]:
        x = self.pos(x, start_pos, pad)
        x = self.blocks(x, pad)
        return self.head(self.ln_f(x))


def causal_transformer_from_embeddings(
    cfg: CausalConfig, *, seed: int = 0, tied_to: TokenEmbedding | OneHotEmbedding | None = None
) -> CausalTransformer:
    """``Layer[Embedded, Logits]``: pos → blocks → LN → head (head tied to ``tied_to`` if given)."""
    return CausalTransformer(cfg, seed=seed, tied_to=tied_to)


def causal_transformer_one_hot(cfg: CausalConfig, *, seed: int = 0) -> Layer[OneHot, Logits]:
    """``Layer[OneHot, Logits]``: one-hot rows @ embedding table, then the shared body."""
    embed = OneHotEmbedding(cfg, seed=seed)
    return embed >> causal_transformer_from_embeddings(cfg, seed=seed, tied_to=_tie(cfg, embed))


def causal_transformer_indexed(cfg: CausalConfig, *, seed: int = 0) -> Layer[TokenIds, Logits]:
    """``Layer[TokenIds, Logits]``: token ids gathered from the embedding table, then the shared body.

    Built with the same config and seed, it has the same weights (and state-dict keys) as
    `causal_transformer_one_hot`, so both give the same logits.
    """
    embed = TokenEmbedding(cfg, seed=seed)
    return embed >> causal_transformer_from_embeddings(cfg, seed=seed, tied_to=_tie(cfg, embed))


def _tie(cfg: CausalConfig, embed: TokenEmbedding | OneHotEmbedding) -> TokenEmbedding | OneHotEmbedding | None:
    return embed if cfg.tie_embeddings else None


class GPT2(Layer[TokenIds, Logits]):
    """GPT-2: token ids → logits, with the head tied to the token embedding when ``cfg.tie_embeddings``.

    ``forward(ids, start_pos)`` reads ids at positions ``start_pos .. start_pos + seq - 1``; inside
    ``with model.kv_cache(batch):`` it also reuses the keys and values of positions before ``start_pos``,
    which must then be the number of positions cached (`rewind_kv_cache` goes back). ``pad`` (left-pad
    counts, one per row) makes a row's first ``pad[row]`` columns padding: no position, never attended to.
    """

    boundary = True

    def __init__(self, cfg: CausalConfig, *, seed: int = 0) -> None:
        super().__init__(cfg)
        self.embed = TokenEmbedding(cfg, seed=seed)
        self.transformer = causal_transformer_from_embeddings(cfg, seed=seed, tied_to=_tie(cfg, self.embed))
        self._caches: list[AttentionCache] = []

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
