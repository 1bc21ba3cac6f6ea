"""The algorithm card: a model's formal pseudocode in the style of Phuong & Hutter, "Formal Algorithms for
Transformers" (arXiv:2207.09238), Algorithm 10 (DTransformer).

The card is read from the model itself: its layers are walked in the order they run, each layer class
contributes its steps and parameters, and every parameter's shape is written symbolically (``d_e``,
``N_V``, ...) and checked against the tensor it names. Every parameter of the model appears once, so the
total printed is ``sum(p.numel() for p in model.parameters())`` (= `GPT2.param_count`); a tied
unembedding is shown as ``W_u = W_e``. A layer class the card does not know is shown by its typed
signature and its parameters by name.

The layout is PyTorch's: ``X`` holds one token per row, ``X ∈ ℝ^{ℓ×d_e}``, and a linear map is
``X Wᵀ + b`` with ``W`` stored ``(out, in)``.

``H``, ``d_h`` and ``d_mlp`` are each block's own: when the blocks differ (``GPT2(cfg, block_heads=...,
block_ffn=...)``), consecutive blocks of equal widths form one loop, and the hyperparameters list the
widths of each such group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from typedlm.layer import Chain, Layer, Stack, declared_io
from typedlm.models import GPT2, CausalTransformer
from typedlm.nn import (
    MLP,
    CausalSelfAttention,
    LayerNorm,
    LMHead,
    OneHotEmbedding,
    PositionalEmbedding,
    TokenEmbedding,
    TransformerBlock,
)

__all__ = ["algorithm_card", "algorithm_card_full"]

_PRETTY = {"l_max": "ℓ_max", "*": ""}


def _pretty(expr: str) -> str:
    for raw, shown in _PRETTY.items():
        expr = expr.replace(raw, shown)
    return expr


@dataclass(frozen=True)
class _Param:
    symbol: str
    shape: tuple[str, ...]  # symbolic dims, e.g. ("3*d_e", "d_e")
    tensor: Tensor
    about: str


@dataclass
class _Card:
    """What a walk over the model collects: hyperparameters, parameters (grouped) and numbered steps."""

    dims: dict[str, int]
    full: bool
    dropout: bool
    groups: list[tuple[str, list[_Param | str]]] = field(default_factory=lambda: [("", [])])
    steps: list[tuple[int, str]] = field(default_factory=list)
    symbols: dict[int, str] = field(default_factory=dict)  # id(tensor) -> symbol that introduced it
    counted: dict[int, Tensor] = field(default_factory=dict)
    recording: bool = True
    depth: int = 0

    def param(self, symbol: str, shape: tuple[str, ...], tensor: Tensor, about: str) -> None:
        """Register ``tensor`` as ``symbol ∈ ℝ^{shape}``; its actual shape must be the symbolic one."""
        sizes = tuple(math.prod(int(f) if f.isdigit() else self.dims[f] for f in d.split("*")) for d in shape)
        if sizes != tuple(tensor.shape):
            raise ValueError(
                f"algorithm card: {symbol} is declared {shape} = {sizes}, the tensor is {tuple(tensor.shape)}"
            )
        self.counted[id(tensor)] = tensor
        self.symbols.setdefault(id(tensor), symbol)
        if self.recording:
            self.groups[-1][1].append(_Param(symbol, shape, tensor, about))

    def note(self, text: str) -> None:
        if self.recording:
            self.groups[-1][1].append(text)

    def step(self, text: str) -> None:
        if self.recording:
            self.steps.append((self.depth, text))

    def drop(self, text: str) -> str:
        """``text`` inside ``dropout(...)`` when the model trains with dropout."""
        return f"dropout({text})" if self.dropout else text


def _bias(module: nn.Module, name: str = "bias") -> Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, Tensor) else None


# --- one renderer per layer class ------------------------------------------------------------------


def _token_embedding(m: TokenEmbedding, card: _Card, **_: str) -> None:
    card.param("W_e", ("N_V", "d_e"), m.weight, "the token embedding matrix")
    card.step("for t ∈ [ℓ]: X[t, :] ← W_e[x[t], :]")


def _one_hot_embedding(m: OneHotEmbedding, card: _Card, **_: str) -> None:
    card.param("W_e", ("N_V", "d_e"), m.weight, "the token embedding matrix")
    card.step("X ← x W_e                                   ▷ one-hot rows select rows of W_e")


def _positional(m: PositionalEmbedding, card: _Card, **_: str) -> None:
    card.param("W_p", ("l_max", "d_e"), m.weight, "the positional embedding matrix")
    card.step("for t ∈ [ℓ]: X[t, :] ← X[t, :] + W_p[t, :]    ▷ ℓ ≤ ℓ_max")


def _layer_norm(m: LayerNorm, card: _Card, gain: str = "γ", shift: str = "β", src: str = "X", dst: str = "X") -> None:
    card.param(gain, ("d_e",), m.weight, "layer-norm gain")
    bias = _bias(m)
    if bias is not None:
        card.param(shift, ("d_e",), bias, "layer-norm offset")
    offset = f" + {shift}" if bias is not None else ""
    if not card.full:
        args = f"{gain}, {shift}" if bias is not None else gain
        card.step(f"for t ∈ [ℓ]: {dst}[t, :] ← layer_norm({src}[t, :] | {args})")
        return
    card.step(f"for t ∈ [ℓ]:                                ▷ layer_norm, ε = {m.cfg.layer_norm_eps:g}")
    card.depth += 1
    card.step(f"m ← Σ_i {src}[t, i] / d_e;  v ← Σ_i ({src}[t, i] − m)² / d_e")
    card.step(f"{dst}[t, :] ← ({src}[t, :] − m) / √(v + ε) ⊙ {gain}{offset}")
    card.depth -= 1


def _attention(m: CausalSelfAttention, card: _Card, sub: str = "", src: str = "X̃", **_: str) -> None:
    card.param(f"W_qkv{sub}", ("3*d_e", "d_e"), m.qkv.weight, "query, key and value projections [W_q; W_k; W_v]")
    b_qkv, b_o = _bias(m.qkv), _bias(m.proj)
    if b_qkv is not None:
        card.param(f"b_qkv{sub}", ("3*d_e",), b_qkv, "their biases")
    card.param(f"W_o{sub}", ("d_e", "d_e"), m.proj.weight, "the output projection")
    if b_o is not None:
        card.param(f"b_o{sub}", ("d_e",), b_o, "its bias")
    plus_qkv = f" + b_qkv{sub}" if b_qkv is not None else ""
    plus_o = f" + b_o{sub}" if b_o is not None else ""
    if not card.full:
        card.step(f"X ← X + {card.drop(f'MHAttention({src} | W_qkv{sub}, W_o{sub}, Mask[t, tʹ] = [[tʹ ≤ t]])')}")
        return
    card.step(f"[Q | K | V] ← {src} W_qkv{sub}ᵀ{plus_qkv}                 ▷ Q, K, V ∈ ℝ^{{ℓ×d_e}}")
    card.step("for h ∈ [H]:                                ▷ head h: columns (h−1)·d_h+1 … h·d_h")
    card.depth += 1
    card.step("S ← Q^h K^hᵀ / √d_h;  S[t, tʹ] ← −∞ for tʹ > t")
    card.step("Y^h ← softmax(S) V^h                        ▷ softmax over tʹ, row by row")
    card.depth -= 1
    card.step(f"X ← X + {card.drop(f'[Y^1 | … | Y^H] W_o{sub}ᵀ{plus_o}')}")


def _mlp(m: MLP, card: _Card, sub: str = "", src: str = "X̃", **_: str) -> None:
    card.param(f"W_mlp1{sub}", ("d_mlp", "d_e"), m.fc.weight, "MLP input projection")
    b1, b2 = _bias(m.fc), _bias(m.proj)
    if b1 is not None:
        card.param(f"b_mlp1{sub}", ("d_mlp",), b1, "its bias")
    card.param(f"W_mlp2{sub}", ("d_e", "d_mlp"), m.proj.weight, "MLP output projection")
    if b2 is not None:
        card.param(f"b_mlp2{sub}", ("d_e",), b2, "its bias")
    plus1 = f" + b_mlp1{sub}" if b1 is not None else ""
    plus2 = f" + b_mlp2{sub}" if b2 is not None else ""
    if not card.full:
        card.step(f"X ← X + {card.drop(f'GELU({src} W_mlp1{sub}ᵀ{plus1}) W_mlp2{sub}ᵀ{plus2}')}")
        return
    card.step(f"U ← GELU({src} W_mlp1{sub}ᵀ{plus1})                  ▷ U ∈ ℝ^{{ℓ×d_mlp}}, GELU(u) ≈ u Φ(u), tanh form")
    card.step(f"X ← X + {card.drop(f'U W_mlp2{sub}ᵀ{plus2}')}")


_WIDTHS = ("H", "d_h", "d_mlp")
"""The card's dims that each block has its own size of."""


