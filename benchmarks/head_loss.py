"""LM-head loss step: the fused loss vs the plain ``F.cross_entropy(F.linear(hidden, W))``, one table.

A step is what training does to the head: the loss of ``(batch, seq, d_model)`` final hidden states
through a ``(vocab, d_model)`` head weight (a parameter) against next-token ids, then ``backward`` (the
weight's ``.grad`` and the hidden states' gradient), then the gradient dropped (``zero_grad``). Sizes
are gpt2-small's head: d_model 768, vocab 50,257; ``batch × seq`` as given (default 4×512 and 8×512).

Peak memory: each variant runs in a fresh process (no allocator cache carried over from the other).
On the CPU, after the inputs exist, the process's peak resident set (``VmHWM``) is reset to its
current size (``echo 5 > /proc/self/clear_refs``); after the steps the peak is read again, and the
table gives the peak minus the resident size before the first step: the most memory the steps held
at once beyond their inputs. On CUDA it is ``torch.cuda.max_memory_allocated`` minus the allocation
before the first step. Step time: the median of the timed steps that follow one warm-up step.

Processes of the two variants alternate (the starting one rotated each round), so machine noise hits
both alike; the ratios are medians of per-round ratios. torch uses one thread per process unless
``--threads`` says otherwise (two busy threads on a shared 2-core machine oversubscribe it). The
load average printed with the table says how busy the machine was.

Run: ``python -m benchmarks.head_loss`` (several minutes on 2 CPU cores); ``--sizes 4x512 8x1024``,
``--rounds``, ``--steps``, ``--threads``, ``--device``, ``--autocast bf16``. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import typedlm as tl

D_MODEL, VOCAB = 768, 50_257
VARIANTS = ("plain", "fused")
ROOT = Path(__file__).resolve().parent.parent


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def _loss(variant: str, hidden: Tensor, weight: Tensor, ids: Tensor) -> Tensor:
    if variant == "fused":
        return tl.losses.fused_next_token_cross_entropy(hidden, weight, ids)
    return tl.losses.next_token_cross_entropy(F.linear(hidden, weight), ids)


def worker(variant: str, batch: int, seq: int, steps: int, device: torch.device, autocast: bool) -> dict[str, float]:
    """Run 1 + ``steps`` head-loss steps of ``variant`` here; peak bytes beyond the inputs and the median step time."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(batch, seq, D_MODEL, generator=generator).to(device).requires_grad_()
    weight = torch.nn.Parameter((torch.randn(VOCAB, D_MODEL, generator=generator) * 0.02).to(device))
    ids = torch.randint(0, VOCAB, (batch, seq + 1), generator=generator).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        before = _status_kib("VmRSS") * 1024
    times = []
    for _ in range(1 + steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = _loss(variant, hidden, weight, ids)
        loss.backward()
        hidden.grad = weight.grad = None
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if cuda else _status_kib("VmHWM") * 1024
    return {"peak_bytes": peak - before, "seconds": statistics.median(times[1:]), "loss": float(loss)}


def run_worker(variant: str, batch: int, seq: int, args: argparse.Namespace) -> dict[str, float]:
    """`worker` in a fresh Python process."""
    argv = [sys.executable, "-m", "benchmarks.head_loss", "--worker", variant, "--sizes", f"{batch}x{seq}"]
    argv += ["--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
    argv += ["--autocast", args.autocast]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"head_loss worker {variant} {batch}x{seq} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def parse_size(text: str) -> tuple[int, int]:
    batch, _, seq = text.partition("x")
    if not (batch.isdigit() and seq.isdigit() and int(batch) > 0 and int(seq) > 0):
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: expected BATCHxSEQ, e.g. 4x512")
    return int(batch), int(seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(4, 512), (8, 512)], metavar="BxS")
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant and size (default 2)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process, after one warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=("off", "bf16"), default="off")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        (batch, seq), device = args.sizes[0], torch.device(args.device)
        print(json.dumps(worker(args.worker, batch, seq, args.steps, device, args.autocast == "bf16")))
        return

    print(f"head loss step (forward + backward), d_model {D_MODEL}, vocab {VOCAB:,}, device {args.device}, ")
    print(f"autocast {args.autocast}, {args.threads} thread(s), {args.rounds} round(s) × {args.steps} timed step(s)")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    header = f"{'batch×seq':>10} | {'plain peak':>10} {'fused peak':>10} {'ratio':>6} | "
    header += f"{'plain s':>8} {'fused s':>8} {'ratio':>6}"
    rows = []
    for batch, seq in args.sizes:
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                runs[variant].append(run_worker(variant, batch, seq, args))
        plain, fused = runs["plain"], runs["fused"]
        peak = {v: statistics.median(r["peak_bytes"] for r in runs[v]) / 2**20 for v in VARIANTS}
        secs = {v: statistics.median(r["seconds"] for r in runs[v]) for v in VARIANTS}
        time_ratio = statistics.median(f["seconds"] / p["seconds"] for p, f in zip(plain, fused, strict=True))
        loss_gap = max(abs(f["loss"] - p["loss"]) for p, f in zip(plain, fused, strict=True))
        peak_ratio = peak["fused"] / peak["plain"]
        rows.append(
            f"{batch}×{seq:<8} | {peak['plain']:>7.0f} MB {peak['fused']:>7.0f} MB {peak_ratio:>6.2f}"
            f" | {secs['plain']:>8.2f} {secs['fused']:>8.2f} {time_ratio:>6.2f}   (loss gap {loss_gap:.1e})"
        )
        print(rows[-1] if len(rows) > 1 else f"{header}\n{rows[-1]}", flush=True)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("peak: most memory held during the steps beyond the inputs; ratio: fused / plain (targets <= 0.50, <= 1.0)")


if __name__ == "__main__":
    main()
