"""TorchDynamo and the checks: which frames run outside the graph, and the slow path run eagerly.

Under ``torch.compile`` the outermost checked call runs outside the graph (dynamo skips its frame, so a
wrong input still raises `ShapeError`); calls that dynamo inlines run their checks while it traces them
(once per compiled shape), leaving no checks in the compiled graph; a check failing there calls a function
dynamo runs as it is (`run_in_graph`). TorchDynamo itself is not imported here (importing it costs about a
second): frames and functions are registered with it when a program first imports it (``import typedlm``
stays about 0.1 s over ``import torch``; ``benchmarks/import_time.py``).
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
_PACKAGE = "torch._dynamo"
_outside_dynamo: list[CodeType] = []
_in_graph: list[Callable[..., Any]] = []
_dynamo_ready = [_PACKAGE in sys.modules]
"""Whether TorchDynamo is loaded in full, so that what is registered from now on goes to it at once."""

P = ParamSpec("P")
R = TypeVar("R")

is_compiling = torch.compiler.is_compiling


def dynamo_loaded() -> bool:
    """Whether TorchDynamo has been imported (before that, nothing can be compiling)."""
    return _DYNAMO in sys.modules


def run_outside_dynamo(fn: Callable[..., Any]) -> None:
    """Make TorchDynamo run ``fn``'s frame eagerly (its callees are still compiled)."""
    _outside_dynamo.append(fn.__code__)
    if _dynamo_ready[0]:
        _register_with_dynamo()


def run_in_graph(fn: Callable[..., Any]) -> None:
    """Make TorchDynamo put a call of ``fn`` in its graph as it is (``torch.compiler.allow_in_graph``): it
    runs ``fn`` on its fake tensors while tracing, where an exception ``fn`` raises is a real one."""
    _in_graph.append(fn)
    if _dynamo_ready[0]:
        _register_with_dynamo()


def _register_with_dynamo() -> None:
    try:
        from torch._dynamo.eval_frame import skip_code
    except ImportError:  # a torch without dynamo's frame strategies: checks still run, eagerly
        return
    for code in _outside_dynamo:
        skip_code(code)
    for fn in _in_graph:
        torch.compiler.allow_in_graph(fn)


class _OnDynamoImport(importlib.abc.MetaPathFinder):
    """Runs `_register_with_dynamo` right after the ``torch._dynamo`` package is first imported (all of it:
    ``allow_in_graph`` is defined after ``eval_frame`` is loaded)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != _PACKAGE:
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
                _dynamo_ready[0] = True
                _register_with_dynamo()

            def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...: the real loader's
                return getattr(loader, name)

        spec.loader = _Then()
        return spec


if not _dynamo_ready[0]:
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