def _widths_of(block: TransformerBlock) -> dict[str, int]:
    """``H``, ``d_h`` and ``d_mlp`` of one block."""
    return {"H": block.attn.heads, "d_h": block.attn.head_dim, "d_mlp": block.mlp.dim_size("ffn")}


def _widths_text(widths: dict[str, int]) -> str:
    return ", ".join(f"{name} = {size}" for name, size in widths.items())


def _block_range(first: int, last: int) -> str:
    """Blocks ``first .. last`` (1-based) as a set: ``{3}``, ``{3, 4}``, ``{3, …, 6}``."""
    if first == last:
        return f"{{{first}}}"
    return f"{{{first}, {last}}}" if last == first + 1 else f"{{{first}, …, {last}}}"


def _width_groups(layers: list[Any]) -> list[tuple[int, int, list[Any]]]:
    """Consecutive layers of equal widths: ``(first, last, layers)``, 1-based (one group unless blocks differ)."""
    keyed = itertools.groupby(
        enumerate(layers, 1), key=lambda pair: _widths_of(pair[1]) if isinstance(pair[1], TransformerBlock) else None
    )
    groups = [list(run) for _, run in keyed]
    return [(run[0][0], run[-1][0], [layer for _, layer in run]) for run in groups]


def _block(m: TransformerBlock, card: _Card, sub: str = "_l", **_: str) -> None:
    shared = {name: card.dims[name] for name in _WIDTHS}
    card.dims.update(_widths_of(m))  # shapes are checked against this block's own widths
    _render(m.ln_1, card, gain=f"γ¹{sub}", shift=f"β¹{sub}", dst="X̃")
    _render(m.attn, card, sub=sub)
    _render(m.ln_2, card, gain=f"γ²{sub}", shift=f"β²{sub}", dst="X̃")
    _render(m.mlp, card, sub=sub)
    card.dims.update(shared)


