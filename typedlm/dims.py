"""Matching tensors against jaxtyping dimension strings, with config-scoped dims bound to their config.

`TensorSpec` is one parsed annotation (``Float[Tensor, "batch seq d_model"]``); `DimEnv` holds the sizes a
config fixes (``d_model = 64 from cfg.d_model``, ``kv_heads = 2 from cfg.kv_heads`` for a user's config,
see `config_dims`) and those local to one layer; `match_tensor` checks one tensor and extends the
per-call bindings of free dims. The matching code is plain Python over ``tensor.shape`` so that
TorchDynamo can trace it: under ``torch.compile`` it runs once per compiled shape.
"""

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from typedlm.config import CausalConfig
from typedlm.errors import ConfigError, ShapeError
from typedlm.shapes import CONFIG_DIMS


@dataclass(frozen=True)
class Bound:
    """A dimension size and where it comes from, e.g. ``Bound(64, "cfg.d_model")``."""

    size: int
    source: str


FREE_CONFIG_FIELDS = ("batch", "seq_len")
"""Int fields of a config that are not dims: ``batch`` (calls may use any) and ``seq_len`` (bounds ``seq``)."""


def is_config_type(config_type: object) -> bool:
    """Whether ``config_type`` can configure a layer: `CausalConfig` (or a subclass), or a frozen dataclass."""
    if not isinstance(config_type, type) or not dataclasses.is_dataclass(config_type):
        return False
    return issubclass(config_type, CausalConfig) or bool(config_type.__dataclass_params__.frozen)  # type: ignore[attr-defined]  # set by @dataclass


def _int_fields(config_type: type) -> list[str]:
    """The names of a dataclass config's fields annotated ``int`` (not ``bool``), in declaration order."""
    try:
        hints = typing.get_type_hints(config_type)
    except (NameError, TypeError):  # an annotation that cannot be resolved here: read the raw ones
        hints = {f.name: f.type for f in dataclasses.fields(config_type)}
    return [f.name for f in dataclasses.fields(config_type) if hints.get(f.name) in (int, "int")]


def config_dims(config_type: type) -> tuple[str, ...]:
    """The config-scoped dim names a config type declares.

    `CausalConfig`: vocab, d_model, heads, head_dim, ffn; a subclass adds its own int fields (``kv_heads``).
    Any other frozen dataclass: its int fields but ``batch`` (free) and ``seq_len`` (the bound on ``seq``).
    """
    if issubclass(config_type, CausalConfig):
        own = {f.name for f in dataclasses.fields(CausalConfig)}
        return CONFIG_DIMS + tuple(name for name in _int_fields(config_type) if name not in own)
    return tuple(name for name in _int_fields(config_type) if name not in FREE_CONFIG_FIELDS)


@dataclass(frozen=True)
class DimEnv:
    """The dimension sizes one layer (or composed model) checks, and the upper bound on ``seq``.

    ``local`` names the sizes that belong to this layer only (``MLP(cfg, ffn=128)``): they are checked
    on its calls but not unified across ``>>``/`Stack`, unlike the model-wide ones (``d_model``).
    """

    sizes: dict[str, Bound] = field(default_factory=dict)
    max_seq: Bound | None = None
    local: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: object) -> "DimEnv":
        """The dims of ``cfg`` (see `config_dims`); none for None (a stateless layer)."""
        if cfg is None:
            return cls()
        if not is_config_type(type(cfg)):
            raise ConfigError(
                f"cfg must be a CausalConfig, a frozen dataclass config or None, got {type(cfg).__name__}"
            )
        sizes: dict[str, Bound] = {}
        if isinstance(cfg, CausalConfig):
            sizes = {
                "vocab": Bound(cfg.vocab, "cfg.vocab"),
                "d_model": Bound(cfg.d_model, f"cfg.d_model = heads*head_dim = {cfg.heads}*{cfg.head_dim}"),
                "heads": Bound(cfg.heads, "cfg.heads"),
                "head_dim": Bound(cfg.head_dim, "cfg.head_dim"),
                "ffn": Bound(cfg.ffn_hidden, "cfg.ffn_hidden"),
            }
        for name in config_dims(type(cfg)):
            value = None if name in sizes else getattr(cfg, name)
            if isinstance(value, int) and not isinstance(value, bool):
                sizes[name] = Bound(value, f"cfg.{name}")
        seq_len = getattr(cfg, "seq_len", None)
        max_seq = Bound(seq_len, "cfg.seq_len") if isinstance(seq_len, int) and not isinstance(seq_len, bool) else None
        return cls(sizes, max_seq)

    def with_local(self, sizes: dict[str, int], owner: str) -> "DimEnv":
        """This environment plus sizes local to the layer ``owner`` (they replace a config's size of that name)."""
        if not sizes:
            return self
        added: dict[str, Bound] = {}
        for name, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError(f"{owner}({name}={size!r}): a layer-local dim size must be an int >= 1")
            added[name] = Bound(size, f"{owner}({name}={size})")
        return DimEnv(self.sizes | added, self.max_seq, self.local | added.keys())

    def merged(self, other: "DimEnv", left: str, right: str) -> "DimEnv":
        """The model-wide dims of ``left`` composed with ``right``; one that differs is a ShapeError.

        Layer-local dims of either side are left out: each layer keeps checking its own.
        """
        sizes = {name: bound for name, bound in self.sizes.items() if name not in self.local}
        for name, bound in other.sizes.items():
            if name in other.local:
                continue
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


