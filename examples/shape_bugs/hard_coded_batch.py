"""A hard-coded batch size: heads split with ``view(cfg.batch, ...)``, right only for the training batch."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "works with batch=2 but not batch="


class HeadMixer(Layer[Embedded, Embedded]):
    """Mixes the features within each head by a learned (head_dim, head_dim) matrix."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.mix = torch.nn.Parameter(torch.eye(config.head_dim))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        heads = x.view(self.cfg.batch, -1, self.cfg.heads, self.cfg.head_dim)  # should be x.shape[0]
        return (heads @ self.mix).flatten(2)


def build() -> Layer[TokenIds, Logits]:
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> HeadMixer(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (cfg.batch, 8)))  # the training batch: no error until evaluation
