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
from traceback import FrameSummary
from typing import Any

import torch

from typedlm.checks.dynamo import dynamo_loaded
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