def dim_names(spec: "TensorSpec") -> Iterator[tuple[str, bool]]:
    """Each dim name ``spec`` uses, with whether it is variadic (``*lead``): ``"batch seq+1 *lead"`` gives
    (batch, False), (seq, False), (lead, True). Sizes and ``...`` name nothing."""
    for token in spec.dims:
        name = token.removeprefix("#")
        if name.startswith("*"):
            yield name[1:], True
        elif name.isidentifier():
            yield name, False
        elif name != "..." and not name.isdigit():
            for part in re.findall(r"[A-Za-z_]\w*", name):
                yield part, False


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
        dims = tuple(dim_str.split())
        for dim in dims:
            _check_dim_syntax(dim, dim_str)
        return cls(dim_str, dims, _KIND_OF_CLASS.get(kind, kind), dtypes)

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


Bindings = dict[str, tuple[Any, str]]
"""Free dims seen so far in one call: name -> (size, the argument that fixed it); a variadic ``*name``
-> (its sizes, the argument)."""


def _quiet(quiet: bool) -> ShapeError | None:
    """A ShapeError without a message when ``quiet``, else None: ``raise _quiet(quiet) or ShapeError(f"...")``
    builds the message only when it is needed. A union's alternatives are tried quietly: under TorchDynamo
    with dynamic shapes, formatting a symbolic size would specialize it, on a call another alternative accepts."""
    return ShapeError("") if quiet else None


def _shape_text(shape: tuple[int, ...] | torch.Size) -> str:
    # formatted, not str(int(s)): TorchDynamo can format a symbolic size while it traces a failing check
    return "(" + ", ".join(f"{s}" for s in shape) + ")"


_EXPRESSION = re.compile(r"[\w+\-*/()]+")
_CALL = re.compile(r"\w\s*\(")  # seq(...) is a call, not arithmetic


def _is_arithmetic(dim: str) -> bool:
    """Whether ``dim`` is arithmetic over dim names (``seq+1``, ``3*d_model``); compiles it (`_expression`)."""
    if not _EXPRESSION.fullmatch(dim) or _CALL.search(dim) or not any(c.isalpha() for c in dim):
        return False
    try:
        _expression(dim)
    except SyntaxError:  # seq+, (seq, 2seq
        return False
    return True


def _check_dim_syntax(dim: str, text: str) -> None:
    """Refuse a dim token typedlm cannot check (when the annotation is read: at class creation)."""
    name = dim.removeprefix("*").removeprefix("#")
    if dim == "..." or dim.isdigit() or name.isidentifier():
        return
    if not dim.startswith(("*", "#")) and _is_arithmetic(dim):
        return  # arithmetic over dims, such as seq+1 or 3*d_model: compiled once, now
    raise ShapeError(
        f'"{text}": the dim {dim!r} is not supported (a name, a size such as 3, ..., *name, #name, or an '
        "expression such as seq+1)"
    )


