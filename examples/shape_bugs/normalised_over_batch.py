"""Statistics over the batch: features standardised with ``mean(dim=0)``, so samples leak into each other."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "Standardise: the output of sample"


class Standardise(Layer[Embedded, Embedded]):
    """Zero-mean, unit-variance features."""

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return (x - x.mean(dim=0)) / (x.std(dim=0) + 1e-5)  # should be dim=-1, keepdim=True


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> Standardise(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
