"""Attention weights of a `CausalSelfAttention`, which itself runs fused SDPA and never forms them.

`attention_weights` recomputes ``softmax(q kᵀ / sqrt(head_dim) + causal mask)`` from the layer's own qkv
projection of its input; `capture_attention` runs a `GPT2` on ids and returns them for one block, its
input taken by a forward pre-hook (the block's LN'd residual stream, as the layer saw it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from typedlm.models import GPT2
from typedlm.nn import CausalSelfAttention, TransformerBlock

__all__ = ["attention_weights", "capture_attention"]


def attention_weights(
    attn: CausalSelfAttention, x: Float[Tensor, "batch seq d_model"]
) -> Float[Tensor, "batch heads seq seq"]:
    """Row ``i`` of head ``h``: how much query position ``i`` attends to each key position (rows sum to 1)."""
    batch, seq, d_model = x.shape
    q, k, _ = attn.qkv(x).split(d_model, dim=2)
    q = q.view(batch, seq, attn.heads, attn.head_dim).transpose(1, 2)
    k = k.view(batch, seq, attn.heads, attn.head_dim).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)
    future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
    weights: Tensor = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights


@torch.no_grad()
def capture_attention(
    model: GPT2, ids: Int[Tensor, "batch seq"], block: int = -1
) -> Float[Tensor, "batch heads seq seq"]:
    """Run ``model`` on ``ids`` (in eval mode) and return the attention weights of block ``block``."""
    blocks = [b for b in model.transformer.blocks if isinstance(b, TransformerBlock)]
    attn = blocks[block].attn
    seen: list[Tensor] = []

    def keep_input(_module: Any, args: tuple[Any, ...]) -> None:
        seen.append(args[0])

    handle = attn.register_forward_pre_hook(keep_input)
    was_training = model.training
    try:
        model.eval()
        model(ids)
    finally:
        handle.remove()
        model.train(was_training)
    return attention_weights(attn, seen[0])
