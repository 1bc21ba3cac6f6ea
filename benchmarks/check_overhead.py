"""What shape checking costs a training step: typedlm in modes off / boundary / full against an untyped nanoGPT.

One step is forward, loss, backward, AdamW step and ``zero_grad``. Peers, timed side by side in one run:

- ``untyped``: a plain nanoGPT-style ``nn.Module`` written below, loaded with the typed model's weights;
- ``off`` / ``boundary`` / ``full``: ``tl.models.GPT2`` under each checking mode;
- ``jaxtyping``: the same typed model in mode off, with every layer's ``forward`` (and the loss) wrapped
  in ``jaxtyping.jaxtyped(typechecker=beartype)`` per instance: what plain jaxtyping + beartype costs.

The ``llama-cpu`` setting times the user-written Llama of ``examples/llama.py`` (grouped-query attention,
rotary positions, SwiGLU; nanoGPT's CPU size) the same way, without an untyped peer.

Method: every variant has its own model and optimiser, built from the same seed, so all of them compute
the same losses (printed at the end of the run). After a warm-up, the variants run interleaved
round-robin, one step each per round, with the starting variant rotated every round, so machine noise
hits all of them alike; a setting stops after its rounds or its time budget, whichever comes first.
Times are ``time.perf_counter`` around one step; we report the median and the 10th/90th percentiles, and
ratios as the median of per-round ratios (the steps of a round ran back to back). torch uses a fixed
number of threads (``--threads``, default 1: the development machine has 2 cores shared with other work,
and one intra-op thread keeps the timings steadier). A micro-benchmark of one cheap layer gives the cost
of one checked call on its own, next to the number of checked calls per step.

Run: ``python -m benchmarks.check_overhead`` (at most about 4 minutes) or ``--quick`` (a smoke run,
seconds). Nothing here asserts on time; the targets are printed next to the measured ratios.
"""

import argparse
import dataclasses
import math
import statistics
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from beartype import beartype
from jaxtyping import Float, Int, jaxtyped
from torch import Tensor, nn

import typedlm as tl
from examples.llama import Llama, LlamaConfig
from typedlm.checks import Mode

# --- the untyped peer: nanoGPT's model, minus dropout (the configs here have none) ----------------------


class SelfAttention(nn.Module):
    """Causal self-attention with a fused qkv projection, as in nanoGPT."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        batch, seq, d_model = x.shape
        q, k, v = self.c_attn(x).split(d_model, dim=2)
        q = q.view(batch, seq, self.heads, d_model // self.heads).transpose(1, 2)
        k = k.view(batch, seq, self.heads, d_model // self.heads).transpose(1, 2)
        v = v.view(batch, seq, self.heads, d_model // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out: Tensor = self.c_proj(y.transpose(1, 2).contiguous().view(batch, seq, d_model))
        return out


class FeedForward(nn.Module):
    """``d_model → ffn → d_model`` with GELU (tanh approximation)."""

    def __init__(self, d_model: int, ffn: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, ffn)
        self.c_proj = nn.Linear(ffn, d_model)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return out


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, d_model: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, ffn)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out


class NanoGPT(nn.Module):
    """Token and position embeddings, blocks, final LayerNorm, LM head tied to the token embedding."""

    def __init__(self, cfg: tl.CausalConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.h = nn.ModuleList(Block(cfg.d_model, cfg.heads, cfg.ffn_hidden) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], dtype=torch.long, device=ids.device)
        x = self.wte(ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        logits: Tensor = self.lm_head(self.ln_f(x))
        return logits


def untyped_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


_RENAMES = (
    ("transformer.blocks.layers.", "h."),
    ("transformer.pos.", "wpe."),
    ("transformer.ln_f.", "ln_f."),
    ("transformer.head.", "lm_head."),
    ("embed.", "wte."),
    ("attn.qkv.", "attn.c_attn."),
    ("attn.proj.", "attn.c_proj."),
    ("mlp.fc.", "mlp.c_fc."),
    ("mlp.proj.", "mlp.c_proj."),
)


def untyped_copy(typed: tl.models.GPT2) -> NanoGPT:
    """A `NanoGPT` holding ``typed``'s weights (every parameter copied, none left over)."""
    state = {}
    for key, value in typed.state_dict().items():
        for old, new in _RENAMES:
            key = key.replace(old, new)
        state[key] = value.clone()
    model = NanoGPT(typed.cfg)
    model.load_state_dict(state, strict=True)
    return model


# --- plain jaxtyping + beartype on the typed model -------------------------------------------------------


@jaxtyped(typechecker=beartype)
def jaxtyping_loss(logits: Float[Tensor, "batch seq vocab"], targets: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
    return F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1))


