"""A character-level GPT-2 on Shakespeare, with numpygrad's flags.

    python -m examples.char_gpt2                         # 6 blocks × 6 heads, d_model 288, 2048 steps
    python -m examples.char_gpt2 --num-steps 200 --num-blocks 2 --embedding-dim 96

Text (the embedded corpus, or --data-file: a file, a folder of text files or a glob, streamed into a
memory-mapped token cache) → `CharTokenizer` (its alphabet is the corpus's characters, read in blocks) →
train/val split → `typedlm.training.train` → a sample before and after training, and the validation loss.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import typedlm as tl
from typedlm.cli import ArgumentParser, renamed_field, run_main
from typedlm.tokenizers import CharTokenizer
from typedlm.training import TrainConfig, TrainingInterrupted, resolve_device, split_tokens, train
from typedlm.training.preflight import check_environment, check_input_file, check_memory
from typedlm.training.text_data import corpus_alphabet, corpus_source, prepare_text_data


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m examples.char_gpt2", description=__doc__.split("\n\n")[0])
    p.add_argument("--context-size", type=int, default=64, help="characters the model sees (seq_len)")
    p.add_argument("--num-blocks", type=int, default=6, help="transformer blocks")
    p.add_argument("--num-heads", type=int, default=6, help="attention heads (must divide --embedding-dim)")
    p.add_argument("--embedding-dim", type=int, default=288, help="d_model; the MLP is 4x wider")
    p.add_argument("--num-steps", type=int, default=2048, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (warmup, then cosine to lr/10)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout probability")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy")
    p.add_argument("--sample-chars", type=int, default=200, help="characters sampled before and after training")
    p.add_argument("--eval-every", type=int, default=256, help="print the val loss every N steps; 0 = at the end only")
    p.add_argument("--eval-batches", type=int, default=20, help="validation batches in the val loss")
    p.add_argument("--data-file", type=Path, help="UTF-8 text: a file, a folder of text files or a glob, read as "
                   "one text (default: the embedded Shakespeare corpus)")  # fmt: skip
    p.add_argument("--max-chars", type=int, help="use only the first N characters of the text")
    p.add_argument("--seed", type=int, default=1337, help="seed of the weights, batches and sampling")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto takes CUDA if present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


FLAGS = {"batch": "--batch-size", "seq_len": "--context-size", "heads": "--num-heads", "layers": "--num-blocks",
         "dropout": "--dropout", "steps": "--num-steps", "lr": "--lr", "min_lr": "--lr", "eval_every": "--eval-every",
         "eval_batches": "--eval-batches", "seed": "--seed"}  # fmt: skip
"""The flag behind each config field, for error messages."""


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values that are wrong whatever the text holds, and unreadable files, before any work."""
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise tl.ConfigError(f"--temperature {args.temperature}: must be a finite number >= 0 (0 = greedy)")
    for flag, value, low in (("--sample-chars", args.sample_chars, 0), ("--max-chars", args.max_chars, 1),
                             ("--embedding-dim", args.embedding_dim, 1)):  # fmt: skip
        if value is not None and value < low:
            raise tl.ConfigError(f"{flag} {value}: must be >= {low}")
    check_environment()
    path = args.data_file
    if path is not None and not (path.is_dir() or (not path.exists() and glob.has_magic(str(path)))):
        check_input_file("--data-file", path)  # a folder or a glob is checked by find_corpus_files


