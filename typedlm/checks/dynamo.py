"""TorchDynamo and the checks: which frames run outside the graph, and the slow path run eagerly.

Under ``torch.compile`` the outermost checked call runs outside the graph (dynamo skips its frame, so a
wrong input still raises `ShapeError`); calls that dynamo inlines run their checks while it traces them
(once per compiled shape), leaving no checks in the compiled graph. TorchDynamo itself is not imported
here (importing it costs about a second): the frames are registered with it when a program first
imports it (``import typedlm`` stays about 0.1 s over ``import torch``; ``benchmarks/import_time.py``).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import CodeType, ModuleType
from typing import Any, ParamSpec, TypeVar, cast

import torch

_DYNAMO = "torch._dynamo.eval_frame"
_outside_dynamo: list[CodeType] = []

P = ParamSpec("P")
R = TypeVar("R")

is_compiling = torch.compiler.is_compiling


def dynamo_loaded() -> bool:
    """Whether TorchDynamo has been imported (before that, nothing can be compiling)."""
    return _DYNAMO in sys.modules


def run_outside_dynamo(fn: Callable[..., Any]) -> None:
    """Make TorchDynamo run ``fn``'s frame eagerly (its callees are still compiled)."""
    _outside_dynamo.append(fn.__code__)
    if dynamo_loaded():
        _register_with_dynamo()


def _register_with_dynamo() -> None:
    try:
        from torch._dynamo.eval_frame import skip_code
    except ImportError:  # a torch without dynamo's frame strategies: checks still run, eagerly
        return
    for code in _outside_dynamo:
        skip_code(code)


class _OnDynamoImport(importlib.abc.MetaPathFinder):
    """Runs `_register_with_dynamo` right after ``torch._dynamo.eval_frame`` is first imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != _DYNAMO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class _Then(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                _register_with_dynamo()

        spec.loader = _Then()
        return spec


if not dynamo_loaded():
    sys.meta_path.insert(0, _OnDynamoImport())


def eager(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run eagerly even when called while TorchDynamo is active (the slow path of a check);
    ``torch.compiler.disable`` wraps it once dynamo is loaded (before that, nothing can be compiling)."""
    disabled: list[Callable[..., Any]] = []

    def eager(*args: P.args, **kwargs: P.kwargs) -> R:
        if not dynamo_loaded():
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return cast(R, disabled[0](*args, **kwargs))

    run_outside_dynamo(eager)
    return eager
