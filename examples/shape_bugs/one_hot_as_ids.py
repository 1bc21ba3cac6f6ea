"""One-hot rows fed where token ids are expected."""

import torch
import torch.nn.functional as F

import typedlm as tl

from ._common import cfg

CAUGHT_AT = "first call"
MESSAGE = 'ids expected "batch seq" as an integer tensor'


def build() -> tl.models.GPT2:
    return tl.models.GPT2(cfg)


def run(model: tl.models.GPT2) -> None:
    ids = torch.randint(cfg.vocab, (2, 8))
    model(F.one_hot(ids, cfg.vocab).float())  # meant for causal_transformer_one_hot
