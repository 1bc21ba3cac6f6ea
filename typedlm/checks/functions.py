"""`checked`: a function's jaxtyping-annotated arguments and result checked like a layer's."""

import dataclasses
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from typedlm.checks.compile_errors import register_owner
from typedlm.checks.dynamo import run_outside_dynamo
from typedlm.checks.modes import current_mode
from typedlm.checks.signature import CallSignature
from typedlm.checks.wrapping import checked_call, copy_identity
from typedlm.dims import DimEnv

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


def checked(fn: Callable[P, R]) -> Callable[P, R]:
    """Check ``fn``'s jaxtyping-annotated arguments and result in full and boundary modes.

    Dims are bound per call (a function has no config). With ``TYPEDLM_CHECKS=off`` at import the
    function is returned unwrapped; a later switch to off costs one global read per call.
    """
    owner = FunctionChecks(CallSignature.of(fn, method=False), fn.__qualname__)
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
