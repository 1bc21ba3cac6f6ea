"""A KV-cache decoding loop that forgets ``start_pos``: every new token is read as if at position 0."""

import torch
from jaxtyping import Int
from torch import Tensor

import typedlm as tl

from ._common import cfg

CAUGHT_AT = "check"
MESSAGE = "start_pos=0 but the KV cache holds positions"


@tl.checked
def greedy(model: tl.models.GPT2, prompt: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq+3"]:
    """The prompt followed by three greedily chosen tokens, decoded with the KV cache."""
    ids = prompt
    with torch.no_grad(), model.kv_cache(prompt.shape[0]):
        logits = model(prompt)
        for _ in range(3):
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            logits = model(ids[:, -1:])  # should be model(ids[:, -1:], ids.shape[1] - 1)
    return ids


def build() -> tl.models.GPT2:
    return tl.models.GPT2(cfg)


def run(model: tl.models.GPT2) -> None:
    greedy(model, torch.randint(cfg.vocab, (2, 5)))
