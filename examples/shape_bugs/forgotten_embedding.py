"""A forgotten embedding: the model body (embeddings in) is used as a whole model (token ids in)."""

import torch

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "first call"
MESSAGE = 'x expected "batch seq d_model" as a floating-point tensor'


def build() -> Layer[TokenIds, Logits]:
    model: Layer[TokenIds, Logits] = tl.models.causal_transformer_from_embeddings(cfg)  # E: assignment
    return model


def run(model: Layer[TokenIds, Logits]) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
