"""An RMSNorm that averages over ``seq``: ``mean(dim=1)`` where the feature axis (-1) was meant."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "RMSNorm: the output at position 0 changes"


class RMSNorm(Layer[Embedded, Embedded]):
    """Root-mean-square normalisation with a learned gain."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.ones(config.d_model))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        rms = x.pow(2).mean(dim=1, keepdim=True).add(1e-6).sqrt()  # should be dim=-1
        return x / rms * self.gain


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> RMSNorm(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
