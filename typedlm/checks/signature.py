"""Call signatures read from jaxtyping annotations, and the checks of a call's arguments and result.

`check_arguments` and `check_result` bind typedlm's dims (config-scoped ones against the config) and
match every annotated tensor; with ``eager`` they add beartype + jaxtyping on every annotated argument.
"""

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from jaxtyping import jaxtyped
from torch import Tensor

from typedlm.dims import Bindings, DimEnv, TensorSpec, match_tensor, specs_of
from typedlm.errors import ShapeError

_EMPTY: Any = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a checked callable: its annotation and, if it is a tensor, its shape specs."""

    name: str
    hint: object
    specs: tuple[TensorSpec, ...]
    default: object
    keyword_only: bool = False
    positional_only: bool = False
    optional: bool = False
    """Its annotation allows None (``Bool[Tensor, "batch seq"] | None``): a None passes unchecked."""


@dataclasses.dataclass(frozen=True)
class CallSignature:
    """What a checked callable takes and gives, read from its jaxtyping annotations."""

    params: tuple[Param, ...]
    result: tuple[TensorSpec, ...]
    result_hint: object

    @classmethod
    def of(cls, fn: Callable[..., Any], *, method: bool) -> "CallSignature":
        """Read ``fn``'s annotations (``method``: skip ``self``)."""
        hints = typing.get_type_hints(fn, include_extras=True)
        parameters = list(inspect.signature(fn).parameters.values())[1 if method else 0 :]
        params = tuple(
            Param(
                p.name,
                hints.get(p.name, _EMPTY),
                specs_of(hints.get(p.name)),
                p.default,
                keyword_only=p.kind == p.KEYWORD_ONLY,
                positional_only=p.kind == p.POSITIONAL_ONLY,
                optional=_allows_none(hints.get(p.name, _EMPTY)),
            )
            for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        result_hint = hints.get("return", _EMPTY)
        return cls(params, specs_of(result_hint), result_hint)

    def with_io(self, inputs: tuple[TensorSpec, ...], result: tuple[TensorSpec, ...]) -> "CallSignature":
        """The same parameters with the first one's specs and the result's replaced (for composites)."""
        first, *rest = self.params
        return CallSignature((dataclasses.replace(first, specs=inputs), *rest), result, self.result_hint)

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.params[0].specs if self.params else ()


def _allows_none(hint: object) -> bool:
    """Whether ``hint`` is a Union with None in it (``X | None``, ``Optional[X]``)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _match_any(
    specs: tuple[TensorSpec, ...], value: Tensor, arg: str, where: str, env: DimEnv, bindings: Bindings
) -> None:
    """Match ``value`` against one of ``specs`` (a Union); report the alternative of the same rank."""
    if len(specs) == 1:
        match_tensor(specs[0], value, arg, where, env, bindings)
        return
    for spec in specs:  # first, which alternative matches, building no messages
        trial = dict(bindings)
        try:
            match_tensor(spec, value, arg, where, env, trial, quiet=True)
        except ShapeError:
            continue
        bindings.update(trial)
        return
    errors: list[ShapeError] = []  # none: the messages
    for spec in specs:
        try:
            match_tensor(spec, value, arg, where, env, dict(bindings))
        except ShapeError as error:
            errors.append(error)
    same_rank = [e for e, s in zip(errors, specs, strict=True) if len(s.dims) == value.dim()]
    raise (same_rank or errors)[0]


def _hint_text(hint: object) -> str:
    return getattr(hint, "__name__", None) or repr(hint).replace("typing.", "")


def check_arguments(
    sig: CallSignature, where: str, env: DimEnv, args: tuple[Any, ...], kwargs: dict[str, Any], *, eager: bool
) -> Bindings:
    """Check every annotated argument; return the free dims they bound. ``eager`` adds beartype checks."""
    bindings: Bindings = {}
    for index, param in enumerate(sig.params):
        if index < len(args):
            value = args[index]
        elif param.name in kwargs:
            value = kwargs[param.name]
        elif param.default is not _EMPTY:
            value = param.default
        else:
            continue  # Python itself reports the missing argument when the call runs
        if param.specs:
            if value is None and param.optional:
                continue
            if not isinstance(value, Tensor):
                raise ShapeError(
                    f"{where}: {param.name} expected a tensor {param.specs[0].quoted}, got {type(value).__name__}"
                )
            _match_any(param.specs, value, param.name, where, env, bindings)
    if eager:
        _beartype_check(sig, where, args, kwargs)
    return bindings


def check_result(
    sig: CallSignature,
    where: str,
    env: DimEnv,
    value: object,
    bindings: Bindings,
    *,
    eager: bool,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Check a return value against the declared result, using the dims the arguments bound.

    ``eager`` adds beartype + jaxtyping, which re-read ``args``/``kwargs`` to bind the result's dims.
    """
    if sig.result:
        if not isinstance(value, Tensor):
            raise ShapeError(f"{where}: returned {type(value).__name__}, expected a tensor {sig.result[0].quoted}")
        _match_any(sig.result, value, "its result", where, env, bindings)
    if eager:
        _beartype_check(sig, where, args, kwargs or {}, result=(value,))


def _beartype_check(
    sig: CallSignature, where: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: tuple[object, ...] = ()
) -> None:
    """beartype + jaxtyping on every annotated argument (and the result), in one jaxtyping dim context.

    Their report becomes a one-line ShapeError. beartype is imported here, on the first check (it adds
    about 0.2 s to ``import typedlm`` otherwise; ``benchmarks/import_time.py``).
    """
    from beartype.door import die_if_unbearable
    from beartype.roar import BeartypeException

    checks: list[tuple[str, object, object]] = []
    for index, param in enumerate(sig.params):
        if param.hint is _EMPTY:
            continue
        if index < len(args):
            checks.append((param.name, args[index], param.hint))
        elif param.name in kwargs:
            checks.append((param.name, kwargs[param.name], param.hint))
    if result and sig.result_hint is not _EMPTY:
        checks.append(("its result", result[0], sig.result_hint))
    with jaxtyped("context"):
        for name, value, hint in checks:
            try:
                die_if_unbearable(value, hint)
            except BeartypeException:
                got = f"shape {tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else repr(value)[:80]
                raise ShapeError(f"{where}: {name} expected {_hint_text(hint)}, got {got}") from None