def wrap_with_jaxtyping(model: nn.Module) -> None:
    """Wrap the forward of every `tl.Layer` in ``model`` (these instances only) in ``jaxtyped(typechecker=beartype)``.

    Must run in mode off, where each layer class's ``forward`` is its own unchecked one.
    """
    assert tl.checks.current_mode() == "off"
    for module in model.modules():
        if isinstance(module, tl.Layer):
            forward = jaxtyped(typechecker=beartype)(type(module).forward)
            object.__setattr__(module, "forward", types.MethodType(forward, module))


# --- the peers -----------------------------------------------------------------------------------------------

UNTYPED, OFF, BOUNDARY, FULL, JAXTYPING = (
    "untyped (nanoGPT)",
    "typedlm off",
    "typedlm boundary",
    "typedlm full",
    "jaxtyping+beartype",
)


@dataclasses.dataclass
class Variant:
    """One peer: a model, its loss and optimiser, the checking mode it runs in, and its step times."""

    name: str
    mode: Mode
    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    optimizer: torch.optim.Optimizer
    times: list[float] = dataclasses.field(default_factory=list)

    def step(self, ids: Tensor, targets: Tensor) -> float:
        """One training step in this variant's mode; its wall time in seconds."""
        tl.checks.set_mode(self.mode)
        start = time.perf_counter()
        loss = self.loss(self.model(ids), targets)
        torch.autograd.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def loss_now(self, ids: Tensor, targets: Tensor) -> float:
        """The loss on ``ids``, without a step."""
        tl.checks.set_mode(self.mode)
        with torch.no_grad():
            return float(self.loss(self.model(ids), targets))


Build = Callable[[Any], tl.Layer[Any, Any]]
"""A typed model from its config: ``tl.models.GPT2``, or the example's ``Llama``."""


def make_variants(cfg: tl.CausalConfig, build: Build, with_jaxtyping: bool) -> list[Variant]:
    """The peers, each with its own copy of the same initial weights and its own AdamW (the untyped
    nanoGPT only when ``build`` is GPT-2)."""

    def variant(name: str, mode: Mode, model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor]) -> Variant:
        return Variant(name, mode, model, loss, torch.optim.AdamW(model.parameters(), lr=1e-3))

    typed_loss = tl.losses.cross_entropy_indexed
    variants = [
        variant(OFF, "off", build(cfg), typed_loss),
        variant(BOUNDARY, "boundary", build(cfg), typed_loss),
        variant(FULL, "full", build(cfg), typed_loss),
    ]
    if build is tl.models.GPT2:
        variants.insert(0, variant(UNTYPED, "off", untyped_copy(tl.models.GPT2(cfg)), untyped_loss))
    if with_jaxtyping:
        tl.checks.set_mode("off")
        model = build(cfg)
        wrap_with_jaxtyping(model)
        variants.append(variant(JAXTYPING, "off", model, jaxtyping_loss))
    counts = {sum(p.numel() for p in v.model.parameters()) for v in variants}
    assert len(counts) == 1, f"the peers' parameter counts differ: {counts}"
    return variants


# --- measurements --------------------------------------------------------------------------------------------

