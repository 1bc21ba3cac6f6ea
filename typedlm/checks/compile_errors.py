"""A `ShapeError` met while TorchDynamo compiles a checked call reaches the user as that `ShapeError`.

Inside ``torch.compile(model, fullgraph=True)`` an inner layer's check runs while dynamo traces it, and a
failing check (or a torch shape error met on fake tensors) stops the compilation with one of dynamo's own
errors (``Unsupported``, ``TorchRuntimeError``); with dynamic shapes typedlm's message is lost on the way.
The outermost checked call runs outside dynamo (`typedlm.checks.dynamo`), so it sees that error: it runs
the call again eagerly, the reference, and raises the `ShapeError` of the eager run. Nothing had run yet
(the compilation failed before the graph ran), so the call runs once, as it would without compile.

Inside a function of the user's compiled with ``torch.compile(fullgraph=True)`` no typedlm frame runs
outside dynamo, and dynamo reports an exception raised in the code it traces as its own ``Unsupported``.
So a check that fails while traced calls `raise_traced_shape_error`: dynamo puts that call in its graph
as it is (`dynamo.run_in_graph`) and runs it on the fake tensors it traces with; it re-runs the check as
the eager call would (on tensors of the real sizes) and raises a `TracedShapeError`, which leaves
``torch.compile`` as itself (`traced_shape_error`). Nothing is added to the graph of a valid call.
"""

import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from traceback import FrameSummary
from typing import Any, Protocol

import torch
from torch import Tensor

from typedlm.checks.dynamo import dynamo_loaded, run_in_graph
from typedlm.checks.signature import CallSignature, check_arguments, check_result
from typedlm.dims import DimEnv
from typedlm.errors import ShapeError

_CHECK_CODE = (str(Path(__file__).resolve().parent) + "/", str(Path(__file__).resolve().parent.parent / "dims"))
"""typedlm/checks/ and typedlm/dims(.py): where a check runs."""


def shape_error_behind(
    error: BaseException, call: Callable[..., Any], owner: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> ShapeError | None:
    """The ShapeError behind dynamo's ``error`` from compiling ``call(owner, *args, **kwargs)``, or None.

    Only an error dynamo met while tracing a check, or a torch op refusing shapes, is looked into (a
    call is not run twice for dynamo's other refusals): the call runs again with dynamo off, and the
    ShapeError it raises is the answer.
    """
    if not dynamo_loaded() or not _from_a_check_or_an_op(error):
        return None
    try:
        torch.compiler.disable(call, recursive=True)(owner, *args, **kwargs)
    except ShapeError as eager_error:
        return eager_error
    except Exception:  # another error eagerly: dynamo's own report is the better one
        return None
    return None


def _from_a_check_or_an_op(error: BaseException) -> bool:
    """Whether ``error`` is TorchDynamo's and came from a check (the code it was tracing when it failed is
    typedlm's checks) or from a torch op refusing its fake tensors' shapes (the eager run raises there too)."""
    exc = sys.modules.get("torch._dynamo.exc")
    if exc is None or not isinstance(error, exc.TorchDynamoException):
        return False
    if isinstance(error, exc.TorchRuntimeError):
        return True
    stack: list[FrameSummary] = list(getattr(error, "real_stack", None) or ())
    return bool(stack) and str(Path(stack[-1].filename).resolve()).startswith(_CHECK_CODE)


class _Owner(Protocol):
    """What re-running a check needs from a `wrapping.CheckTarget`."""

    _typedlm_signature: CallSignature
    dim_env: DimEnv

    def describe(self) -> str: ...


_owners: "weakref.WeakValueDictionary[int, _Owner]" = weakref.WeakValueDictionary()
"""Every check owner by ``id()``: the call dynamo puts in its graph can pass ints and tensors, not the owner."""


def register_owner(owner: _Owner) -> None:
    """Let a check of ``owner`` that fails while TorchDynamo traces it be re-run (a layer or a `checked` function)."""
    _owners[id(owner)] = owner


def raise_traced_shape_error(
    owner: _Owner, result: tuple[object] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """(Traced by TorchDynamo, after a check of ``owner`` failed.) Raise that check's eager `ShapeError`.

    ``result`` is ``(out,)`` when the result's check failed, None when an argument's did. Returns, for the
    caller to raise the traced error, when an argument cannot go in a graph or the eager check passes.
    """
    values = (*(result or ()), *args, *kwargs.values())
    if all(value is None or isinstance(value, (Tensor, int, float, bool, str)) for value in values):
        _eager_shape_error(id(owner), result is not None, *(result or ()), *args, **kwargs)


def _eager_shape_error(key: int, with_result: bool, /, *values: Any, **kwargs: Any) -> None:
    """Run by TorchDynamo on its fake tensors: the eager check of owner ``key``'s call, on tensors of the same
    sizes (``values``: the result first if ``with_result``, then the arguments), raised as a `TracedShapeError`."""
    owner = _owners.get(key)
    if owner is None:
        return
    try:
        from typedlm.checks.traced_shape_error import TracedShapeError
    except ImportError:  # a torch whose dynamo has no Unsupported: dynamo reports the check as it traced it
        return
    args = tuple(_concrete(value) for value in values)
    result, args = (args[:1], args[1:]) if with_result else ((), args)
    kwargs = {name: _concrete(value) for name, value in kwargs.items()}
    sig, where, env = owner._typedlm_signature, owner.describe(), owner.dim_env
    try:
        bindings = check_arguments(sig, where, env, args, kwargs, eager=True)
        if result:
            check_result(sig, where, env, result[0], bindings, eager=True, args=args, kwargs=kwargs)
    except ShapeError as error:
        message = str(error)
    else:
        return
    try:
        traced = TracedShapeError(message)
    except Exception:  # a dynamo whose Unsupported is built otherwise: dynamo reports the check as it traced it
        return
    raise traced


def _concrete(value: object) -> object:
    """``value`` with its sizes as plain ints: a symbolic size becomes the size of the call being traced."""
    if isinstance(value, Tensor):
        return torch.empty([int(size) for size in value.shape], dtype=value.dtype, device="meta")
    if isinstance(value, torch.SymInt):
        return int(value)
    if isinstance(value, torch.SymFloat):
        return float(value)
    if isinstance(value, torch.SymBool):
        return bool(value)
    return value


run_in_graph(_eager_shape_error)