def match_tensor(
    spec: TensorSpec, value: Tensor, arg: str, where: str, env: DimEnv, bindings: Bindings, quiet: bool = False
) -> None:
    """Check one tensor against ``spec``; bind its free dims into ``bindings``. Raise ShapeError on mismatch
    (without a message if ``quiet``)."""
    shape = value.shape
    head = f"{where}: {arg} expected {spec.quoted}"
    if spec.dtypes is not None and value.dtype not in spec.dtypes:
        raise _quiet(quiet) or ShapeError(
            f"{head} as {spec.kind} tensor, got dtype {value.dtype} with shape {_shape_text(shape)}"
        )
    dims = spec.dims
    variadic = next((i for i, d in enumerate(dims) if d == "..." or d.startswith("*")), None)
    if variadic is not None:
        before, after = dims[:variadic], dims[variadic + 1 :]
        if len(shape) < len(before) + len(after):
            raise _quiet(quiet) or ShapeError(f"{head}, got {len(shape)} dims {_shape_text(shape)}")
        pairs = list(zip(before, shape[: len(before)], strict=True))
        pairs += list(zip(after, shape[len(shape) - len(after) :], strict=True))
        if dims[variadic] != "...":  # *name: the same sizes wherever it appears in one call
            _bind_variadic(
                dims[variadic], tuple(shape[len(before) : len(shape) - len(after)]), head, arg, bindings, quiet
            )
    else:
        if len(shape) != len(dims):
            raise _quiet(quiet) or ShapeError(f"{head} ({len(dims)} dims), got {len(shape)} dims {_shape_text(shape)}")
        pairs = list(zip(dims, shape, strict=True))
    expressions: list[tuple[str, int]] = []
    for name, size in pairs:
        if name.startswith("#"):  # broadcastable: 1, or the dim's size
            if size == 1:
                continue
            name = name[1:]
        if name.isdigit():
            if size != int(name):
                raise _quiet(quiet) or ShapeError(
                    f"{head}: a dim of size {name}, got {size} in shape {_shape_text(shape)}"
                )
        elif not name.isidentifier():
            expressions.append((name, size))
        elif name.startswith("_"):
            continue
        elif name in env.sizes:
            bound = env.sizes[name]
            if size != bound.size:
                raise _quiet(quiet) or ShapeError(
                    f"{head} with {name} = {bound.size} ({bound.source}), got {name} = {size} "
                    f"in shape {_shape_text(shape)}"
                )
        elif name in bindings:
            seen, origin = bindings[name]
            if size != seen:
                raise _quiet(quiet) or ShapeError(
                    f"{head}: {name} = {seen} (fixed by {origin}), got {name} = {size} in shape {_shape_text(shape)}"
                )
        else:
            if name == "seq" and env.max_seq is not None and size > env.max_seq.size:
                raise _quiet(quiet) or ShapeError(
                    f"{head}: seq = {size} exceeds {env.max_seq.source} = {env.max_seq.size} "
                    f"in shape {_shape_text(shape)}"
                )
            bindings[name] = (size, arg)
    for text, size in expressions:
        expected = _evaluate(text, env, bindings, head, quiet)
        if size != expected:
            raise _quiet(quiet) or ShapeError(f"{head}: {text} = {expected}, got {size} in shape {_shape_text(shape)}")


def _bind_variadic(token: str, sizes: tuple[int, ...], head: str, arg: str, variadics: Bindings, quiet: bool) -> None:
    """``*name`` covers ``sizes`` here; one seen before in the call must cover the same sizes."""
    key = token.lstrip("*#")
    seen = variadics.get(token)
    if seen is None:
        variadics[token] = (sizes, arg)
    elif seen[0] != sizes:
        raise _quiet(quiet) or ShapeError(
            f"{head}: *{key} = {_shape_text(seen[0])} (fixed by {seen[1]}), got {_shape_text(sizes)}"
        )


_EXPRESSIONS: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {}
"""Each dim expression read so far: the names it uses and a function of them computing it."""


def _expression(text: str) -> tuple[tuple[str, ...], Callable[..., Any]]:
    """The names ``text`` (such as ``seq+1``) uses and a function of them, compiled once when the annotation
    is read: a call evaluates a plain function, which TorchDynamo can trace (it cannot trace ``eval``)."""
    known = _EXPRESSIONS.get(text)
    if known is None:
        names = tuple(dict.fromkeys(re.findall(r"[A-Za-z_]\w*", text)))
        # ``text`` is a dimension expression from an annotation (`_EXPRESSION`: names, digits, + - * / ( )).
        function = eval(f"lambda {', '.join(names)}: {text}", {"__builtins__": {}})
        known = _EXPRESSIONS[text] = (names, function)
    return known


def _evaluate(text: str, env: DimEnv, bindings: Bindings, head: str, quiet: bool = False) -> Any:
    """Value of a symbolic dim such as ``batch*seq`` from the sizes bound so far (an int, or a symbolic
    size while TorchDynamo traces with dynamic shapes)."""
    names, function = _expression(text)
    values = []
    for name in names:
        if name in env.sizes:
            values.append(env.sizes[name].size)
        elif name in bindings and not isinstance(bindings[name][0], tuple):
            values.append(bindings[name][0])
        else:
            raise _quiet(quiet) or ShapeError(f"{head}: cannot evaluate {text!r} (name {name!r} is not defined)")
    value = function(*values)
    return value if isinstance(value, torch.SymInt) else int(value)