def _stack(m: Stack[Any], card: _Card, **_: str) -> None:
    layers = list(m)
    if len({type(layer) for layer in layers}) != 1:
        for layer in layers:
            _render(layer, card)
        return
    name, groups = type(layers[0]).__name__, _width_groups(layers)
    for first, last, group in groups:
        if len(groups) == 1:
            title, loop = f"For l ∈ [L] ({name} l−1 of {len(layers)}):", "for l = 1, 2, …, L do"
        else:
            widths = _widths_text(_widths_of(group[0]))
            title = f"For l ∈ {_block_range(first, last)} ({name} l−1 of {len(layers)}; {widths}):"
            loop = f"for l ∈ {_block_range(first, last)} do ▷ {widths}"
        card.groups.append((title, []))
        card.step(loop)
        card.depth += 1
        _render(group[0], card)
        recording = card.recording
        card.recording = False
        for layer in group[1:]:
            _render(layer, card)
        card.recording = recording
        card.depth -= 1
        card.step("end")
        card.groups.append(("", []))


def _head(m: LMHead, card: _Card, **_: str) -> None:
    tied = card.symbols.get(id(m.weight))
    if tied is None:
        card.param("W_u", ("N_V", "d_e"), m.weight, "the unembedding matrix")
    else:
        card.note(f"W_u = {tied}, the unembedding matrix, tied to the token embedding (counted once)")
    card.step("Z ← X W_uᵀ                                  ▷ logits, Z ∈ ℝ^{ℓ×N_V}")
    card.step("return P = softmax(Z)                       ▷ row by row: P[t, :] = P̂_θ(x[t+1] | x[1:t])")


