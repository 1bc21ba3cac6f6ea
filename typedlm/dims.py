"""Matching tensors against jaxtyping dimension strings, with config-scoped dims bound to their config.

`TensorSpec` is one parsed annotation (``Float[Tensor, "batch seq d_model"]``); `DimEnv` holds the sizes a
config fixes (``d_model = 64 from cfg.d_model``); `match_tensor` checks one tensor and extends the
per-call bindings of free dims. The matching code is plain Python over ``tensor.shape`` so that
TorchDynamo can trace it: under ``torch.compile`` it runs once per compiled shape.
"""

import types
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from typedlm.config import CausalConfig
from typedlm.errors import ShapeError


@dataclass(frozen=True)
class Bound:
    """A dimension size and where it comes from, e.g. ``Bound(64, "cfg.d_model")``."""

    size: int
    source: str


@dataclass(frozen=True)
class DimEnv:
    """Config-scoped dimension sizes of one layer or composed model, and the upper bound on ``seq``."""

    sizes: dict[str, Bound] = field(default_factory=dict)
    max_seq: Bound | None = None

    @classmethod
    def from_config(cls, cfg: CausalConfig) -> "DimEnv":
        sizes = {
            "vocab": Bound(cfg.vocab, "cfg.vocab"),
            "d_model": Bound(cfg.d_model, f"cfg.d_model = heads*head_dim = {cfg.heads}*{cfg.head_dim}"),
            "heads": Bound(cfg.heads, "cfg.heads"),
            "head_dim": Bound(cfg.head_dim, "cfg.head_dim"),
            "ffn": Bound(cfg.ffn_hidden, "cfg.ffn_hidden"),
        }
        return cls(sizes, Bound(cfg.seq_len, "cfg.seq_len"))

    def merged(self, other: "DimEnv", left: str, right: str) -> "DimEnv":
        """One environment for ``left`` composed with ``right``; a config-scoped dim that differs is a ShapeError."""
        sizes = dict(self.sizes)
        for name, bound in other.sizes.items():
            mine = sizes.get(name)
            if mine is None:
                sizes[name] = bound
            elif mine.size != bound.size:
                raise ShapeError(
                    f"cannot compose {left} with {right}: {name} differs — {left} has {name} = {mine.size} "
                    f"({mine.source}), {right} has {name} = {bound.size} ({bound.source})"
                )
        candidates = [b for b in (self.max_seq, other.max_seq) if b is not None]
        max_seq = min(candidates, key=lambda b: b.size) if candidates else None
        return DimEnv(sizes, max_seq)


_KIND_OF_CLASS = {"Float": "a floating-point", "Int": "an integer", "Bool": "a boolean", "Shaped": "any"}


@dataclass(frozen=True)
class TensorSpec:
    """One jaxtyping tensor annotation: its dimension tokens and the dtypes it accepts."""

    text: str
    dims: tuple[str, ...]
    kind: str
    dtypes: frozenset[torch.dtype] | None

    @classmethod
    def from_hint(cls, hint: object) -> "TensorSpec | None":
        """Parse ``Float[Tensor, "batch seq"]``; None for anything that is not a jaxtyping torch annotation."""
        dim_str = getattr(hint, "dim_str", None)
        if not isinstance(dim_str, str) or getattr(hint, "array_type", None) is not Tensor:
            return None
        kind = getattr(hint, "__name__", "Shaped").split("[", 1)[0]
        names: Any = getattr(hint, "dtypes", None)
        dtypes = None
        if kind != "Shaped" and names:
            dtypes = frozenset(d for n in names if isinstance(d := getattr(torch, n, None), torch.dtype))
        return cls(dim_str, tuple(dim_str.split()), _KIND_OF_CLASS.get(kind, kind), dtypes)

    @property
    def quoted(self) -> str:
        return f'"{self.text}"'


def specs_of(hint: object) -> tuple[TensorSpec, ...]:
    """The tensor specs an annotation allows: one, several for a Union of them, none if not a tensor hint."""
    one = TensorSpec.from_hint(hint)
    if one is not None:
        return (one,)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [TensorSpec.from_hint(h) for h in typing.get_args(hint)]
        return tuple(s for s in found if s is not None)
    return ()


Bindings = dict[str, tuple[int, str]]
"""Free dims seen so far in one call: name -> (size, the argument that fixed it)."""


def _shape_text(shape: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def match_tensor(spec: TensorSpec, value: Tensor, arg: str, where: str, env: DimEnv, bindings: Bindings) -> None:
    """Check one tensor against ``spec``; bind its free dims into ``bindings``. Raise ShapeError on mismatch."""
    shape = value.shape
    head = f"{where}: {arg} expected {spec.quoted}"
    if spec.dtypes is not None and value.dtype not in spec.dtypes:
        raise ShapeError(f"{head} as {spec.kind} tensor, got dtype {value.dtype} with shape {_shape_text(shape)}")
    dims = spec.dims
    if "..." in dims:
        cut = dims.index("...")
        before, after = dims[:cut], dims[cut + 1 :]
        if len(shape) < len(before) + len(after):
            raise ShapeError(f"{head}, got {len(shape)} dims {_shape_text(shape)}")
        pairs = list(zip(before, shape[: len(before)], strict=True))
        pairs += list(zip(after, shape[len(shape) - len(after) :], strict=True))
    else:
        if len(shape) != len(dims):
            raise ShapeError(f"{head} ({len(dims)} dims), got {len(shape)} dims {_shape_text(shape)}")
        pairs = list(zip(dims, shape, strict=True))
    expressions: list[tuple[str, int]] = []
    for name, size in pairs:
        if name.isdigit():
            if size != int(name):
                raise ShapeError(f"{head}: a dim of size {name}, got {size} in shape {_shape_text(shape)}")
        elif not name.isidentifier():
            expressions.append((name, size))
        elif name.startswith("_"):
            continue
        elif name in env.sizes:
            bound = env.sizes[name]
            if size != bound.size:
                raise ShapeError(
                    f"{head} with {name} = {bound.size} ({bound.source}), got {name} = {size} "
                    f"in shape {_shape_text(shape)}"
                )
        elif name in bindings:
            seen, origin = bindings[name]
            if size != seen:
                raise ShapeError(
                    f"{head}: {name} = {seen} (fixed by {origin}), got {name} = {size} in shape {_shape_text(shape)}"
                )
        else:
            if name == "seq" and env.max_seq is not None and size > env.max_seq.size:
                raise ShapeError(
                    f"{head}: seq = {size} exceeds {env.max_seq.source} = {env.max_seq.size} "
                    f"in shape {_shape_text(shape)}"
                )
            bindings[name] = (size, arg)
    for text, size in expressions:
        expected = _evaluate(text, env, bindings, head)
        if size != expected:
            raise ShapeError(f"{head}: {text} = {expected}, got {size} in shape {_shape_text(shape)}")


def _evaluate(text: str, env: DimEnv, bindings: Bindings, head: str) -> int:
    """Value of a symbolic dim such as ``batch*seq`` from the sizes bound so far."""
    names: dict[str, int] = {k: b.size for k, b in env.sizes.items()}
    names.update({k: size for k, (size, _) in bindings.items()})
    try:
        # ``text`` is a dimension expression from an annotation, never user data.
        value = eval(text, {"__builtins__": {}}, names)
    except NameError as error:
        raise ShapeError(f"{head}: cannot evaluate {text!r} ({error})") from None
    return int(value)
