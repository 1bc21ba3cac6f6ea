"""Wrong input width: 48-wide features (from some other encoder) fed to a 16-wide model body."""

import torch

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits

from ._common import cfg

CAUGHT_AT = "first call"
MESSAGE = "d_model = 16"


def build() -> Layer[Embedded, Logits]:
    return tl.models.causal_transformer_from_embeddings(cfg)


def run(model: Layer[Embedded, Logits]) -> None:
    features = torch.randn(2, 8, 48)  # batch × seq × 48: the encoder's width, not cfg.d_model
    model(features)
