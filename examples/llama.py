"""A Llama-style model written with typedlm's public API, trained on Shakespeare, then sampled.

    python -m examples.llama                        # bytes of the embedded Shakespeare, ~3 min on 2 cores
    python -m examples.llama --preset tiny --steps 50 --out out/llama-tiny

The model (Touvron et al. 2023): token embedding, ``layers`` pre-norm blocks of RMSNorm → grouped-query
attention with rotary positions → residual, RMSNorm → SwiGLU MLP → residual, then a final RMSNorm and an
untied head; no biases, no dropout, no learned positions. It is a user's model: every layer is a
``tl.Layer[In, Out]`` whose forward is annotated with jaxtyping shapes, so typedlm checks it when the
class is created, when the model is built and on every call. Grouped-query attention adds one dim of its
own, ``kv_heads`` (the key/value heads, shared by ``heads // kv_heads`` query heads each), declared as an
int field of `LlamaConfig`. Training is `typedlm.training.train`; decoding is `typedlm.generate` with a
KV cache, which each attention layer joins by holding ``self.cache``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

import typedlm as tl
from typedlm.cli import ArgumentParser, renamed_field, run_main
from typedlm.kv_cache import AttentionCache
from typedlm.shapes import Embedded, Logits, TokenIds
from typedlm.training import TrainConfig, get_preset, load_corpus, split_tokens, train

Heads = Literal["batch heads seq head_dim"]
"""Queries (and attention outputs): ``heads`` heads of ``head_dim``."""
KVHeads = Literal["batch kv_heads seq head_dim"]
"""Keys and values: ``kv_heads`` heads of ``head_dim``, each shared by ``heads // kv_heads`` query heads."""
AnyHeads = Literal["batch ... seq head_dim"]
"""Queries or keys: what rotary positions apply to."""

INIT_STD = 0.02


@dataclass(frozen=True, kw_only=True)
class LlamaConfig(tl.CausalConfig):
    """`tl.CausalConfig` plus grouped-query attention's ``kv_heads`` and RoPE's base ``rope_theta``.

    ``ffn_hidden`` is SwiGLU's hidden width and ``layer_norm_eps`` RMSNorm's epsilon. The head is untied
    unless ``tie_embeddings=True``; a Llama has no biases and no dropout.
    """

    kv_heads: int
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.kv_heads, bool) or not isinstance(self.kv_heads, int) or self.kv_heads < 1:
            raise tl.ConfigError(f"LlamaConfig.kv_heads={self.kv_heads!r}: must be an int >= 1")
        if self.heads % self.kv_heads:
            raise tl.ConfigError(
                f"LlamaConfig.kv_heads={self.kv_heads}: must divide heads={self.heads} (query heads share key heads)"
            )
        if self.head_dim % 2:
            raise tl.ConfigError(f"LlamaConfig.head_dim={self.head_dim}: must be even (RoPE rotates pairs)")
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, int | float) or not (math.isfinite(theta) and theta > 1):
            raise tl.ConfigError(f"LlamaConfig.rope_theta={theta!r}: must be a finite number > 1")
        if self.bias:
            raise tl.ConfigError("LlamaConfig.bias=True: a Llama has no biases (must be False)")
        if self.dropout:
            raise tl.ConfigError(f"LlamaConfig.dropout={self.dropout!r}: a Llama has no dropout (must be 0)")


def projection(fan_in: int, fan_out: int, generator: torch.Generator | None, std: float = INIT_STD) -> nn.Parameter:
    """The ``(fan_out, fan_in)`` weight of a bias-free projection (``F.linear``), drawn from N(0, std)."""
    weight = nn.Parameter(torch.empty(fan_out, fan_in))
    with torch.no_grad():
        weight.normal_(0.0, std, generator=generator)
    return weight


def residual_std(cfg: LlamaConfig) -> float:
    """GPT-2's smaller initial weights for the projections that write into the residual stream."""
    return INIT_STD / math.sqrt(2 * cfg.layers)


