"""`checked`: a function's jaxtyping-annotated arguments and result checked like a layer's.

A function has no config, so its dims are bound per call, like a stateless layer's. The names its
annotations may use are those of a stateless layer: ``batch`` and ``seq``; every name an argument's
annotation binds (a plain name, ``#name`` or ``*name``); the names it declares per call with
``@checked(free_dims=("k",))``; and any ``_``-prefixed name (left unchecked). Any other name — one used
only in the result or only inside an expression such as ``sqe+1`` — could never be checked, so it is a
ShapeError when the function is decorated, listing the known names.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast, overload

from typedlm.checks.compile_errors import register_owner
from typedlm.checks.dynamo import run_outside_dynamo
from typedlm.checks.modes import current_mode
from typedlm.checks.signature import CallSignature
from typedlm.checks.wrapping import checked_call, copy_identity
from typedlm.dims import DimEnv, dim_names
from typedlm.errors import ConfigError, ShapeError
from typedlm.shapes import FREE_DIMS

P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass
class FunctionChecks:
    """A checked function's signature and memory of passed calls; its dims are bound per call.

    `typedlm check` finds it as ``wrapper.__typedlm_checks__``.
    """

    _typedlm_signature: CallSignature
    name: str
    dim_env: DimEnv = dataclasses.field(default_factory=DimEnv)
    _typedlm_passed: set[tuple[Any, ...]] = dataclasses.field(default_factory=set)
    training: bool = False

    def describe(self) -> str:
        return self.name


@overload
def checked(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def checked(*, free_dims: Sequence[str] = ()) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def checked(
    fn: Callable[P, R] | None = None, /, *, free_dims: Sequence[str] = ()
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Check ``fn``'s jaxtyping-annotated arguments and result in full and boundary modes.

    Dims are bound per call (a function has no config); ``free_dims`` declares names bound per call that
    no argument binds (see the module docstring for the names an annotation may use). With
    ``TYPEDLM_CHECKS=off`` at import the function is returned unwrapped; a later switch to off costs one
    global read per call. ``@checked`` and ``@checked(free_dims=(...))`` both work.
    """
    if isinstance(free_dims, str) or not all(isinstance(name, str) and name.isidentifier() for name in free_dims):
        raise ConfigError(f"checked(free_dims={free_dims!r}): must be a tuple of dim names, e.g. ('k',)")
    if fn is None:
        return lambda function: _checked(function, tuple(free_dims))
    return _checked(fn, tuple(free_dims))


def _checked(fn: Callable[P, R], free_dims: tuple[str, ...]) -> Callable[P, R]:
    signature = CallSignature.of(fn, method=False)
    _check_dim_names(signature, fn.__qualname__, free_dims)
    owner = FunctionChecks(signature, fn.__qualname__)
    register_owner(owner)
    if current_mode() == "off":
        fn.__typedlm_checks__ = owner  # type: ignore[attr-defined]  # found by `typedlm check` all the same
        return fn
    call = checked_call(lambda _owner, *args, **kwargs: fn(*args, **kwargs))

    def checked_fn(*args: P.args, **kwargs: P.kwargs) -> R:
        if current_mode() == "off":
            return fn(*args, **kwargs)
        return cast(R, call(owner, *args, **kwargs))

    copy_identity(checked_fn, fn)
    checked_fn.__typedlm_checks__ = owner  # type: ignore[attr-defined]  # found by `typedlm check`
    run_outside_dynamo(checked_fn)
    return checked_fn


def _check_dim_names(sig: CallSignature, name: str, free_dims: tuple[str, ...]) -> None:
    """Refuse a dim name in the annotations that nothing binds (the rule is in the module docstring)."""
    bound = [
        token.lstrip("#*")
        for param in sig.params
        for spec in param.specs
        for token in spec.dims
        if token.lstrip("#*").isidentifier()
    ]
    known = list(dict.fromkeys([*FREE_DIMS, *free_dims, *bound]))
    annotated = [(f"argument {p.name}", spec) for p in sig.params for spec in p.specs]
    for role, spec in [*annotated, *(("its result", spec) for spec in sig.result)]:
        for dim, _ in dim_names(spec):
            if dim in known or dim.startswith("_"):
                continue
            raise ShapeError(
                f"checked function {name}: {role} is annotated {spec.quoted}: unknown dim {dim!r}; known: "
                f"{', '.join(known)} (per call: a function has no config). Use it in an argument's annotation, "
                f"declare it with @typedlm.checked(free_dims=({dim!r},)), or write _{dim} to leave it unchecked"
            )
