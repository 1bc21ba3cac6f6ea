"""A model wrapper that forgets to pass ``start_pos`` on: cached decoding reads every token at position 0."""

import contextlib
from collections.abc import Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "start_pos=0 but the KV cache holds positions 0..0"


class ScaledGPT2(Layer[TokenIds, Logits]):
    """GPT-2 with a learned temperature on its logits; decodes through the inner model's KV cache."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.gpt = tl.models.GPT2(config)
        self.log_temperature = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids: Int[Tensor, "batch seq"], start_pos: int = 0) -> Float[Tensor, "batch seq vocab"]:
        return self.gpt(ids) / self.log_temperature.exp()  # should be self.gpt(ids, start_pos)

    @contextlib.contextmanager
    def kv_cache(self, batch: int) -> Iterator[None]:
        with self.gpt.kv_cache(batch):
            yield


def build() -> ScaledGPT2:
    return ScaledGPT2(cfg)


def run(model: ScaledGPT2) -> None:
    model(torch.randint(cfg.vocab, (2, 8)))
