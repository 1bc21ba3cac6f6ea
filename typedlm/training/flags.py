"""The command-line flags of a training script: model size and training settings over a ``--preset``.

>>> parser = ArgumentParser(formatter_class=HelpFormatter, epilog=presets_epilog())
>>> add_model_flags(parser); add_training_flags(parser)
>>> cfg, tc = configs_from_flags(parser.parse_args(argv), vocab=tokenizer.vocab_size)

`configs_from_flags` takes the preset's values, overridden by the flags given, and reports a bad value
as the flag that was typed (``--lr 0.0: ...``, not ``TrainConfig.lr=0.0``).
"""

from __future__ import annotations

import argparse

from typedlm.cli import renamed_field
from typedlm.config import CausalConfig
from typedlm.errors import ConfigError
from typedlm.training.device import DTYPES
from typedlm.training.presets import PRESETS, get_preset
from typedlm.training.trainer import TrainConfig

SIZE_FLAGS = ("layers", "heads", "head_dim", "seq_len", "batch", "ffn_hidden", "dropout")
TRAIN_FLAGS = (
    "steps",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "grad_accum",
    "eval_every",
    "eval_batches",
    "log_every",
    "checkpoint_every",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Show ``(default: X)`` after every option that has a fixed default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS, False) and "%(default)" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


def presets_epilog() -> str:
    """The presets and their values, for a parser's epilog."""
    return "presets (options marked 'preset' take these values unless given):\n" + "\n".join(
        f"  {name:12s} {', '.join(f'{k}={v}' for k, v in p.model.items())}; "
        f"{', '.join(f'{k}={v}' for k, v in p.train.items())}\n  {'':12s} ({p.about})"
        for name, p in PRESETS.items()
    )


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """``--preset`` and the model-size flags (``--layers``, ``--heads``, ...; None unless given)."""
    model = parser.add_argument_group("model size (default: the --preset's)")
    model.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="model size and training recipe")
    model.add_argument("--layers", type=int, help="transformer blocks (preset)")
    model.add_argument("--heads", type=int, help="attention heads (preset)")
    model.add_argument("--head-dim", type=int, help="width of one head; d_model = heads * head_dim (preset)")
    model.add_argument("--seq-len", type=int, help="context length in tokens (preset)")
    model.add_argument("--batch", type=int, help="sequences per micro-batch per process (preset)")
    model.add_argument("--ffn-hidden", type=int, help="MLP hidden width (preset)")
    model.add_argument("--dropout", type=float, help="dropout probability (preset)")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The optimizer, schedule, evaluation, device and compile flags (None unless given)."""
    opt = parser.add_argument_group("training (default: the --preset's)")
    opt.add_argument("--steps", type=int, help="optimizer steps (preset)")
    opt.add_argument("--lr", type=float, help="peak learning rate (preset)")
    opt.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay (preset)")
    opt.add_argument("--warmup-steps", type=int, help="linear warmup steps (preset)")
    opt.add_argument("--weight-decay", type=float, help="AdamW decay on >=2-D weights (0.1)")
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this; 0 = off (1.0)")
    opt.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (preset, else 1)")
    opt.add_argument("--eval-every", type=int, help="validate every N steps; 0 = only at the end (preset)")
    opt.add_argument("--eval-batches", type=int, help="validation batches per evaluation (preset)")
    opt.add_argument("--log-every", type=int, help="record losses and throughput every N steps (10)")
    opt.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps; 0 = at each evaluation (0)")
    opt.add_argument("--seed", type=int, default=1337, help="seed of the weights, batches and dropout")
    opt.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto takes CUDA when a GPU is present"
    )
    opt.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="auto",
        help="bf16 autocast on CUDA (auto: when supported); the CPU always trains in fp32",
    )
    opt.add_argument("--compile", action="store_true", help="torch.compile the model")
    opt.add_argument("--no-progress", action="store_true", help="no progress bar")


def configs_from_flags(args: argparse.Namespace, vocab: int) -> tuple[CausalConfig, TrainConfig]:
    """The model and training configs: the preset's values, overridden by the flags that were given;
    ``vocab`` unless ``--vocab`` was given."""
    preset = get_preset(args.preset)
    sizes = {**preset.model, **{k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}}
    settings = {**preset.train, **{k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}}
    try:
        cfg = CausalConfig(vocab=getattr(args, "vocab", None) or vocab, **sizes)
        tc = TrainConfig(
            **settings,
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
            compile=args.compile,
            progress=not args.no_progress,
        )
    except ConfigError as e:  # "TrainConfig.lr=0.0: ..." is "--lr 0.0: ..." to the person who typed it
        flags = {name: "--" + name.replace("_", "-") for name in (*SIZE_FLAGS, *TRAIN_FLAGS, "seed")}
        raise renamed_field(e, flags) from None
    return cfg, tc
