"""A `ShapeError` met while TorchDynamo compiles a checked call reaches the user as that `ShapeError`.

Inside ``torch.compile(model, fullgraph=True)`` an inner layer's check runs while dynamo traces it, and a
failing check (or a torch shape error met on fake tensors) stops the compilation with one of dynamo's own
errors (``Unsupported``, ``TorchRuntimeError``); with dynamic shapes typedlm's message is lost on the way.
The outermost checked call runs outside dynamo (`typedlm.checks.dynamo`), so it sees that error: it runs
the call again eagerly, the reference, and raises the `ShapeError` of the eager run. Nothing had run yet
(the compilation failed before the graph ran), so the call runs once, as it would without compile.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from typedlm.checks.dynamo import dynamo_loaded
from typedlm.errors import ShapeError

_TYPEDLM = str(Path(__file__).resolve().parent.parent) + "/"


def shape_error_behind(
    error: BaseException, call: Callable[..., Any], owner: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> ShapeError | None:
    """The ShapeError behind dynamo's ``error`` from compiling ``call(owner, *args, **kwargs)``, or None.

    Only an error dynamo met while tracing typedlm's code (a check, or a layer's forward) is looked
    into: the call runs again with dynamo off, and the ShapeError it raises is the answer.
    """
    if not dynamo_loaded() or not _met_in_typedlm(error):
        return None
    try:
        torch.compiler.disable(call, recursive=True)(owner, *args, **kwargs)
    except ShapeError as eager_error:
        return eager_error
    except Exception:  # another error eagerly: dynamo's own report is the better one
        return None
    return None


def _met_in_typedlm(error: BaseException) -> bool:
    """Whether ``error`` is TorchDynamo's and the code it was tracing when it failed lies in typedlm."""
    exc = sys.modules.get("torch._dynamo.exc")
    if exc is None or not isinstance(error, exc.TorchDynamoException):
        return False
    stack = getattr(error, "real_stack", None) or ()
    return any(str(Path(frame.filename).resolve()).startswith(_TYPEDLM) for frame in stack)
