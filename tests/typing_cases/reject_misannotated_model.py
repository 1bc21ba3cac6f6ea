"""A builder that promises a one-hot model but returns the indexed one."""

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, OneHot


def build(cfg: tl.CausalConfig) -> Layer[OneHot, Logits]:
    return tl.models.causal_transformer_indexed(cfg)  # E: return-value