class RMSNorm(tl.Layer[Embedded, Embedded]):
    """``x / rms(x) * weight`` over ``d_model``, with ``eps = cfg.layer_norm_eps`` (Zhang & Sennrich 2019)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__(cfg)
        self.weight = nn.Parameter(torch.ones(cfg.d_model))
        self.eps = cfg.layer_norm_eps

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps))


class Rotary(tl.Layer[AnyHeads, AnyHeads]):
    """Rotary positions (RoPE, Su et al. 2021): rotate each head's pairs ``(i, i + head_dim/2)`` by the
    angle ``position / rope_theta ** (2i / head_dim)``, for positions ``start_pos .. start_pos + seq - 1``."""

    cos: Tensor
    sin: Tensor

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__(cfg)
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.seq_len, dtype=torch.float32), inv_freq)  # (seq_len, head_dim/2)
        angles = torch.cat([angles, angles], dim=-1)  # (seq_len, head_dim)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(
        self, x: Float[Tensor, "batch ... seq head_dim"], start_pos: int = 0
    ) -> Float[Tensor, "batch ... seq head_dim"]:
        seq = x.shape[-2]
        if start_pos < 0 or start_pos + seq > self.cfg.seq_len:
            raise tl.ShapeError(
                f"Rotary: positions {start_pos}..{start_pos + seq - 1} (start_pos={start_pos}, seq={seq}) are "
                f"outside 0..{self.cfg.seq_len - 1} (cfg.seq_len = {self.cfg.seq_len})"
            )
        cos, sin = self.cos[start_pos : start_pos + seq], self.sin[start_pos : start_pos + seq]
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-second, first], dim=-1) * sin


class QueryProjection(tl.Layer[Embedded, Heads]):
    """``d_model → heads × head_dim``, split into ``heads`` heads."""

    def __init__(self, cfg: LlamaConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg)
        self.weight = projection(cfg.d_model, cfg.heads * cfg.head_dim, generator)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch heads seq head_dim"]:
        batch, seq, _ = x.shape
        return F.linear(x, self.weight).view(batch, seq, self.cfg.heads, self.cfg.head_dim).transpose(1, 2)


class KeyValueProjection(tl.Layer[Embedded, KVHeads]):
    """``d_model → kv_heads × head_dim``, split into ``kv_heads`` heads (keys, or values)."""

    def __init__(self, cfg: LlamaConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg)
        self.kv_heads = cfg.kv_heads
        self.weight = projection(cfg.d_model, cfg.kv_heads * cfg.head_dim, generator)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch kv_heads seq head_dim"]:
        batch, seq, _ = x.shape
        return F.linear(x, self.weight).view(batch, seq, self.kv_heads, self.cfg.head_dim).transpose(1, 2)


class OutputProjection(tl.Layer[Heads, Embedded]):
    """The heads side by side, ``heads × head_dim → d_model``."""

    def __init__(self, cfg: LlamaConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg)
        self.weight = projection(cfg.heads * cfg.head_dim, cfg.d_model, generator, residual_std(cfg))

    def forward(self, y: Float[Tensor, "batch heads seq head_dim"]) -> Float[Tensor, "batch seq d_model"]:
        batch, heads, seq, head_dim = y.shape
        return F.linear(y.transpose(1, 2).reshape(batch, seq, heads * head_dim), self.weight)


@tl.checked
def causal_attention(
    q: Float[Tensor, "batch heads seq head_dim"],
    k: Float[Tensor, "batch heads total head_dim"],
    v: Float[Tensor, "batch heads total head_dim"],
) -> Float[Tensor, "batch heads seq head_dim"]:
    """Softmax attention where the queries are the last ``seq`` of ``total`` positions: query ``i`` sees
    keys ``0 .. total - seq + i`` (the keys before the queries' own come from the KV cache)."""
    seq, total = q.shape[2], k.shape[2]
    if seq == total:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = None if seq == 1 else torch.ones(seq, total, dtype=torch.bool, device=q.device).tril(total - seq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class GroupedQueryAttention(tl.Layer[Embedded, Embedded]):
    """Causal attention with ``heads`` query heads and ``kv_heads`` key/value heads (Ainslie et al. 2023),
    rotary positions on queries and keys.

    While a KV cache is attached (``self.cache``, by `typedlm.generate`), a call appends its
    ``kv_heads``-wide keys and values to it and attends over every cached position.
    """

    def __init__(self, cfg: LlamaConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg)
        self.groups = cfg.heads // cfg.kv_heads
        self.q = QueryProjection(cfg, generator=generator)
        self.k = KeyValueProjection(cfg, generator=generator)
        self.v = KeyValueProjection(cfg, generator=generator)
        self.o = OutputProjection(cfg, generator=generator)
        self.rotary = Rotary(cfg)
        self.cache: AttentionCache | None = None

    def forward(self, x: Float[Tensor, "batch seq d_model"], start_pos: int = 0) -> Float[Tensor, "batch seq d_model"]:
        q = self.rotary(self.q(x), start_pos)
        k = self.rotary(self.k(x), start_pos)
        v = self.v(x)
        if self.cache is not None:  # decoding: this call's positions continue the cached ones
            self.cache.check_continues(start_pos, self.describe())
            k, v = self.cache.append(k, v)
        k, v = k.repeat_interleave(self.groups, dim=1), v.repeat_interleave(self.groups, dim=1)
        return self.o(causal_attention(q, k, v))


class SwiGLU(tl.Layer[Embedded, Embedded]):
    """``down(silu(gate(x)) * up(x))`` through ``ffn`` hidden units (Shazeer 2020; Meta's w2(silu(w1 x) * w3 x))."""

    def __init__(self, cfg: LlamaConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg)
        self.gate = projection(cfg.d_model, cfg.ffn_hidden, generator)
        self.up = projection(cfg.d_model, cfg.ffn_hidden, generator)
        self.down = projection(cfg.ffn_hidden, cfg.d_model, generator, residual_std(cfg))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        hidden: Float[Tensor, "batch seq ffn"] = F.silu(F.linear(x, self.gate)) * F.linear(x, self.up)
        return F.linear(hidden, self.down)


class LlamaBlock(tl.Layer[Embedded, Embedded]):
    """Pre-norm block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: LlamaConfig, *, index: int = 0, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg)
        self.index = index
        self.attention_norm = RMSNorm(cfg)
        self.attention = GroupedQueryAttention(cfg, generator=generator)
        self.mlp_norm = RMSNorm(cfg)
        self.mlp = SwiGLU(cfg, generator=generator)

    def describe(self) -> str:
        return f"LlamaBlock(index={self.index})"

    def forward(self, x: Float[Tensor, "batch seq d_model"], start_pos: int = 0) -> Float[Tensor, "batch seq d_model"]:
        x = x + self.attention(self.attention_norm(x), start_pos)
        return x + self.mlp(self.mlp_norm(x))


class Llama(tl.Layer[TokenIds, Logits]):
    """Token ids → logits: embedding, ``cfg.layers`` blocks, RMSNorm, head. ``forward(ids, start_pos)``
    reads ids at positions ``start_pos .. start_pos + seq - 1`` (the positions after a KV cache's)."""

    boundary = True

    def __init__(self, cfg: LlamaConfig, *, seed: int = 0) -> None:
        super().__init__(cfg)
        generator = torch.Generator().manual_seed(seed)
        self.embed = tl.nn.TokenEmbedding(cfg, seed=seed)
        self.blocks = nn.ModuleList(LlamaBlock(cfg, index=i, generator=generator) for i in range(cfg.layers))
        self.norm = RMSNorm(cfg)
        self.head = tl.nn.LMHead(cfg, self.embed if cfg.tie_embeddings else None, seed=seed)

    def forward(self, ids: Int[Tensor, "batch seq"], start_pos: int = 0) -> Float[Tensor, "batch seq vocab"]:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, start_pos)
        return self.head(self.norm(x))


def probe_llama() -> Llama:
    """A small Llama with grouped-query attention (4 query heads over 2 key/value heads): what
    ``python -m typedlm check examples/llama.py`` builds and probes."""
    return Llama(LlamaConfig(batch=2, seq_len=24, vocab=37, heads=4, kv_heads=2, head_dim=6, ffn_hidden=28, layers=2))


# --- the command line: train on the embedded Shakespeare, then sample ---------------------------------------

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(layers=2, heads=4, kv_heads=2, head_dim=8, seq_len=32, batch=8, ffn_hidden=96),
    # The size of text_gpt2's cpu preset (4 layers, d_model 128, seq 64, batch 12); SwiGLU's three
    # matrices at ffn 352 hold as many weights as GPT-2's two at 512.
    "cpu": dict(layers=4, heads=4, kv_heads=2, head_dim=32, seq_len=64, batch=12, ffn_hidden=352),
}
"""Model sizes per ``--preset``; the training recipe is text_gpt2's preset of the same name."""
SIZE_FLAGS = ("layers", "heads", "kv_heads", "head_dim", "seq_len", "batch", "ffn_hidden")


def build_parser() -> argparse.ArgumentParser:
    presets = "\n".join(
        f"  {name:5s} {', '.join(f'{k}={v}' for k, v in sizes.items())}" for name, sizes in SIZES.items()
    )
    p = ArgumentParser(
        prog="python -m examples.llama",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=f"presets (with text_gpt2's training recipe of the same name):\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(SIZES), default="cpu", help="model size and training recipe")
    for flag in SIZE_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), type=int, help=f"{flag} (default: the preset's)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--max-chars", type=int, help="train on the first N characters of the corpus only")
    p.add_argument("--seed", type=int, default=1337, help="seed of the weights, batches and sampling")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="out/llama", help="folder for checkpoint/, loss.png and trainlog.json")
    p.add_argument("--overwrite", action="store_true", help="replace the run --out holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--prompt", default="First Citizen:", help="text the sample continues")
    p.add_argument("--generate", type=int, default=300, help="bytes to sample after training; 0 = none")
    return p


