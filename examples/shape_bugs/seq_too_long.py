"""A sequence longer than the context: a 24-token prompt for a model with 16 positions."""

import torch

import typedlm as tl

from ._common import cfg

CAUGHT_AT = "first call"
MESSAGE = "seq = 24 exceeds cfg.seq_len = 16"


def build() -> tl.models.GPT2:
    return tl.models.GPT2(cfg)


def run(model: tl.models.GPT2) -> None:
    prompt = torch.randint(cfg.vocab, (1, 24))  # should be cropped to prompt[:, -cfg.seq_len:]
    model(prompt)
