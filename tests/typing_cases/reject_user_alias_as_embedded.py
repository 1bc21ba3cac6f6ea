"""A user's own shape has the dims of `Embedded` but another meaning: mypy tells them apart."""

from typing import Literal

from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded

Hidden = Literal["batch seq d_model", "hidden"]

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)


class Encode(Layer[Embedded, Hidden]):
    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x


class Decode(Layer[Hidden, Embedded]):
    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x


fine: Layer[Embedded, Embedded] = Encode(cfg) >> Decode(cfg)
model = Encode(cfg) >> tl.nn.LayerNorm(cfg)  # E: operator
also: Layer[Embedded, Embedded] = tl.nn.LayerNorm(cfg) >> Decode(cfg)  # E: operator
