"""`TracedShapeError`: a check's `ShapeError` met while TorchDynamo traces, as an error dynamo lets through.

TorchDynamo passes a compilation failure of its own kind, ``Unsupported``, up to the caller of the
compiled function unchanged (with ``fullgraph=True``; without it, as a graph break, after which the call
runs eagerly). A `TracedShapeError` is both that and a `ShapeError`: ``except typedlm.ShapeError`` catches
it and its message is the eager one. This module imports TorchDynamo, so it is imported only once
TorchDynamo is loaded (`typedlm.checks.compile_errors`).
"""

import traceback
from pathlib import Path

from torch._dynamo.exc import Unsupported

from typedlm.errors import ShapeError

_TYPEDLM = str(Path(__file__).resolve().parent.parent) + "/"


class TracedShapeError(ShapeError, Unsupported):
    """A check failed while TorchDynamo traced the user's compiled function; ``str()`` is the eager message,
    and a note gives the user's lines dynamo was tracing (a compiled call has no Python frames of its own)."""

    def __init__(self, message: str) -> None:
        Unsupported.__init__(self, message, gb_type="typedlm ShapeError")
        self.message = message
        users = [frame for frame in self.real_stack if not str(Path(frame.filename).resolve()).startswith(_TYPEDLM)]
        if users:
            self.add_note("while torch.compile traced:\n" + "".join(traceback.format_list(users)).rstrip())

    def __str__(self) -> str:
        return self.message  # dynamo appends its "from user code" stack to args[0]; the message stays the check's
