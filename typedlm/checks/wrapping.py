"""The checked call shared by layers and functions, and its installation on layer classes.

A checked call checks its arguments and result once per call signature of its owner (`call_keys`),
tells a torch shape error inside the call as a `ShapeError` (`typedlm.torch_errors`), and, under
``torch.compile``, checks while dynamo traces it (`dynamo`, `compile_errors`).
"""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Protocol

from typedlm.checks.call_keys import call_key, remember
from typedlm.checks.compile_errors import raise_traced_shape_error, shape_error_behind
from typedlm.checks.dynamo import eager, is_compiling, run_outside_dynamo
from typedlm.checks.modes import current_mode, follow_mode
from typedlm.checks.signature import CallSignature, check_arguments, check_result
from typedlm.dims import Bindings, DimEnv
from typedlm.errors import ShapeError
from typedlm.torch_errors import is_torch_shape_error, shape_error_from, torch_error_message


class CheckTarget(Protocol):
    """What a checked call needs from its owner: a `typedlm.Layer`, or a checked function's `FunctionChecks`."""

    _typedlm_signature: CallSignature
    _typedlm_passed: set[tuple[Any, ...]]
    dim_env: DimEnv
    training: bool

    def describe(self) -> str: ...


@eager
def _check_arguments_of(owner: CheckTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Bindings:
    return check_arguments(owner._typedlm_signature, owner.describe(), owner.dim_env, args, kwargs, eager=True)


@eager
def _check_result_of(
    owner: CheckTarget,
    out: object,
    bindings: Bindings,
    key: tuple[Any, ...] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    check_result(
        owner._typedlm_signature, owner.describe(), owner.dim_env, out, bindings, eager=True, args=args, kwargs=kwargs
    )
    remember(owner._typedlm_passed, key)


def checked_call(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call(owner, *args)`` with its arguments and result checked once per call signature of ``owner``."""

    def checked_forward(owner: CheckTarget, *args: Any, **kwargs: Any) -> Any:
        if is_compiling():  # inlined by TorchDynamo: check at trace time, leave nothing in the graph
            where, sig, env = owner.describe(), owner._typedlm_signature, owner.dim_env
            try:
                bindings = check_arguments(sig, where, env, args, kwargs, eager=False)
            except ShapeError:
                raise_traced_shape_error(owner, None, args, kwargs)
                raise
            out = call(owner, *args, **kwargs)
            try:
                check_result(sig, where, env, out, bindings, eager=False)
            except ShapeError:
                raise_traced_shape_error(owner, (out,), args, kwargs)
                raise
            return out
        key = call_key(owner.training, args, kwargs)
        try:
            if key is not None and key in owner._typedlm_passed:
                return call(owner, *args, **kwargs)
            bindings = _check_arguments_of(owner, args, kwargs)
            out = call(owner, *args, **kwargs)
        except (RuntimeError, IndexError, ValueError) as error:
            if is_torch_shape_error(error):
                raise shape_error_from(error, torch_error_message(owner.describe(), error, args, kwargs)) from error
            shape_error = shape_error_behind(error, call, owner, args, kwargs)
            if shape_error is None:
                raise
            raise shape_error from None
        _check_result_of(owner, out, bindings, key, args, kwargs)
        return out

    copy_identity(checked_forward, call)
    return checked_forward


def copy_identity(wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    """Give ``wrapper`` the name, docstring and signature of ``original`` (for help() and tracebacks)."""
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, name, getattr(original, name, None))
    wrapper.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]  # help() shows the real one
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]  # inspect.unwrap finds the source lines


run_outside_dynamo(checked_call(lambda owner: None))  # every checked call shares this one code object


@dataclasses.dataclass
class _Installed:
    """A layer class whose ``forward`` is swapped between the checked and the original one by mode."""

    cls: type
    original: Callable[..., Any]
    checked: Callable[..., Any]
    boundary: bool

    def apply(self) -> None:
        mode = current_mode()
        wanted = mode == "full" or (mode == "boundary" and self.boundary)
        type.__setattr__(self.cls, "forward", self.checked if wanted else self.original)


def install_layer_checks(cls: type, *, boundary: bool) -> None:
    """Give ``cls`` a checked forward, active in full mode (and in boundary mode if ``boundary``)."""
    original = cls.__dict__["forward"]
    follow_mode(_Installed(cls, original, checked_call(original), boundary))
