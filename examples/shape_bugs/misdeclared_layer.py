"""A user layer whose declared type disagrees with its forward: it says it gives logits, it gives embeddings."""

import torch
from jaxtyping import Float
from torch import Tensor

from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits

from ._common import cfg

CAUGHT_AT = "import"
MESSAGE = 'forward annotates its output as "batch seq d_model", not "batch seq vocab"'


class Readout(Layer[Embedded, Logits]):
    """Meant to be the model's readout; its forward was copied from a residual layer."""

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return 2 * x


def build() -> Readout:
    return Readout(cfg)


def run(model: Readout) -> None:
    model(torch.randn(2, 8, cfg.d_model))