def _transformer(m: CausalTransformer, card: _Card, **_: str) -> None:
    _render(m.pos, card)
    _render(m.blocks, card)
    _render(m.ln_f, card)
    _render(m.head, card)


def _gpt2(m: GPT2, card: _Card, **_: str) -> None:
    _render(m.embed, card)
    _render(m.transformer, card)


def _chain(m: Chain[Any, Any], card: _Card, **_: str) -> None:
    for layer in m:
        _render(layer, card)


_RENDERERS: dict[type, Callable[..., None]] = {
    TokenEmbedding: _token_embedding,
    OneHotEmbedding: _one_hot_embedding,
    PositionalEmbedding: _positional,
    LayerNorm: _layer_norm,
    CausalSelfAttention: _attention,
    MLP: _mlp,
    TransformerBlock: _block,
    Stack: _stack,
    LMHead: _head,
    CausalTransformer: _transformer,
    GPT2: _gpt2,
    Chain: _chain,
}


def _render(module: nn.Module, card: _Card, **names: str) -> None:
    for klass in type(module).__mro__:
        if klass in _RENDERERS:
            _RENDERERS[klass](module, card, **names)
            return
    _unknown(module, card)


def _unknown(m: nn.Module, card: _Card) -> None:
    """A layer the card has no page for: its typed signature, and its own parameters by name."""
    io = declared_io(type(m))
    arrow = f'"{io[0]}" → "{io[1]}"' if io else "untyped"
    name = m.describe() if isinstance(m, Layer) else type(m).__name__
    card.step(f"X ← {name}(X)                             ▷ {arrow}")
    for pname, p in m.named_parameters():
        if id(p) not in card.counted:
            card.counted[id(p)] = p
            card.note(f"{name}.{pname} ∈ ℝ^{{{'×'.join(map(str, p.shape))}}}, a parameter of {name}")


# --- the card --------------------------------------------------------------------------------------


def _dims(model: Layer[Any, Any]) -> dict[str, int]:
    cfg = model.cfg
    dims = {"N_V": cfg.vocab, "l_max": cfg.seq_len, "L": cfg.layers, "H": cfg.heads, "d_h": cfg.head_dim,
            "d_e": cfg.d_model, "d_mlp": cfg.ffn_hidden}  # fmt: skip
    return dims


def _entry(model: Layer[Any, Any]) -> nn.Module:
    while isinstance(model, GPT2 | Chain):
        model = model.embed if isinstance(model, GPT2) else model[0]
    return model


def _inputs(model: Layer[Any, Any]) -> str:
    entry = _entry(model)
    if isinstance(entry, TokenEmbedding):
        return "x ∈ V^ℓ, a sequence of token IDs, V = [N_V], 1 ≤ ℓ ≤ ℓ_max"
    if isinstance(entry, OneHotEmbedding):
        return "x ∈ {0, 1}^{ℓ×N_V}, one one-hot row per token, 1 ≤ ℓ ≤ ℓ_max"
    return "X ∈ ℝ^{ℓ×d_e}, one embedded token per row, 1 ≤ ℓ ≤ ℓ_max"


def _block_widths(model: Layer[Any, Any], dims: dict[str, int]) -> list[str]:
    """Set ``dims``' H, d_h and d_mlp to the blocks' when they all agree (and return nothing), else one line
    per group of consecutive blocks of equal widths."""
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    groups = _width_groups(blocks)
    if len(groups) <= 1:
        dims.update(_widths_of(blocks[0]) if blocks else {})
        return []
    return [
        f"    l ∈ {_block_range(first, last) + ':':10} {_widths_text(_widths_of(group[0]))}"
        for first, last, group in groups
    ]


