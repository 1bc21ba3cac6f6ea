"""A missing causal mask: ``scaled_dot_product_attention`` without ``is_causal=True`` lets tokens see the future."""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "SelfAttention: the output at position 0 changes when the input at position 1 changes"


class SelfAttention(Layer[Embedded, Embedded]):
    """Multi-head self-attention (meant to be causal)."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.qkv = torch.nn.Linear(config.d_model, 3 * config.d_model)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        batch, seq, d_model = x.shape
        q, k, v = (t.view(batch, seq, self.cfg.heads, -1).transpose(1, 2) for t in self.qkv(x).split(d_model, dim=2))
        y = F.scaled_dot_product_attention(q, k, v)  # should pass is_causal=True
        return y.transpose(1, 2).reshape(batch, seq, d_model)


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> SelfAttention(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
