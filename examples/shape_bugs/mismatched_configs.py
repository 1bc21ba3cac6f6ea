"""Mismatched configs: the body is built from a wider copy of the config than the embedding."""

import torch

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "construction"
MESSAGE = "d_model differs"


def build() -> Layer[TokenIds, Logits]:
    wider = cfg.replace(head_dim=16)  # meant to try a wider model, but only the body got it
    return tl.nn.TokenEmbedding(cfg) >> tl.models.causal_transformer_from_embeddings(wider)


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
