"""typedlm: shape-typed GPT-2 models for PyTorch.

A shape bug is reported by mypy (``Layer[In, Out]`` composition), when a model is built (dims must agree
across layers) or on the first call (`ShapeError` naming the dimension) — and a checked model trains as
fast as an untyped one.
"""

from typedlm import card, checks, generate, hf, losses, models, nn, shapes, tokenizers
from typedlm.checks import checked
from typedlm.config import CausalConfig
from typedlm.errors import ConfigError, ShapeError
from typedlm.layer import Chain, Layer
from typedlm.sampling import Sampling

__all__ = [
    "CausalConfig",
    "Chain",
    "ConfigError",
    "Layer",
    "Sampling",
    "ShapeError",
    "card",
    "checked",
    "checks",
    "generate",
    "hf",
    "losses",
    "models",
    "nn",
    "shapes",
    "tokenizers",
]
__version__ = "0.1.0"