def configs(args: argparse.Namespace, vocab: int) -> tuple[tl.CausalConfig, TrainConfig]:
    """The model and training configs; a value a config refuses is reported under its flag's name."""
    try:
        cfg = model_config(args, vocab)
        tc = TrainConfig(steps=args.num_steps, lr=args.lr, min_lr=args.lr / 10,
                         warmup_steps=min(100, args.num_steps // 10), eval_every=args.eval_every,
                         eval_batches=args.eval_batches, seed=args.seed, device=args.device,
                         progress=not args.no_progress)  # fmt: skip
    except tl.ConfigError as e:  # "CausalConfig.seq_len=0: ..." is "--context-size 0: ..." here
        raise renamed_field(e, FLAGS) from None
    return cfg, tc


def model_config(args: argparse.Namespace, vocab: int) -> tl.CausalConfig:
    """numpygrad's sizes as a `CausalConfig`: ``head_dim = embedding_dim / num_heads``, ``ffn = 4 * d_model``."""
    if args.embedding_dim % args.num_heads:
        raise tl.ConfigError(
            f"--embedding-dim {args.embedding_dim} is not a multiple of --num-heads {args.num_heads} "
            "(d_model = heads * head_dim)"
        )
    return tl.CausalConfig(batch=args.batch_size, seq_len=args.context_size, vocab=vocab, heads=args.num_heads,
                           head_dim=args.embedding_dim // args.num_heads, ffn_hidden=4 * args.embedding_dim,
                           layers=args.num_blocks, dropout=args.dropout)  # fmt: skip


def sample(model: tl.models.GPT2, tokenizer: CharTokenizer, args: argparse.Namespace, start: str) -> str:
    """``--sample-chars`` characters continuing ``start`` (a newline, or the corpus's first character)."""
    if args.sample_chars == 0:
        return ""
    device = next(model.parameters()).device
    prompt = torch.tensor([tokenizer.encode(start)], device=device)
    ids = model.generate(prompt, args.sample_chars, tl.Sampling(temperature=args.temperature, seed=args.seed))
    return tokenizer.decode(ids[0, 1:].tolist())


def run(args: argparse.Namespace) -> float:
    """Train and print; returns the final validation loss (nats per character)."""
    check_arguments(args)
    device = resolve_device(args.device)
    source = corpus_source(args.data_file, max_chars=args.max_chars, allow_small=True)
    tokenizer = CharTokenizer(corpus_alphabet(source))
    cfg, tc = configs(args, tokenizer.vocab_size)
    check_memory(cfg, device)
    data = prepare_text_data(source, tokenizer, progress=not args.no_progress)
    tokens = data.tokens  # a memmap of the token cache for a corpus on disk
    train_tokens, val_tokens = split_tokens(tokens, 0.1)
    model = tl.models.GPT2(cfg, seed=args.seed)
    print(f"data: {data.name}, {len(tokens):,} characters, alphabet of {tokenizer.vocab_size}; model: "
          f"{model.param_count():,} parameters ({cfg.layers} blocks × {cfg.heads} heads, "
          f"d_model {cfg.d_model})")  # fmt: skip
    first = "\n" if "\n" in tokenizer.alphabet else tokenizer.decode(tokens[:1].tolist())  # a character it knows
    print("sample before training:\n" + sample(model, tokenizer, args, first) + "\n" + "-" * 72)
    start = time.perf_counter()
    log = train(model, cfg, train_tokens, val_tokens, tc, vocab_size=tokenizer.vocab_size,
                tokenizer_hash=tokenizer.fingerprint)  # fmt: skip
    seconds = time.perf_counter() - start
    val = log.final_val_loss
    assert val is not None  # train() evaluates after the last step
    print("-" * 72 + "\nsample after training:\n" + sample(model, tokenizer, args, first) + "\n" + "-" * 72)
    print(f"train loss {log.first_loss:.4f} → {log.final_loss:.4f}; val loss {val:.4f} "
          f"after {args.num_steps} steps in {seconds:.0f} s on {log.device}")  # fmt: skip
    return val


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            run(args)
        except TrainingInterrupted as e:  # Ctrl-C: stopped at a step boundary
            print(f"char_gpt2: {e}", file=sys.stderr)
            return e.exit_status
        return 0

    return run_main("char_gpt2", body)


if __name__ == "__main__":
    sys.exit(main())
