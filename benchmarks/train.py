"""Training-step throughput: typedlm (checks full), typedlm (checks off) and Hugging Face GPT-2, one table.

One step is what `typedlm.training.train` does per optimizer step: forward, cross-entropy, backward,
gradient clipping, AdamW step (weight decay on >= 2-D weights, fused on CUDA) and ``zero_grad``, on
random token batches. The Hugging Face peer is ``transformers.GPT2LMHeadModel`` with
``attn_implementation="sdpa"`` at the same sizes (no dropout, tied head, tanh GELU) and the same loss.

Method: after a warm-up, the variants run interleaved round-robin, one step each per round with the
starting variant rotated, so machine noise hits all alike; we report the median step time as tokens/s,
and each variant's ratio to Hugging Face as the median of per-round ratios. Achieved GFLOP/s counts
nanoGPT's 6·N + 12·L·d_model·T FLOPs per token (N: parameters without position embeddings); the peak
is the best of repeated fp32 (or, under bf16 autocast, bf16) square matmuls on the same device.

torch uses one CPU thread unless ``--threads`` says otherwise: on a 2-core machine shared with other
work, two OpenMP threads per process oversubscribe the cores and a step gets ~30x slower.

Run: ``python -m benchmarks.train`` (nanoGPT's CPU config, about a minute here); ``--preset``, ``--device``,
``--dtype``, ``--rounds``, ``--threads``. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import typedlm as tl
from typedlm.training import TrainConfig, configure_optimizer, get_preset, resolve_device
from typedlm.training.device import autocast_dtype

Step = Callable[[Tensor, Tensor], float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    model: nn.Module,
    forward: Callable[[Tensor], Tensor],
    device: torch.device,
    amp: torch.dtype | None,
    mode: tl.checks.Mode | None = None,
) -> Step:
    """A closure running one training step of ``model`` and returning its seconds."""
    optimizer = configure_optimizer(model, TrainConfig(), device)

    def step(x: Tensor, y: Tensor) -> float:
        ctx = tl.checks.mode(mode) if mode is not None else contextlib.nullcontext()
        autocast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
        _sync(device)
        t = time.perf_counter()
        with ctx:
            with autocast:
                loss = tl.losses.cross_entropy_indexed(forward(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t

    return step


def hf_gpt2(cfg: tl.CausalConfig) -> nn.Module | None:
    """``transformers.GPT2LMHeadModel`` with sdpa attention at ``cfg``'s sizes, or None if not installed."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    sizes: dict[str, Any] = dict(
        vocab_size=cfg.vocab,
        n_positions=cfg.seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.layers,
        n_head=cfg.heads,
        n_inner=cfg.ffn_hidden,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=cfg.layer_norm_eps,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="sdpa",  # a PretrainedConfig keyword that GPT2Config passes on
    )
    model = GPT2LMHeadModel(GPT2Config(**sizes))
    attn = model.config._attn_implementation
    if type(model).__name__ != "GPT2LMHeadModel" or attn != "sdpa":
        raise RuntimeError(f"expected GPT2LMHeadModel with sdpa attention, got {type(model).__name__} with {attn}")
    return model


def flops_per_token(cfg: tl.CausalConfig, params: int) -> float:
    """Training FLOPs per token (forward + backward), nanoGPT's estimate."""
    non_positional = params - cfg.seq_len * cfg.d_model
    return 6.0 * non_positional + 12.0 * cfg.layers * cfg.d_model * cfg.seq_len


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 1024, reps: int = 20) -> float:
    """Best GFLOP/s of ``size``-square matmuls on ``device``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", help="model sizes from typedlm.training.presets (default: cpu)")
    p.add_argument("--vocab", type=int, default=256, help="vocabulary (default: 256, bytes)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=40, help="timed rounds (default: 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = torch's default (default: 1)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    amp = autocast_dtype(args.dtype, device)
    sizes = {k: v for k, v in get_preset(args.preset).model.items() if k != "dropout"}
    cfg = tl.CausalConfig(vocab=args.vocab, **sizes)
    tokens = cfg.batch * cfg.seq_len

    typed_full = tl.models.GPT2(cfg, seed=0).to(device)
    typed_off = tl.models.GPT2(cfg, seed=0).to(device)
    variants: dict[str, tuple[nn.Module, Step]] = {
        "typedlm, checks full": (typed_full, make_step(typed_full, typed_full, device, amp, "full")),
        "typedlm, checks off": (typed_off, make_step(typed_off, typed_off, device, amp, "off")),
    }
    hf = hf_gpt2(cfg)
    if hf is not None:
        hf.to(device)

        def hf_forward(x: Tensor, model: Any = hf) -> Tensor:
            logits: Tensor = model(input_ids=x).logits
            return logits

        variants["HF GPT2LMHeadModel (sdpa)"] = (hf, make_step(hf, hf_forward, device, amp))

    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len + 1), generator=g) for _ in range(8)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.warmup + args.rounds):
        ids = batches[r % len(batches)].to(device)
        x, y = ids[:, :-1], ids[:, 1:]
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            seconds = variants[name][1](x, y)
            if r >= args.warmup:
                times[name].append(seconds)

    peak = matmul_peak(device, amp or torch.float32)
    hf_name = "HF GPT2LMHeadModel (sdpa)"
    print(
        f"training step, {args.preset} preset: {cfg.layers} layers, {cfg.heads} heads x {cfg.head_dim}, "
        f"seq {cfg.seq_len}, batch {cfg.batch}, vocab {cfg.vocab}; device {device}, "
        f"{'bf16 autocast' if amp else 'fp32'}, {torch.get_num_threads()} threads, {args.rounds} rounds"
    )
    widths = (28, 10, 9, 10, 7, 9, 7)
    header = ("variant", "params", "ms/step", "tokens/s", "vs HF", "GFLOP/s", "% peak")
    print(" ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for name, (model, _) in variants.items():
        params = sum(q.numel() for q in model.parameters())
        median = statistics.median(times[name])
        ratio = (
            statistics.median(h / t for h, t in zip(times[hf_name], times[name], strict=True))
            if hf_name in times
            else float("nan")
        )
        gflops = flops_per_token(cfg, params) * tokens / median / 1e9
        print(
            f"{name:28s} {params:>10,d} {median * 1e3:>9.2f} {tokens / median:>10,.0f} {ratio:>6.2f}x "
            f"{gflops:>9.2f} {100 * gflops / peak:>6.1f}%"
        )
    if hf is None:
        print("HF GPT2LMHeadModel: not measured (pip install transformers)")
    print(f"measured {'bf16' if amp else 'fp32'} matmul peak (1024^2): {peak:,.1f} GFLOP/s")


if __name__ == "__main__":
    main()
