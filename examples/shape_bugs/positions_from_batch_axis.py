"""Positions taken from the batch axis: ``x.shape[0]`` rows of the position table instead of ``x.shape[1]``."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "LearnedPositions: torch RuntimeError at examples/shape_bugs/positions_from_batch_axis.py:25"


class LearnedPositions(Layer[Embedded, Embedded]):
    """Adds a learned vector per position."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.table = torch.nn.Parameter(torch.zeros(config.seq_len, config.d_model))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x + self.table[: x.shape[0]]  # should be self.table[: x.shape[1]]


def build() -> Layer[TokenIds, Logits]:
    blocks = tl.nn.Stack([tl.nn.TransformerBlock(cfg, index=i) for i in range(cfg.layers)])
    embed = tl.nn.TokenEmbedding(cfg)
    return embed >> LearnedPositions(cfg) >> blocks >> tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg, tied_to=embed)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (8, 8)))  # batch == seq: broadcasting hides the bug
