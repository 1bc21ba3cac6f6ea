"""Targets not shifted: each position is scored against its own input token, so the model learns to copy."""

import torch
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "the targets are not shifted"


@tl.checked
def lm_loss(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
    """The language-modelling loss of one batch of token windows."""
    return tl.losses.cross_entropy_indexed(model(ids), ids)  # should be tl.losses.next_token_cross_entropy


def build() -> tl.models.GPT2:
    return tl.models.GPT2(cfg)


def run(model: tl.models.GPT2) -> None:
    lm_loss(model, torch.randint(cfg.vocab, (2, 8))).backward()  # trains: the loss falls towards 0
