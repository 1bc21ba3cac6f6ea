"""A user layer that drops a column: slicing off a "padding" feature that was never there."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "its result expected"


class ScaleFeatures(Layer[Embedded, Embedded]):
    """Rescale the residual stream (and, by mistake, drop its last feature)."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.ones(config.d_model))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x[..., :-1] * self.scale[:-1]


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> ScaleFeatures(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
