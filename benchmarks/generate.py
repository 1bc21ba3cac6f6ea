"""Decoding speed: typedlm with its KV cache, typedlm recomputing every step, and Hugging Face ``generate``.

Model: nanoGPT's Shakespeare size (6 layers, 6 heads, d_model 384, 256 positions, 65-token vocabulary),
randomly initialised as a ``transformers.GPT2LMHeadModel``, saved with ``save_pretrained`` and loaded
into typedlm with `typedlm.hf.load_gpt2`, so every peer has the same weights. Task: batch 1, a one-token
prompt, 255 new tokens by greedy decoding (the window just fills), no end-of-text stop.

Peers, side by side in one run:

- ``typedlm KV cache``: ``GPT2.generate(..., Sampling(greedy=True))`` in the default checking mode (full);
- ``typedlm KV cache, checks off``: the same under ``typedlm.checks.mode("off")``, for reference;
- ``typedlm recompute``: ``kv_cache=False``, the whole window every step (what nanoGPT's sampler does);
- ``HF generate``: ``GPT2LMHeadModel.generate(do_sample=False)`` with its own KV cache.

Method: one warm-up run each (it also fills the checks' memory of call signatures), then rounds in which
every peer decodes once, the starting peer rotated each round. Tokens/s is new tokens over the wall time
of one ``generate`` call (``time.perf_counter``); the table gives the median over rounds and the
range. Ratios are medians of per-round ratios. All peers must produce the same tokens (checked). torch
uses ``--threads`` intra-op threads (default 1, as in ``check_overhead``: small decode steps stall on a
busy machine with more). Targets: KV cache ≥ 4× recompute, typedlm ≥ 1.0× Hugging Face.

Run: ``python -m benchmarks.generate`` (about two minutes), or ``--quick`` (a smoke run: 32 tokens, one
round; its ratios are not the targets' setting).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import typedlm as tl
from typedlm.hf import load_gpt2


def _hf_model(directory: Path) -> Any:
    """Build, save and reload a random Shakespeare-size GPT2LMHeadModel (Any: transformers is loosely typed)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=65, n_positions=256, n_embd=384, n_layer=6, n_head=6,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    model = transformers.GPT2LMHeadModel.from_pretrained(directory)
    return torch.nn.Module.eval(model)  # transformers overrides eval() without annotations


def _hf_generate(model: Any, prompt: Tensor, new: int) -> Tensor:
    out: Tensor = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
    )
    return out


def peers(hf_model: Any, model: tl.models.GPT2, new: int) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each peer: prompt ``(1, 1)`` → ids ``(1, 1 + new)``."""
    greedy = tl.Sampling(greedy=True, stop_at_eot=False)

    def checks_off(prompt: Tensor) -> Tensor:
        with tl.checks.mode("off"):
            return model.generate(prompt, new, greedy)

    return {
        "typedlm KV cache": lambda prompt: model.generate(prompt, new, greedy),
        "typedlm KV cache, checks off": checks_off,
        "typedlm recompute": lambda prompt: model.generate(prompt, new, greedy, kv_cache=False),
        "HF generate": lambda prompt: _hf_generate(hf_model, prompt, new),
    }


def measure(
    runs: dict[str, Callable[[Tensor], Tensor]], prompt: Tensor, rounds: int
) -> tuple[dict[str, list[float]], bool]:
    """Seconds per call for each peer over ``rounds`` rotated rounds, and whether all gave the same ids."""
    outputs = {name: run(prompt) for name, run in runs.items()}  # warm-up
    first = next(iter(outputs.values()))
    same = all(torch.equal(out, first) for out in outputs.values())
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            out = runs[name](prompt)
            times[name].append(time.perf_counter() - start)
            same = same and torch.equal(out, first)
    return times, same


def _ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    return statistics.median(s / f for s, f in zip(times[slow], times[fast], strict=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 new tokens, one round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (each peer once per round)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    new, rounds = (32, 1) if args.quick else (255, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        hf_model = _hf_model(Path(tmp))
        model = load_gpt2(tmp)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    with torch.inference_mode():
        times, same = measure(peers(hf_model, model, new), prompt, rounds)

    setting = f"CPU, {args.threads} thread(s), {rounds} round(s)"
    print(f"\nGreedy decoding, batch 1, {new} new tokens, 6 layers × 6 heads, d_model 384, seq 256 ({setting})\n")
    print(f"| {'peer':30s} | tokens/s (median) | range         |")
    print(f"|{'-' * 32}|{'-' * 19}|{'-' * 15}|")
    for name, seconds in times.items():
        rates = sorted(new / s for s in seconds)
        print(f"| {name:30s} | {statistics.median(rates):17.1f} | {rates[0]:5.1f} – {rates[-1]:5.1f} |")
    kv_speedup = _ratio(times, "typedlm recompute", "typedlm KV cache")
    vs_hf = _ratio(times, "HF generate", "typedlm KV cache")
    print(f"\nKV cache / recompute: {kv_speedup:.2f}× (target ≥ 4×)")
    print(f"typedlm / HF generate: {vs_hf:.2f}× (target ≥ 1.0×)")
    print(f"typedlm checks off / full: {_ratio(times, 'typedlm KV cache', 'typedlm KV cache, checks off'):.2f}×")
    print(f"identical tokens from every peer: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
