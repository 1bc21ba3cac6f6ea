"""Probe configs, probe tensors and shape traces: running a forward with no data and no real compute.

The probe config's sizes are pairwise distinct and never 1, and so are the free sizes (``batch``,
``seq``) of the two traces, so no dimension can stand in for another: a transpose, a reduction over the
wrong axis or a ``Linear(ffn, vocab)`` where ``d_model`` was meant fails instead of passing by
coincidence. A trace runs on the meta device (shapes only) and falls back to the CPU for an op that has
no meta kernel.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import torch
from torch import Tensor, nn
from torch.func import functional_call

from typedlm.checks import CallSignature, Param
from typedlm.config import CausalConfig
from typedlm.dims import DimEnv, TensorSpec, config_dims, is_config_type
from typedlm.layer import Layer

PROBE_SIZES: dict[str, Any] = dict(batch=2, seq_len=23, vocab=37, heads=3, head_dim=6, ffn_hidden=28, layers=2)
"""d_model = 18: with ffn 28, vocab 37 and seq_len 23, every dim differs from every other."""

MAX_PROBE_SEQ = 12
"""Traces use at most this many positions, whatever the config allows (keeps big models cheap), and at
most half of ``seq_len``, so code that appends positions (decoding) has room."""


class CannotProbe(Exception):
    """This target cannot be probed (its constructor or a parameter needs more than typedlm can make)."""


C = TypeVar("C")

_PROBE_SIZES_EVEN: dict[str, Any] = dict(batch=2, seq_len=23, vocab=37, heads=4, head_dim=8, ffn_hidden=28, layers=2)
"""A second probe for configs that refuse 3 heads (a ``kv_heads`` that must divide ``heads``): d_model = 32."""

_OTHER_SIZES = ((5, 7, 11, 13, 17, 19, 29, 31, 41, 43, 47, 53), (2, 6, 10, 12, 14, 16, 20, 22, 24, 26, 30, 34))
"""Sizes for a config's other int fields, tried in these orders (and reversed): odd ones unlike every probe
size, then even ones for fields that must divide or be divided by another."""


@overload
def probe_config() -> CausalConfig: ...
@overload
def probe_config(config_type: type[C]) -> C: ...
def probe_config(config_type: type[Any] = CausalConfig) -> Any:
    """The probe config of ``config_type``: a `CausalConfig` (or subclass) or another frozen dataclass.

    A `CausalConfig` gets `PROBE_SIZES`; every other int field that is a dim (``kv_heads``, or every int
    field of another dataclass but ``batch``/``seq_len``) gets a size unlike the others. If the config's
    own validation refuses that assignment, a few others are tried; CannotProbe if none passes.
    """
    name = config_type.__name__
    if not is_config_type(config_type):
        raise CannotProbe(f"cannot make a probe {name}: not a CausalConfig or a frozen dataclass")
    dims = config_dims(config_type)
    causal = issubclass(config_type, CausalConfig)
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    own = [d for d in dims if d in fields and not (causal and d in PROBE_SIZES)]
    plain = _required_plain_fields(config_type)
    bases = [PROBE_SIZES, _PROBE_SIZES_EVEN] if causal else [{"batch": 2, "seq_len": 23}]
    errors: list[str] = []
    tried: list[dict[str, Any]] = []
    for base, sizes, reverse in itertools.product(bases, _OTHER_SIZES, (False, True)):
        taken = {v for k, v in base.items() if k not in ("batch", "layers")}  # batch and layers are no dims
        taken.add(base.get("heads", 0) * base.get("head_dim", 0))
        free = [n for n in (reversed(sizes) if reverse else sizes) if n not in taken]
        values = {**plain, **{k: v for k, v in base.items() if k in fields}, **dict(zip(own, free, strict=False))}
        if values in tried:
            continue
        tried.append(values)
        try:
            return config_type(**values)
        except TypeError as error:  # a field with no default that is not a size
            raise CannotProbe(f"cannot make a probe {name}: {error}") from None
        except (ValueError, ArithmeticError, AssertionError) as error:
            errors.append(f"{type(error).__name__}: {error}")
    raise CannotProbe(f"{name} refuses every probe config it was offered ({errors[0]})")


_PLAIN_FIELD_PROBES: dict[object, object] = {float: 1.0, bool: False, str: ""}
"""Values for a config's float, bool and str fields that have no default (a ``rope_theta: float``)."""


