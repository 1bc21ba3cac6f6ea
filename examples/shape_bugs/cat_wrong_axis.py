"""``torch.cat`` on the wrong axis: two half-width paths joined along ``seq`` instead of the features."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "TwoPath: its result expected"


class TwoPath(Layer[Embedded, Embedded]):
    """Half the features through one projection, half through another, joined again."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        half = config.d_model // 2
        self.left, self.right = torch.nn.Linear(config.d_model, half), torch.nn.Linear(config.d_model, half)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return torch.cat([self.left(x), self.right(x)], dim=1)  # should be dim=-1


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> TwoPath(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
