"""Shifted targets: the targets are shifted by one but the logits are not (seq - 1 targets for seq logits)."""

import torch

import typedlm as tl

from ._common import cfg

CAUGHT_AT = "first call"
MESSAGE = "seq = 8 (fixed by logits), got seq = 7"


def build() -> tl.models.GPT2:
    return tl.models.GPT2(cfg)


def run(model: tl.models.GPT2) -> None:
    ids = torch.randint(cfg.vocab, (2, 8))
    logits = model(ids)  # should be model(ids[:, :-1])
    tl.losses.cross_entropy_indexed(logits, ids[:, 1:])
