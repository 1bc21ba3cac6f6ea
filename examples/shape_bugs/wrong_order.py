"""Wrong composition order: the LM head is put before the transformer blocks."""

import torch

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "construction"
MESSAGE = "cannot compose"


def build() -> Layer[TokenIds, Logits]:
    blocks = tl.nn.Stack([tl.nn.TransformerBlock(cfg, index=i) for i in range(cfg.layers)])
    return tl.nn.TokenEmbedding(cfg) >> tl.nn.LMHead(cfg) >> blocks  # E: operator


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.zeros(2, 8, dtype=torch.long))
