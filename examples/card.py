"""Print a model's algorithm card (Phuong & Hutter, arXiv:2207.09238, Algorithm 10), read from the model.

    python -m examples.card --preset gpt2-small
    python -m examples.card --preset tiny --vocab 65 --full --untied

The model is built on PyTorch's meta device: the card needs shapes, not weights, so even gpt2-xl prints
in a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

import typedlm as tl
from typedlm.card import algorithm_card, algorithm_card_full
from typedlm.training import PRESETS

LARGER = {"gpt2-medium": tl.CausalConfig.gpt2_medium, "gpt2-large": tl.CausalConfig.gpt2_large,
          "gpt2-xl": tl.CausalConfig.gpt2_xl}  # fmt: skip
"""GPT-2 sizes beyond the training presets of `typedlm.training.presets`."""


def preset_config(name: str, vocab: int | None, *, untied: bool) -> tl.CausalConfig:
    """The preset's sizes; ``vocab`` defaults to GPT-2's 50,257 for gpt2-* and 256 (bytes) otherwise."""
    vocab = vocab or (50257 if name.startswith("gpt2") else 256)
    if name in LARGER:
        return LARGER[name](vocab=vocab, tie_embeddings=not untied)
    return tl.CausalConfig(vocab=vocab, tie_embeddings=not untied, **PRESETS[name].model)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.card", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=[*PRESETS, *LARGER], default="gpt2-small", help="model size")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: 50257 for gpt2-*, else 256)")
    parser.add_argument("--untied", action="store_true", help="a separate unembedding matrix W_u")
    parser.add_argument("--full", action="store_true", help="inline the layer-norm, attention and MLP steps")
    args = parser.parse_args(argv)
    try:
        cfg = preset_config(args.preset, args.vocab, untied=args.untied)
    except tl.ConfigError as e:
        parser.error(str(e))
    with torch.device("meta"):
        model = tl.models.GPT2(cfg)
    print((algorithm_card_full if args.full else algorithm_card)(model), end="")
    print(f"param_count() = {model.param_count():,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
