"""User dims mypy must accept: a CausalConfig subclass, a frozen dataclass config, local sizes, a stateless layer."""

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded

Wide = Literal["batch seq width"]


@dataclass(frozen=True)
class GQAConfig(tl.CausalConfig):
    kv_heads: int = 1


@dataclass(frozen=True)
class MixerConfig:
    seq_len: int
    width: int


class KVMix(Layer[Embedded, Embedded]):
    def __init__(self, cfg: GQAConfig) -> None:
        super().__init__(cfg)
        self.proj = torch.nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim)

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], keys: Float[Tensor, "batch kv_heads seq head_dim"]
    ) -> Float[Tensor, "batch seq d_model"]:
        return x


class Mixer(Layer[Wide, Wide]):
    local_dims = ("rank",)

    def __init__(self, cfg: MixerConfig, rank: int) -> None:
        super().__init__(cfg, rank=rank)
        self.down = torch.nn.Linear(cfg.width, self.dim_size("rank"))

    def forward(self, x: Float[Tensor, "batch seq width"]) -> Float[Tensor, "batch seq width"]:
        return x


class Double(Layer[Embedded, Embedded]):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return 2 * x


cfg = GQAConfig(batch=2, seq_len=16, vocab=32, heads=4, head_dim=4, ffn_hidden=32, layers=2, kv_heads=2)
blocks = tl.nn.Stack([tl.nn.TransformerBlock(cfg, index=i, heads=2 * (i + 1), ffn=32 * (i + 1)) for i in range(2)])
body: Layer[Embedded, Embedded] = Double() >> KVMix(cfg) >> blocks >> tl.nn.MLP(cfg, ffn=8)
mixer: Layer[Wide, Wide] = Mixer(MixerConfig(seq_len=8, width=6), rank=3) >> Mixer(MixerConfig(seq_len=8, width=6), 2)