def make_configs(args: argparse.Namespace, vocab: int) -> tuple[LlamaConfig, TrainConfig]:
    """The preset's sizes and recipe, overridden by the flags given."""
    sizes = {**SIZES[args.preset], **{k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}}
    recipe = {**get_preset(args.preset).train, **({"steps": args.steps} if args.steps is not None else {})}
    flags = {name: "--" + name.replace("_", "-") for name in (*SIZE_FLAGS, "steps", "seed")}
    try:
        cfg = LlamaConfig(vocab=vocab, **sizes)
        tc = TrainConfig(**recipe, seed=args.seed, device=args.device, progress=not args.no_progress)
    except tl.ConfigError as error:
        raise renamed_field(error, flags) from None
    return cfg, tc


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse flags that are wrong whatever the model, before any work."""
    for flag, value, low in (("--generate", args.generate, 0), ("--max-chars", args.max_chars, 1)):
        if value is not None and value < low:
            raise tl.ConfigError(f"{flag} {value}: must be >= {low}")
    if not args.prompt:
        raise tl.ConfigError("--prompt '': the sample needs at least one byte to continue")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    tokenizer = tl.tokenizers.ByteTokenizer()
    cfg, tc = make_configs(args, tokenizer.vocab_size)
    corpus = load_corpus(None, max_chars=args.max_chars)
    tokens = np.asarray(tokenizer.encode(corpus.text), dtype=np.uint16)
    train_tokens, val_tokens = split_tokens(tokens, 0.1)
    model = Llama(cfg, seed=args.seed)
    print(
        f"data: {corpus.name}, {len(tokens):,} bytes; model: Llama, {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, {cfg.layers} layers × d_model {cfg.d_model}, {cfg.heads} query / {cfg.kv_heads} key-value "
        f"heads; checks {tl.checks.current_mode()}"
    )
    log = train(model, cfg, train_tokens, val_tokens, tc, out_dir=args.out, overwrite=args.overwrite)
    print(
        f"loss {log.first_loss:.4f} → {log.final_loss:.4f}, val {log.final_val_loss:.4f} after {len(log.steps)} steps"
    )
    if args.generate > 0:
        prompt = torch.tensor([tokenizer.encode(args.prompt)], device=next(model.parameters()).device)
        ids = tl.generate.generate_tokens(
            model, prompt, args.generate, tl.Sampling(temperature=0.8, top_k=200, seed=args.seed)
        )
        print("-" * 72 + "\n" + tokenizer.decode(ids[0].tolist()) + "\n" + "-" * 72)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("llama", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
