"""A torch error inside a checked forward, told as a `ShapeError`: the layer, the user's line, the shapes.

Torch reports a shape mismatch deep inside an op (``mat1 and mat2 shapes cannot be multiplied
(14x18 and 28x37)``) without saying which layer or which line of the user's code made the call.
`torch_error_message` adds both, and the shapes of the call's tensor arguments.
"""

import dis
import importlib.util
import linecache
import re
import sysconfig
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import jaxtyping
import torch
from torch import Tensor

from typedlm.errors import ShapeError

_BEARTYPE = importlib.util.find_spec("beartype")  # found, not imported: the checks import it on first use
_LIBRARY_DIRS = tuple(
    str(Path(file).parent.resolve()) + "/"
    for file in (torch.__file__, jaxtyping.__file__, _BEARTYPE.origin if _BEARTYPE else None, __file__)
    if file is not None
)
"""torch, jaxtyping, beartype and typedlm itself: a frame there is never where the user's bug is."""
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve()) + "/"


class Location(NamedTuple):
    """A line of code: its file, its number and its text (stripped)."""

    path: str
    line: int
    code: str


def _is_user_file(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    resolved = str(Path(filename).resolve())
    if resolved.startswith(_LIBRARY_DIRS):
        return False
    return not resolved.startswith(_STDLIB) and "site-packages" not in resolved


def user_location(tb: TracebackType | None) -> Location | None:
    """The innermost frame of ``tb`` outside torch, jaxtyping, beartype, typedlm and the standard library:
    the line of the user's code that made the failing call."""
    found = None
    for frame, line in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if _is_user_file(filename):
            found = Location(filename, line, linecache.getline(filename, line).strip())
    return found


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, as mypy prints paths."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


_SHAPE_WORDS = re.compile(
    r"\b(sizes?|shapes?|dimensions?|dim|mat[12]|broadcast\w*|out of bounds|rank|reduction dim)\b", re.IGNORECASE
)
_CONVERTED = (RuntimeError, IndexError, ValueError)


def is_torch_shape_error(error: BaseException) -> bool:
    """Whether ``error`` is torch refusing the shapes of an op's arguments.

    A plain RuntimeError, IndexError or ValueError whose message speaks of sizes, shapes or dims, not
    raised by a ``raise`` statement of the user's. Out-of-memory, a missing kernel, a compiler error, a
    device mismatch, an autograd error and any subclass are left as they are.
    """
    return type(error) in _CONVERTED and bool(_SHAPE_WORDS.search(str(error))) and not _raised_by_user(error)


def _raised_by_user(error: BaseException) -> bool:
    """Raised by a ``raise`` statement in a file outside the libraries (the user's own rule)."""
    frames = list(traceback.walk_tb(error.__traceback__))
    if not frames:
        return False
    frame, _ = frames[-1]
    if not _is_user_file(frame.f_code.co_filename):
        return False
    instruction = frame.f_code.co_code[frame.f_lasti] if 0 <= frame.f_lasti < len(frame.f_code.co_code) else -1
    return dis.opname[instruction].startswith(("RAISE", "RERAISE")) if instruction >= 0 else False


def _shape_error_class(base: type[BaseException]) -> type[ShapeError]:
    """A ShapeError that is also a ``base``, so ``except RuntimeError`` around a model call still works."""
    return type("ShapeError", (ShapeError, base), {"__module__": "typedlm.errors", "__doc__": ShapeError.__doc__})


_SHAPE_ERRORS: dict[type[BaseException], type[ShapeError]] = {base: _shape_error_class(base) for base in _CONVERTED}


def shape_error_from(error: BaseException, message: str) -> ShapeError:
    """A ShapeError with ``message`` that is also of ``error``'s own class (RuntimeError, ...)."""
    return _SHAPE_ERRORS.get(type(error), ShapeError)(message)


def _shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    named = [(f"#{i}", v) for i, v in enumerate(args)] + list(kwargs.items())
    parts = [f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for _, v in named if isinstance(v, Tensor)]
    return ", ".join(parts)


def torch_error_message(where: str, error: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """One paragraph: the layer, torch's first line, the user's line that called the op, the input shapes."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    location = user_location(error.__traceback__)
    at = f" at {display_path(location.path)}:{location.line} `{location.code}`" if location else ""
    shapes = _shapes(args, kwargs)
    called = f" (called with {shapes})" if shapes else ""
    return f"{where}: torch {type(error).__name__}{at}{called}: {first}"