def _hyper_lines(model: Layer[Any, Any], dims: dict[str, int], per_block: list[str]) -> list[str]:
    cfg = model.cfg
    about = {"N_V": "vocabulary size", "l_max": "maximum context length", "L": "number of blocks",
             "H": "attention heads", "d_h": "width of one head", "d_e": "embedding width, d_e = H·d_h",
             "d_mlp": "MLP hidden width"}  # fmt: skip
    shown = {k: v for k, v in dims.items() if not (per_block and k in _WIDTHS)}
    lines = [f"  {_pretty(k):6} = {v:<7,} {about[k]}" for k, v in shown.items()]
    if per_block:
        lines += ["  H (attention heads), d_h (width of one head) and d_mlp (MLP hidden width) of block l:", *per_block]
    if cfg.dropout:
        lines.append(f"  {'p_drop':6} = {cfg.dropout:<7g} dropout on attention and MLP outputs (training only)")
    return lines


def _param_lines(card: _Card) -> list[str]:
    lines: list[str] = []
    for title, entries in card.groups:
        if not entries:
            continue
        indent = "  "
        if title:
            lines.append(f"  {title}")
            indent = "    "
        for entry in entries:
            if isinstance(entry, str):
                lines.append(indent + entry)
                continue
            shape = "×".join(_pretty(d) for d in entry.shape)
            sizes = "×".join(str(s) for s in entry.tensor.shape)
            lines.append(
                f"{indent}{entry.symbol:9} ∈ ℝ^{{{shape}}}".ljust(30) + f" = ℝ^{{{sizes}}}".ljust(16) + entry.about
            )
    return lines


def _build(model: Layer[Any, Any], full: bool) -> str:
    dims = _dims(model)
    per_block = _block_widths(model, dims)
    card = _Card(dims, full, dropout=model.cfg.dropout > 0)
    _render(model, card)
    for name, p in model.named_parameters():  # a parameter no renderer named: list it rather than drop it
        if id(p) not in card.counted:
            card.counted[id(p)] = p
            card.groups[-1][1].append(f"{name} ∈ ℝ^{{{'×'.join(map(str, p.shape))}}}")
    total = sum(p.numel() for p in card.counted.values())
    io = declared_io(type(model))
    typed = f'Layer["{io[0]}", "{io[1]}"]' if io else type(model).__name__
    kind = "with the block, attention, layer-norm and MLP steps inlined" if full else "decoder-only transformer"
    lines = [
        f"Algorithm: P ← {type(model).__name__}(x | θ)    ▷ {kind}; typed {typed}",
        f"Input: {_inputs(model)}.",
        "Output: P ∈ (0, 1)^{ℓ×N_V}, where row t of P is P̂_θ(x[t+1] | x[1:t]).",
        "Hyperparameters:",
        *_hyper_lines(model, dims, per_block),
        "Parameters: θ includes all of the following (PyTorch layout: X has one row per token, a linear map is "
        "X Wᵀ + b):",
        *_param_lines(card),
        f"  total: {total:,} parameters",
        "Steps:",
    ]
    for number, (depth, text) in enumerate(card.steps, 1):
        code, _, comment = text.partition("▷")
        line = f"{number:>3}  {'  ' * depth}{code.strip()}"
        lines.append(f"{line:<56}▷ {comment.strip()}" if comment else line)
    return "\n".join(lines) + "\n"


def algorithm_card(model: Layer[Any, Any]) -> str:
    """The model's pseudocode: inputs, outputs, hyperparameters, parameters with shapes, and the steps."""
    return _build(model, full=False)


def algorithm_card_full(model: Layer[Any, Any]) -> str:
    """`algorithm_card` with each block's layer norms, attention and MLP written out step by step."""
    return _build(model, full=True)
