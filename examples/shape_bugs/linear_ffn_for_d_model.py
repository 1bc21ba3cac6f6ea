"""``nn.Linear(ffn, vocab)`` where ``d_model`` was meant: a readout sized from the wrong config field."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "Readout: torch RuntimeError at examples/shape_bugs/linear_ffn_for_d_model.py:25"


class Readout(Layer[Embedded, Logits]):
    """The model's readout with a bias."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.proj = torch.nn.Linear(config.ffn_hidden, config.vocab)  # should be config.d_model

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq vocab"]:
        logits: Tensor = self.proj(x)
        return logits


def build() -> Layer[TokenIds, Logits]:
    blocks = tl.nn.Stack([tl.nn.TransformerBlock(cfg, index=i) for i in range(cfg.layers)])
    return tl.nn.TokenEmbedding(cfg) >> tl.nn.PositionalEmbedding(cfg) >> blocks >> Readout(cfg)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