MIN_TIMED_ROUNDS = 30
"""Rounds timed even when a setting's time budget runs out first (a very busy machine)."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """A config to benchmark, how long to run it, and its full/off target."""

    name: str
    cfg: tl.CausalConfig
    warmup: int
    rounds: int
    budget_s: float
    full_target: float
    micro_blocks: int
    build: Build = tl.models.GPT2


@dataclasses.dataclass(frozen=True)
class Result:
    """What one setting measured: step times and final loss per peer, checked calls and wrapper cost per call."""

    setting: Setting
    params: int
    times: dict[str, list[float]]
    losses: dict[str, float]
    checked_calls: dict[Mode, int]
    per_call_s: dict[str, float]


def run_round(variants: Sequence[Variant], index: int, ids: Tensor, targets: Tensor) -> list[tuple[Variant, float]]:
    """One step of every variant, in round-robin order starting at variant ``index % len(variants)``."""
    shift = index % len(variants)
    return [(v, v.step(ids, targets)) for v in [*variants[shift:], *variants[:shift]]]


def run_setting(setting: Setting, with_jaxtyping: bool) -> Result:
    """Check that the peers agree, warm up, then time them interleaved until the rounds or the budget run out."""
    cfg = setting.cfg
    data = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len), generator=data)
    targets = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len), generator=data)
    variants = make_variants(cfg, setting.build, with_jaxtyping)
    first = [v.loss_now(ids, targets) for v in variants]
    assert max(first) - min(first) < 1e-5, f"the peers do not compute the same loss: {first}"
    for index in range(setting.warmup):
        run_round(variants, index, ids, targets)
    deadline = time.perf_counter() + setting.budget_s
    timed = 0
    while timed < setting.rounds and (timed < MIN_TIMED_ROUNDS or time.perf_counter() < deadline):
        for variant, elapsed in run_round(variants, timed, ids, targets):
            variant.times.append(elapsed)
        timed += 1
    return Result(
        setting,
        params=sum(p.numel() for p in variants[0].model.parameters()),
        times={v.name: v.times for v in variants},
        losses={v.name: v.loss_now(ids, targets) for v in variants},
        checked_calls={m: checked_calls_per_step(setting, m, ids) for m in ("full", "boundary")},
        per_call_s=wrapper_cost_per_call(cfg, with_jaxtyping, blocks=setting.micro_blocks),
    )


def checked_calls_per_step(setting: Setting, mode: Mode, ids: Tensor) -> int:
    """How many calls one step checks under ``mode``: layer forwards whose class is wrapped, plus the loss
    (checked functions called inside a forward, such as the Llama's ``causal_attention``, not counted)."""
    with tl.checks.mode("off"):
        model = setting.build(setting.cfg)
        own_forward = {type(m): type(m).forward for m in model.modules()}
    calls = 0

    def count(module: nn.Module, args: object) -> None:
        nonlocal calls
        calls += type(module).forward is not own_forward[type(module)]

    handles = [m.register_forward_pre_hook(count) for m in model.modules()]
    with tl.checks.mode(mode), torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return calls + 1  # the loss is checked in full and boundary modes


def wrapper_cost_per_call(
    cfg: tl.CausalConfig, with_jaxtyping: bool, blocks: int, calls: int = 1000
) -> dict[str, float]:
    """Seconds a check adds to one call of a cheap layer (LayerNorm on one sequence), over mode off.

    ``blocks`` blocks of ``calls`` forwards for each peer, interleaved; the fastest block counts
    (as in ``timeit``: the check's cost is fixed, noise only adds to it).
    """
    plain, wrapped = tl.nn.LayerNorm(cfg), tl.nn.LayerNorm(cfg)
    with tl.checks.mode("off"):
        wrap_with_jaxtyping(wrapped)
    x = torch.randn(1, cfg.seq_len, cfg.d_model)
    peers: list[tuple[str, Mode, nn.Module]] = [(OFF, "off", plain), (FULL, "full", plain)]
    if with_jaxtyping:
        peers.append((JAXTYPING, "off", wrapped))
    per_call: dict[str, list[float]] = {name: [] for name, _, _ in peers}
    with torch.no_grad():
        for _ in range(blocks):
            for name, mode, layer in peers:
                tl.checks.set_mode(mode)
                layer(x)  # the first call of a signature runs the full check: keep it out of the timing
                start = time.perf_counter()
                for _ in range(calls):
                    layer(x)
                per_call[name].append((time.perf_counter() - start) / calls)
    return {name: min(times) - min(per_call[OFF]) for name, times in per_call.items() if name != OFF}


# --- report --------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> tuple[float, float, float]:
    """Median over rounds of numerator/denominator (each pair timed in the same round), with its 95% interval.

    The interval is distribution-free: the order statistics ``n/2 ± 1.96·sqrt(n)/2`` of the ratios.
    """
    ratios = sorted(a / b for a, b in zip(numerator, denominator, strict=True))
    n, half = len(ratios), 1.96 * math.sqrt(len(ratios)) / 2
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return statistics.median(ratios), ratios[low], ratios[high]


RATIOS: tuple[tuple[str, str, str], ...] = (
    ("full / off", FULL, OFF),
    ("boundary / off", BOUNDARY, OFF),
    ("off / untyped", OFF, UNTYPED),
    ("jaxtyping / off", JAXTYPING, OFF),
)
OFF_TARGET = 1.02


def target(result: Result, label: str) -> float | None:
    """The issue's target for a ratio at this setting, if it has one."""
    return {"full / off": result.setting.full_target, "off / untyped": OFF_TARGET}.get(label)


def verdict_of(value: float, low: float, goal: float) -> str:
    """``ok``, ``MISSED``, or ``noise?`` when the median is over the target but its interval is not."""
    return "ok" if value <= goal else ("MISSED" if low > goal else "noise?")


def describe(cfg: tl.CausalConfig) -> str:
    heads = f"{cfg.heads} heads" + (f" over {cfg.kv_heads} key/value heads" if isinstance(cfg, LlamaConfig) else "")
    return (
        f"{cfg.layers} layers, {heads} × {cfg.head_dim} (d_model {cfg.d_model}), ffn {cfg.ffn_hidden}, "
        f"seq {cfg.seq_len}, batch {cfg.batch}, vocab {cfg.vocab}"
    )


def report(results: Sequence[Result], threads: int) -> str:
    """One table: the peers as rows; per setting, median [p10 - p90] ms/step and the loss after the run
    (a dash where a setting has no such peer)."""
    width = 38
    peers = list(dict.fromkeys(name for r in results for name in r.times))
    lines = [
        "typedlm check overhead: ms per training step (forward, loss, backward, AdamW step, zero_grad), "
        f"torch {torch.__version__}, CPU, {threads} thread(s)",
        *(
            f"  {r.setting.name}: {describe(r.setting.cfg)}; {r.params:,} parameters; "
            f"{r.setting.warmup} warm-up + {len(r.times[OFF])} timed rounds"
            for r in results
        ),
        "",
        f"{'ms/step':<22}" + "".join(f"{r.setting.name + ': median [p10 - p90]    loss':>{width}}" for r in results),
    ]
    for name in peers:
        cells = []
        for r in results:
            if name not in r.times:
                cells.append("—")
                continue
            ms = [1e3 * t for t in r.times[name]]
            median, p10, p90 = statistics.median(ms), percentile(ms, 10), percentile(ms, 90)
            cells.append(f"{median:8.3f} [{p10:8.3f} - {p90:8.3f}]  {r.losses[name]:.4f}")
        lines.append(f"{name:<22}" + "".join(f"{c:>{width}}" for c in cells))

    ratio_width = 44
    lines += [
        "",
        f"{'ratio (paired median)':<22}"
        + "".join(f"{r.setting.name + ': ratio (95% interval)   target':>{ratio_width}}" for r in results),
    ]
    for label, top, bottom in RATIOS:
        if top not in peers:
            continue
        cells = []
        for r in results:
            if top not in r.times or bottom not in r.times:
                cells.append(f"{'—':<35}")
                continue
            (value, low, high), goal = paired_ratio(r.times[top], r.times[bottom]), target(r, label)
            verdict = "" if goal is None else f"≤ {goal:.2f} {verdict_of(value, low, goal)}"
            cells.append(f"{value:.3f} ({low:.3f}-{high:.3f})  {verdict:<13}")
        lines.append((f"{label:<22}" + "".join(f"{c:>{ratio_width}}" for c in cells)).rstrip())

    lines.append("")
    for r in results:
        calls, cost = r.checked_calls, r.per_call_s
        text = (
            f"{r.setting.name}: checked calls per step: full {calls['full']}, boundary {calls['boundary']} "
            f"(layer forwards + loss); cost per call of a seen signature: full {1e6 * cost[FULL]:.2f} µs"
        )
        if JAXTYPING in cost:
            text += f", jaxtyping+beartype {1e6 * cost[JAXTYPING]:.1f} µs"
        lines.append(text)
    return "\n".join(lines)


def settings(quick: bool) -> list[Setting]:
    """nanoGPT's CPU config, a tiny one, and the example's Llama at the CPU size; ``quick``: a few rounds of each."""
    cpu = tl.CausalConfig(batch=12, seq_len=64, vocab=65, heads=4, head_dim=32, ffn_hidden=512, layers=4)
    tiny = tl.CausalConfig(batch=1, seq_len=16, vocab=65, heads=4, head_dim=16, ffn_hidden=256, layers=2)
    llama = LlamaConfig(batch=12, seq_len=64, vocab=65, heads=4, kv_heads=2, head_dim=32, ffn_hidden=352, layers=4)
    if quick:
        return [
            Setting("cpu", cpu, 1, 2, 3.0, 1.05, 2),
            Setting("tiny", tiny, 3, 20, 1.0, 1.15, 2),
            Setting("llama-cpu", llama, 1, 2, 3.0, 1.05, 2, build=Llama),
        ]
    return [
        Setting("cpu", cpu, 20, 300, 70.0, 1.05, 20),
        Setting("tiny", tiny, 50, 3000, 35.0, 1.15, 20),
        Setting("llama-cpu", llama, 20, 300, 70.0, 1.05, 20, build=Llama),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time a training step of typedlm in each checking mode and its peers.")
    parser.add_argument("--quick", action="store_true", help="a few steps per peer: a smoke run of seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--no-jaxtyping", action="store_true", help="leave out the jaxtyping+beartype peer")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    previous = tl.checks.current_mode()
    try:
        results = [run_setting(s, with_jaxtyping=not args.no_jaxtyping) for s in settings(args.quick)]
    finally:
        tl.checks.set_mode(previous)
    print(report(results, args.threads))


if __name__ == "__main__":
    main()
