"""Heads merged without the transpose back: ``(batch, heads, seq, head_dim)`` reshaped to ``(batch, seq, d_model)``."""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "changes when the input at position"


class FusedAttention(Layer[Embedded, Embedded]):
    """Multi-head causal attention through scaled_dot_product_attention."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.qkv = torch.nn.Linear(config.d_model, 3 * config.d_model)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        batch, seq, d_model = x.shape
        q, k, v = (t.view(batch, seq, self.cfg.heads, -1).transpose(1, 2) for t in self.qkv(x).split(d_model, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.reshape(batch, seq, d_model)  # should be y.transpose(1, 2).reshape(...)


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> FusedAttention(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