def _required_plain_fields(config_type: type) -> dict[str, object]:
    """Probe values for the float, bool and str fields of ``config_type`` that have no default."""
    try:
        hints = typing.get_type_hints(config_type)
    except (NameError, TypeError):
        return {}
    return {
        f.name: _PLAIN_FIELD_PROBES[hints[f.name]]
        for f in dataclasses.fields(config_type)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and hints.get(f.name) in _PLAIN_FIELD_PROBES
    }


@dataclass(frozen=True)
class FreeSizes:
    """Sizes for the dims bound per call."""

    batch: int
    seq: int

    def text(self) -> str:
        return f"batch={self.batch}, seq={self.seq}"


def free_sizes(env: DimEnv) -> tuple[FreeSizes, FreeSizes]:
    """Two (batch, seq) pairs unlike each other and unlike every config-scoped size of ``env``."""
    taken = {bound.size for bound in env.sizes.values()}
    max_seq = env.max_seq.size if env.max_seq is not None else 2 * MAX_PROBE_SEQ
    unused = [n for n in range(2, 4 * MAX_PROBE_SEQ) if n not in taken]
    fitting = [n for n in unused if n <= min(max_seq // 2, MAX_PROBE_SEQ)]
    if len(fitting) < 2:  # a tiny seq_len: the largest sizes that fit, even one a config dim also has
        fitting = [1, *range(1, max_seq + 1)]
    seqs = fitting[-2:]
    batches = [n for n in unused if n not in seqs][:2]
    return FreeSizes(batches[0], seqs[0]), FreeSizes(batches[1], seqs[1])


def dim_sizes(env: DimEnv, free: FreeSizes) -> dict[str, int]:
    """Every dim name's probe size: the config's, then the free ones."""
    sizes = {name: bound.size for name, bound in env.sizes.items()}
    sizes.update(batch=free.batch, seq=free.seq)
    return sizes


def _size_of(token: str, sizes: dict[str, int]) -> list[int]:
    """The sizes one dimension token stands for: ``seq``, ``#seq``, ``3``, ``seq+1``, ``*lead``, ``...``."""
    name = token.lstrip("#")
    if name == "..." or name.startswith("*"):
        return []
    if name.isdigit():
        return [int(name)]
    if name.isidentifier():
        if name not in sizes:  # a name no config binds: a fresh size of its own
            sizes[name] = next(n for n in itertools.count(5) if n not in sizes.values())
        return [sizes[name]]
    value = eval(name, {"__builtins__": {}}, dict(sizes))  # a dim expression from an annotation
    return [int(value)]


def shape_of(spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
    """The concrete shape a spec takes with these probe sizes."""
    return tuple(size for token in spec.dims for size in _size_of(token, sizes))


def dtype_of(spec: TensorSpec) -> torch.dtype:
    if spec.dtypes:
        for preferred in (torch.float32, torch.int64, torch.bool):
            if preferred in spec.dtypes:
                return preferred
        return sorted(spec.dtypes, key=str)[0]
    return {"an integer": torch.int64, "a boolean": torch.bool}.get(spec.kind, torch.float32)


def probe_tensor(
    spec: TensorSpec, sizes: dict[str, int], *, device: torch.device | str, generator: torch.Generator | None
) -> Tensor:
    """A tensor of ``spec``'s shape and dtype: random values on a real device, none on meta.

    Integer tensors hold ids in ``0 .. vocab-1`` (the probe's vocabulary), so they can index an embedding.
    """
    shape, dtype = shape_of(spec, sizes), dtype_of(spec)
    if torch.device(device).type == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) < 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, sizes.get("vocab", 2), shape, generator=generator, dtype=dtype)


# --- building layers ---------------------------------------------------------------------------------


def _config_type(cls: type[Layer[Any, Any]]) -> type[Any]:
    """The config class ``cls.__init__`` asks for (a `CausalConfig` subclass or a frozen dataclass), else
    `CausalConfig`."""
    try:
        hints = typing.get_type_hints(cls.__init__)
        names = list(inspect.signature(cls.__init__).parameters)
    except (NameError, TypeError, ValueError):
        return CausalConfig
    wanted = hints.get(names[1]) if len(names) > 1 else None
    found = [t for t in (wanted, *typing.get_args(wanted)) if is_config_type(t)]
    return typing.cast(type[Any], found[0]) if found else CausalConfig


def build_layer(cls: type[Layer[Any, Any]]) -> Layer[Any, Any]:
    """``cls(probe config)``, or ``cls()`` for a stateless layer; CannotProbe if its constructor needs more
    than a config or it is abstract."""
    if inspect.isabstract(cls):
        raise CannotProbe("it is abstract")
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    takes_config = bool(parameters) and parameters[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    required = [
        p.name
        for p in parameters[1 if takes_config else 0 :]
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise CannotProbe(f"its constructor needs more than a config ({', '.join(required)})")
    torch.manual_seed(0)
    return cls(probe_config(_config_type(cls))) if takes_config else cls()


# --- calls -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeCall:
    """The arguments of one probe call."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __call__(self, fn: Callable[..., Any]) -> Any:
        """``fn`` called with these arguments."""
        return fn(*self.args, **self.kwargs)


def layer_call(layer: Layer[Any, Any], free: FreeSizes, *, device: torch.device | str, seed: int = 0) -> ProbeCall:
    """Arguments for ``layer``'s forward: its input, plus any other annotated tensor it requires.

    Tensors go where the layer's parameters are, floating ones in the parameters' dtype (a bf16 model
    gets bf16 probes).
    """
    generator = None if torch.device(device).type == "meta" else torch.Generator().manual_seed(seed)
    sizes = dim_sizes(layer.dim_env, free)
    place = _placement(layer, device)
    call = ProbeCall((), {})
    for index, param in enumerate(layer._typedlm_signature.params):
        if index > 0 and param.default is not inspect.Parameter.empty:
            continue
        if not param.specs:
            raise CannotProbe(f"forward parameter {param.name!r} is not an annotated tensor and has no default")
        tensor = probe_tensor(param.specs[0], sizes, device=device, generator=generator)
        call = with_argument(call, param, place(tensor))
    return call


def with_argument(call: ProbeCall, param: Param, value: object) -> ProbeCall:
    """``call`` with ``value`` for ``param``: by keyword if the parameter is keyword-only, else by position."""
    if param.keyword_only:
        return ProbeCall(call.args, {**call.kwargs, param.name: value})
    return ProbeCall((*call.args, value), call.kwargs)


def _placement(layer: nn.Module, device: torch.device | str) -> Callable[[Tensor], Tensor]:
    """Moves a probe tensor to the layer's device, and a floating one to its parameters' dtype."""
    first = next(itertools.chain(layer.parameters(), layer.buffers()), None)
    target = first.device if first is not None and torch.device(device).type != "meta" else torch.device(device)
    floating = next((p.dtype for p in layer.parameters() if p.dtype.is_floating_point), torch.float32)

    def place(tensor: Tensor) -> Tensor:
        return tensor.to(target, floating if tensor.dtype.is_floating_point else tensor.dtype)

    return place


def _meta_state(layer: nn.Module) -> dict[str, Tensor]:
    named: Iterator[tuple[str, Tensor]] = itertools.chain(layer.named_parameters(), layer.named_buffers())
    return {name: torch.empty_like(t, device="meta") for name, t in named}


def run_on_meta(layer: Layer[Any, Any], call: ProbeCall) -> object:
    """``layer(*call.args)`` with every parameter and buffer swapped for a meta tensor: shapes, no FLOPs."""
    with torch.no_grad():
        return functional_call(layer, _meta_state(layer), call.args, call.kwargs, tie_weights=True, strict=False)


_META = re.compile(r"\bmeta\b", re.IGNORECASE)


def is_meta_limitation(error: BaseException) -> bool:
    """An error of the meta device itself (an op with no meta kernel, a tensor left on the CPU)."""
    return any(
        isinstance(e, NotImplementedError) or (e is not None and _META.search(str(e)) is not None)
        for e in (error, error.__cause__)
    )


def signature_of(fn: Callable[..., Any]) -> CallSignature:
    """The checked signature of a `typedlm.checked` function."""
    return typing.cast(CallSignature, fn.__typedlm_checks__._typedlm_signature)  # type: ignore[attr-defined]  # set by checked()
