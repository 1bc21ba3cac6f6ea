"""Compositions mypy must accept: every chain meets shape to shape."""

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, OneHot, TokenIds

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)


class Doubler(Layer[Embedded, Embedded]):
    """A user layer: subclasses Layer[In, Out] and annotates forward with the same shapes."""

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return 2 * x


blocks = tl.nn.Stack([tl.nn.TransformerBlock(cfg, index=i) for i in range(cfg.layers)])
body: Layer[Embedded, Embedded] = tl.nn.PositionalEmbedding(cfg) >> blocks >> Doubler(cfg) >> tl.nn.LayerNorm(cfg)
indexed: Layer[TokenIds, Logits] = tl.nn.TokenEmbedding(cfg) >> body >> tl.nn.LMHead(cfg)
one_hot: Layer[OneHot, Logits] = tl.models.causal_transformer_one_hot(cfg)
from_ids: Layer[TokenIds, Logits] = tl.models.causal_transformer_indexed(cfg)
gpt2: Layer[TokenIds, Logits] = tl.models.GPT2(cfg)
logits: Tensor = indexed(torch.zeros(2, 16, dtype=torch.long))
