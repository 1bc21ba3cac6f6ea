"""Train a GPT-2-style model on a text file, then sample from it.

    python -m examples.text_gpt2                                   # bytes, embedded Shakespeare, ~3 min
    python -m examples.text_gpt2 --bpe-vocab V --bpe-merges M      # GPT-2 BPE, 4,096-id local vocabulary on a CPU
    python -m examples.text_gpt2 --bpe-vocab V --bpe-merges M --data-file 'books/*.txt' --out out/books
    torchrun --nproc_per_node=2 -m examples.text_gpt2 --device cpu --out out/ddp  # data parallel (gloo)

Text (the embedded corpus, or --data-file: a file, a folder of text files or a glob, tokenized once
into a memory-mapped cache) → tokenizer (bytes by default; GPT-2 BPE with --bpe-vocab/--bpe-merges,
projected on a CPU onto the corpus's most frequent ids unless --full-vocab) → train/val split →
`typedlm.training.train` → samples. The model is
`typedlm.models.GPT2` and the loss `typedlm.losses.next_token_cross_entropy`, shape-checked at runtime in
the default mode (TYPEDLM_CHECKS). Everything is written to --out: checkpoint/, loss.png, trainlog.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import typedlm as tl
from typedlm.cli import ArgumentParser, run_main
from typedlm.tokenizers import LocalTokenizer, Tokenizer
from typedlm.training import (
    TrainingDiverged,
    TrainingInterrupted,
    check_run_dir,
    find_checkpoint,
    resolve_device,
    split_tokens,
    train,
)
from typedlm.training.batches import check_windows
from typedlm.training.corpus import Corpus, CorpusFiles
from typedlm.training.device import autocast_dtype
from typedlm.training.distributed import destroy_process_group, dist_info_from_env
from typedlm.training.flags import (
    HelpFormatter,
    add_model_flags,
    add_training_flags,
    configs_from_flags,
    presets_epilog,
)
from typedlm.training.preflight import (
    check_environment,
    check_input_file,
    check_log_file,
    check_memory,
    check_output_dir,
)
from typedlm.training.text_data import (
    DEFAULT_LOCAL_VOCAB,
    base_tokenizer,
    choose_local_vocab,
    corpus_source,
    encode_text,
    prepare_text_data,
)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m examples.text_gpt2",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=presets_epilog(),
        formatter_class=HelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data-file",
        type=Path,
        help="UTF-8 training text: a file, a folder of text files or a glob such as 'books/*.txt', read as one "
        "text and tokenized once into a memory-mapped cache (default: the embedded Shakespeare corpus)",
    )
    data.add_argument(
        "--allow-small-data",
        action="store_true",
        help="train on a --data-file under 100 MiB (refused otherwise: a small corpus is memorised)",
    )
    data.add_argument("--max-chars", type=int, help="use only the first N characters of the corpus (default: all)")
    data.add_argument("--val-fraction", type=float, default=0.1, help="tail of the tokens kept for validation")
    data.add_argument(
        "--finetune-file",
        type=Path,
        help="after training, fine-tune on this UTF-8 text (any size) for --finetune-steps",
    )
    data.add_argument("--finetune-steps", type=int, default=200, help="steps of fine-tuning on --finetune-file")

    tok = p.add_argument_group("tokenizer (bytes unless --bpe-vocab and --bpe-merges are given)")
    tok.add_argument("--bpe-vocab", type=Path, help="GPT-2 vocab.json (needs --bpe-merges)")
    tok.add_argument("--bpe-merges", type=Path, help="GPT-2 merges.txt (needs --bpe-vocab)")
    tok.add_argument(
        "--local-vocab",
        type=int,
        help="project BPE ids onto the corpus's N-1 most frequent ids plus OOV (TorchLean's projection); "
        f"default: {DEFAULT_LOCAL_VOCAB} on a CPU, the full 50,257-way head on CUDA",
    )
    tok.add_argument("--full-vocab", action="store_true", help="train the full 50,257-way head, on a CPU too")
    tok.add_argument("--vocab", type=int, help="model vocabulary size (default: the tokenizer's)")

    add_model_flags(p)
    add_training_flags(p)

    out = p.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, default=Path("out/text_gpt2"), help="folder for checkpoint/, loss.png and trainlog.json"
    )
    out.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    out.add_argument("--overwrite", action="store_true", help="replace the run --out holds (refused without it)")
    out.add_argument("--log", type=Path, help="TrainLog JSON path (default: OUT/trainlog.json)")

    gen = p.add_argument_group("sampling after training")
    gen.add_argument("--prompt", default="First Citizen:", help="text the sample continues")
    gen.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special tokens such as <|endoftext|> in prompts as their ids (refused otherwise)",
    )
    gen.add_argument("--generate", type=int, default=300, help="tokens to sample; 0 = none")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest tokens; 0 = all")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off")
    gen.add_argument(
        "--interactive", action="store_true", help="then read prompts from stdin; an empty line or :q exits"
    )
    return p


def data_source(args: argparse.Namespace, flag: str, path: Path | None) -> Corpus | CorpusFiles:
    """The embedded corpus, the first --max-chars of it or of --data-file (a folder's too), or the files
    ``path`` names; a --finetune-file may be small."""
    training = flag == "--data-file"
    return corpus_source(
        path,
        max_chars=args.max_chars if training else None,
        allow_small=args.allow_small_data or not training,
        flag=flag,
    )


def encode_prompt(tokenizer: Tokenizer, args: argparse.Namespace, prompt: str) -> list[int]:
    """``prompt``'s ids; a special token in it is refused unless --allow-special (a ConfigError)."""
    try:
        ids = tokenizer.encode(prompt, allowed_special="all" if args.allow_special else set())
    except ValueError as e:
        raise tl.ConfigError(
            f"--prompt {prompt!r}: {str(e).split('. ')[0]}; pass --allow-special to encode it"
        ) from None
    if isinstance(tokenizer, LocalTokenizer) and 0 in ids:
        print(
            f"note: {ids.count(0)} token(s) of {prompt!r} are outside the --local-vocab and read as OOV",
            file=sys.stderr,
        )
    return ids or tokenizer.encode("\n")


def sample(model: tl.models.GPT2, tokenizer: Tokenizer, args: argparse.Namespace, prompt: str) -> str:
    """``prompt`` followed by up to ``--generate`` sampled tokens (KV-cached decoding), decoded."""
    ids = encode_prompt(tokenizer, args, prompt)
    device = next(model.parameters()).device
    out = model.generate(
        torch.tensor([ids], device=device),
        args.generate,
        tl.Sampling(
            temperature=args.temperature,
            top_k=args.top_k or None,
            top_p=args.top_p if args.top_p < 1 else None,
            seed=args.seed,
        ),
    )
    return tokenizer.decode(out[0].tolist())


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values that are wrong whatever the files hold (before anything is read)."""
    if (args.bpe_vocab is None) != (args.bpe_merges is None):
        given, missing = ("--bpe-vocab", "--bpe-merges") if args.bpe_merges is None else ("--bpe-merges", "--bpe-vocab")
        raise tl.ConfigError(f"{given} requires {missing}: a GPT-2 tokenizer needs both vocab.json and merges.txt")
    if args.local_vocab is not None and args.bpe_vocab is None:
        raise tl.ConfigError("--local-vocab projects GPT-2 BPE ids: it needs --bpe-vocab and --bpe-merges")
    if args.full_vocab and args.bpe_vocab is None:
        raise tl.ConfigError("--full-vocab keeps all GPT-2 BPE ids: it needs --bpe-vocab and --bpe-merges")
    if args.full_vocab and args.local_vocab is not None:
        raise tl.ConfigError("--full-vocab and --local-vocab contradict each other: keep all ids, or project them")
    for flag, value, low in (("--generate", args.generate, 0), ("--max-chars", args.max_chars, 1),
                             ("--finetune-steps", args.finetune_steps, 1), ("--top-k", args.top_k, 0)):  # fmt: skip
        if value is not None and value < low:
            raise tl.ConfigError(f"{flag} {value}: must be >= {low}")
    if not 0.0 < args.val_fraction < 1.0:
        raise tl.ConfigError(f"--val-fraction {args.val_fraction}: must be in (0, 1)")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise tl.ConfigError(f"--temperature {args.temperature}: must be a finite number >= 0 (0 = greedy)")
    if not 0.0 < args.top_p <= 1.0:
        raise tl.ConfigError(f"--top-p {args.top_p}: must be in (0, 1] (1 = off)")


def check_files(args: argparse.Namespace, is_main: bool) -> None:
    """Inputs readable, outputs writable, and an --out holding a run not replaced by accident."""
    check_environment()
    for flag, path in (("--data-file", args.data_file), ("--finetune-file", args.finetune_file),
                       ("--bpe-vocab", args.bpe_vocab), ("--bpe-merges", args.bpe_merges)):  # fmt: skip
        if path is not None and not _many_files(flag, path):
            check_input_file(flag, path)
    if is_main:
        check_output_dir("--out", args.out)
        if args.log is not None:
            check_log_file("--log", args.log)
        check_run_dir(args.out, resume=args.resume, overwrite=args.overwrite)


def _many_files(flag: str, path: Path) -> bool:
    """Whether ``path`` names a folder or a glob of corpus files (checked by `find_corpus_files`)."""
    return flag in ("--data-file", "--finetune-file") and (
        path.is_dir() or (not path.exists() and glob.has_magic(str(path)))
    )


def check_vocab(args: argparse.Namespace, base: Tokenizer, local_vocab: int | None) -> int:
    """The model's vocabulary size as far as it is known before encoding; --local-vocab and --vocab checked."""
    vocab = base.vocab_size
    if local_vocab is not None:
        if not 2 <= local_vocab <= base.vocab_size:
            raise tl.ConfigError(f"--local-vocab {local_vocab}: must be in 2..{base.vocab_size} (the tokenizer's)")
        vocab = local_vocab
    if args.vocab is not None and args.vocab < vocab:
        raise tl.ConfigError(f"--vocab {args.vocab}: the tokenizer has {vocab} ids; the model needs at least as many")
    return args.vocab or vocab


def run(args: argparse.Namespace) -> int:
    info = dist_info_from_env()
    say = print if info.is_main else (lambda *a, **k: None)
    check_arguments(args)
    device = resolve_device(args.device, info.local_rank)  # a missing GPU is reported before any work
    check_files(args, info.is_main)
    base = base_tokenizer(args.bpe_vocab, args.bpe_merges)
    encode_prompt(base, args, args.prompt)  # a special token in --prompt is refused now, not after training
    local_vocab = choose_local_vocab(base, device, requested=args.local_vocab, full=args.full_vocab)
    check_memory(
        configs_from_flags(args, check_vocab(args, base, local_vocab))[0],
        device,
        amp=autocast_dtype(args.dtype, device),
    )
    if args.dtype == "bf16" and autocast_dtype("bf16", device) is None:
        say("note: --dtype bf16 applies on CUDA only; the CPU trains in fp32")
    source = data_source(args, "--data-file", args.data_file)
    ft_source = None if args.finetune_file is None else data_source(args, "--finetune-file", args.finetune_file)
    data = prepare_text_data(source, base, local_vocab, progress=info.is_main and not args.no_progress)
    tokenizer, tokens = data.tokenizer, data.tokens
    train_tokens, val_tokens = split_tokens(tokens, args.val_fraction)  # views: nothing is copied
    cfg, tc = configs_from_flags(args, tokenizer.vocab_size)
    for split, part in (("train", train_tokens), ("val", val_tokens)):  # the corpus named if it is too short
        check_windows(part, cfg.seq_len, f"{data.name}: the {split}")
    model = tl.models.GPT2(cfg, seed=args.seed)
    say(
        f"data: {data.name}, {data.size} → {len(tokens):,} tokens "
        f"({type(tokenizer).__name__}, vocab {tokenizer.vocab_size:,}); "
        f"model: {model.param_count():,} parameters, {cfg.layers} layers × d_model {cfg.d_model}, "
        f"checks {tl.checks.current_mode()}"
    )
    note = data.projection_note()
    if note is not None:
        say(f"{note}; --full-vocab trains all {base.vocab_size:,}")
    data_info: dict[str, Any] = {
        "corpus": data.name,
        "size": data.size,
        "tokenizer": type(tokenizer).__name__,
        "vocab_size": tokenizer.vocab_size,
        **({} if data.coverage is None else {"local_vocab_coverage": round(data.coverage, 6)}),
    }
    log_path = args.log or args.out / "trainlog.json"
    common: dict[str, Any] = dict(vocab_size=tokenizer.vocab_size, tokenizer_hash=tokenizer.fingerprint)
    try:
        log = train(
            model,
            cfg,
            train_tokens,
            val_tokens,
            tc,
            out_dir=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            data_info=data_info,
            **common,
        )
        if ft_source is not None:
            if info.is_main:
                log.save(log_path)
            ft_train, ft_val = split_tokens(encode_text(ft_source, tokenizer), args.val_fraction)
            ft_tc = dataclasses.replace(
                tc, steps=args.finetune_steps, warmup_steps=min(tc.warmup_steps, args.finetune_steps // 10)
            )
            ft_out = args.out / "finetune"
            say(f"fine-tuning on {ft_source.name} ({len(ft_train) + len(ft_val):,} tokens) for {ft_tc.steps} steps")
            log = train(
                model,
                cfg,
                ft_train,
                ft_val,
                ft_tc,
                out_dir=ft_out,
                resume=args.resume and find_checkpoint(ft_out) is not None,
                overwrite=not args.resume,  # a new main run replaced --out: its old fine-tuning goes too
                data_info={**data_info, "corpus": ft_source.name, "finetune": True},
                **common,
            )
            log_path = args.log.with_suffix(".finetune.json") if args.log else ft_out / "trainlog.json"
    except TrainingDiverged as e:
        if info.is_main:
            e.log.save(log_path)
        print(f"text_gpt2: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:  # Ctrl-C: stopped at a step boundary, checkpoint written
        if info.is_main:
            e.log.save(log_path)
        print(f"text_gpt2: {e}", file=sys.stderr)
        return e.exit_status
    finally:
        destroy_process_group()
    if not info.is_main:
        return 0
    log.save(log_path)
    print(
        f"loss {log.first_loss:.4f} → {log.final_loss:.4f}, val {log.final_val_loss:.4f} "
        f"after {len(log.steps)} steps, {log.tokens_per_s or 0:,.0f} tokens/s; log {log_path}"
    )
    if args.generate > 0:
        print("-" * 72 + "\n" + sample(model, tokenizer, args, args.prompt) + "\n" + "-" * 72)
    if args.interactive:
        interact(model, tokenizer, args)
    return 0


def interact(model: tl.models.GPT2, tokenizer: Tokenizer, args: argparse.Namespace) -> None:
    print("prompt> ", end="", flush=True)
    for line in sys.stdin:
        prompt = line.rstrip("\n")
        if prompt.strip() in ("", ":q"):
            break
        try:
            print(sample(model, tokenizer, args, prompt), end="")
        except tl.ConfigError as e:  # a special token in the line: say so and read the next one
            print(f"text_gpt2: {e}", end="")
        print("\nprompt> ", end="", flush=True)
    print()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("text_gpt2", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
