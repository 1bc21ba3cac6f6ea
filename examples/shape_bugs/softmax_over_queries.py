"""Softmax over the query axis: attention weights normalised over dim=-2 instead of over the keys."""

import math

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "changes when the input at position"


class HandAttention(Layer[Embedded, Embedded]):
    """Causal self-attention written out by hand, as in a tutorial."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.qkv = torch.nn.Linear(config.d_model, 3 * config.d_model)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        batch, seq, d_model = x.shape
        q, k, v = (t.view(batch, seq, self.cfg.heads, -1).transpose(1, 2) for t in self.qkv(x).split(d_model, dim=2))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.cfg.head_dim)
        future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-2)  # should be dim=-1 (over the keys)
        y: Tensor = weights @ v
        return y.transpose(1, 2).reshape(batch, seq, d_model)


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> HandAttention(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
