"""Continue a prompt with GPT-2 weights saved in Hugging Face's layout (e.g. a downloaded ``gpt2`` directory).

    python -m examples.gpt2_generate --model ~/models/gpt2 --prompt "Hello, I'm a language model,"
    python -m examples.gpt2_generate --model DIR --greedy --max-new-tokens 40
    python -m examples.gpt2_generate --model DIR --num-samples 3 --top-p 0.9 --seed 1

The directory holds config.json and model.safetensors (or pytorch_model.bin), read by `typedlm.hf.load_gpt2`;
text is encoded with GPT-2's BPE (the vocab.json / merges.txt shipped with typedlm unless --bpe-vocab and
--bpe-merges are given) and continued by `GPT2.stream` / `GPT2.generate` with a KV cache. A single sample
is printed as its tokens are chosen.
"""

from __future__ import annotations

import argparse
import codecs
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import torch

import typedlm as tl
from typedlm.cli import ArgumentParser, run_main
from typedlm.hf import load_gpt2
from typedlm.tokenizers import GPT2BPE, gpt2_files
from typedlm.training.device import DEVICES, resolve_device
from typedlm.training.preflight import check_environment, check_input_file


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Show ``(default: X)`` after options whose default is a value (not None, not a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m examples.gpt2_generate",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="Hugging Face GPT-2 directory (config.json + weights)")
    p.add_argument("--bpe-vocab", type=Path, help="GPT-2 vocab.json (default: the copy shipped with typedlm)")
    p.add_argument("--bpe-merges", type=Path, help="GPT-2 merges.txt (default: the copy shipped with typedlm)")
    p.add_argument("--prompt", default="Hello, I'm a language model,", help="text to continue ('' = <|endoftext|>)")
    p.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special tokens such as <|endoftext|> in --prompt as their ids (refused otherwise)",
    )
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate per sample")
    p.add_argument("--num-samples", type=int, default=1, help="samples of the same prompt, decoded as one batch")
    p.add_argument("--temperature", type=float, default=1.0, help="divide the logits by this (0 = greedy)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample among the most likely tokens of mass p")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=int, default=None, help="make sampling repeatable")
    p.add_argument("--no-stop-at-eot", action="store_true", help="keep going after <|endoftext|>")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="auto takes CUDA when a GPU is present")
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values that are wrong whatever the files hold."""
    if (args.bpe_vocab is None) != (args.bpe_merges is None):
        raise tl.ConfigError("--bpe-vocab and --bpe-merges go together: a GPT-2 tokenizer needs both files")
    if args.max_new_tokens < 0:
        raise tl.ConfigError(f"--max-new-tokens {args.max_new_tokens}: must be >= 0")
    if args.num_samples < 1:
        raise tl.ConfigError(f"--num-samples {args.num_samples}: must be >= 1")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise tl.ConfigError(f"--temperature {args.temperature}: must be a finite number >= 0 (0 = greedy)")
    if args.top_k is not None and args.top_k < 1:
        raise tl.ConfigError(f"--top-k {args.top_k}: must be >= 1 (leave it out to sample from all tokens)")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise tl.ConfigError(f"--top-p {args.top_p}: must be in (0, 1]")
    if args.seed is not None and args.seed < 0:
        raise tl.ConfigError(f"--seed {args.seed}: must be >= 0")
    check_environment()
    for flag, path in (("--bpe-vocab", args.bpe_vocab), ("--bpe-merges", args.bpe_merges)):
        if path is not None:
            check_input_file(flag, path)


def _tokenizer(args: argparse.Namespace) -> GPT2BPE:
    vocab, merges = (args.bpe_vocab, args.bpe_merges) if args.bpe_vocab is not None else gpt2_files()
    return GPT2BPE.from_files(vocab, merges)


def _encode_prompt(tok: GPT2BPE, args: argparse.Namespace) -> list[int]:
    """--prompt's ids; a special token in it needs --allow-special (a ConfigError otherwise)."""
    try:
        return tok.encode(args.prompt, allowed_special="all" if args.allow_special else set())
    except ValueError as e:
        reason = str(e).split(". ")[0]  # tiktoken's hint names library keywords, not this program's flag
        raise tl.ConfigError(f"--prompt {args.prompt!r}: {reason}; pass --allow-special to encode it") from None


def _stream(model: tl.models.GPT2, tok: GPT2BPE, ids: torch.Tensor, args: argparse.Namespace, out: TextIO) -> None:
    """Print one sample token by token (bytes of a split UTF-8 character wait for the rest)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in model.stream(ids, args.max_new_tokens, _sampling(args)):
        out.write(decoder.decode(tok.decode_bytes([int(token[0])])))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")


def _sampling(args: argparse.Namespace) -> tl.Sampling:
    return tl.Sampling(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
        stop_at_eot=not args.no_stop_at_eot, seed=args.seed,
    )  # fmt: skip


def run(args: argparse.Namespace, out: TextIO) -> int:
    check_arguments(args)
    device = resolve_device(args.device)
    tok = _tokenizer(args)
    prompt = _encode_prompt(tok, args) if args.prompt else [tok.eot_token or 0]
    model = load_gpt2(args.model).to(device)
    if tok.vocab_size > model.cfg.vocab:
        raise tl.ConfigError(
            f"--model {args.model}: vocab_size {model.cfg.vocab} is smaller than the tokenizer's {tok.vocab_size} ids"
        )
    ids = torch.tensor([prompt] * args.num_samples, device=device)
    out.write(args.prompt)
    if args.num_samples == 1:
        _stream(model, tok, ids, args, out)
        return 0
    out.write("\n")
    samples = model.generate(ids, args.max_new_tokens, _sampling(args))
    for index, sample in enumerate(samples):
        out.write(f"--- sample {index + 1}\n{args.prompt}{tok.decode(sample[len(prompt) :].tolist())}\n")
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("gpt2_generate", lambda: run(args, out or sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
