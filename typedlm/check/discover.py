"""Import what `typedlm check` is given and find what it checks in it.

A target is a path (a ``.py`` file, or a directory walked for them) or a dotted module name. In each
module it finds the `Layer` subclasses defined there, the module-level `Layer` instances, the
zero-argument functions annotated to return a `Layer` (model factories) and the functions decorated
with `typedlm.checked`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NoReturn

from typedlm.check.report import Problem
from typedlm.checks import FunctionChecks
from typedlm.layer import Layer, declared_io
from typedlm.torch_errors import user_location

Kind = Literal["layer class", "model", "factory", "function"]


@dataclass(frozen=True)
class Target:
    """One thing to check: a layer class, a model instance, a model factory or a checked function."""

    kind: Kind
    name: str
    path: str
    line: int
    obj: Any


@dataclass(frozen=True)
class Loaded:
    """The modules imported, and the problems met while importing."""

    modules: list[ModuleType]
    problems: list[Problem]


def _package_root(file: Path) -> tuple[Path, str]:
    """The directory to put on ``sys.path`` for ``file``, and ``file``'s dotted module name from there."""
    parts = [file.stem]
    folder = file.parent
    while (folder / "__init__.py").exists():
        parts.append(folder.name)
        folder = folder.parent
    names = [p for p in reversed(parts) if p != "__init__"]
    return folder, ".".join(names)


_NEVER_WALKED = frozenset({"__pycache__", "site-packages", "node_modules", "build", "dist", "venv", "env"})
"""Folders a directory walk skips (with hidden ones and virtual environments): installed or built code."""


def _files_under(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if not (d.startswith(".") or d in _NEVER_WALKED or (Path(root, d) / "pyvenv.cfg").exists())
        )
        yield from (Path(root, f) for f in sorted(files) if f.endswith(".py") and f != "__main__.py")


def _module_names(target: str, excluded: Callable[[str], bool]) -> Iterator[tuple[str, str | None]]:
    """``(module name, file)`` pairs for one command-line target (a path, or a dotted module name)."""
    path = Path(target)
    if path.exists():
        files = [path] if path.is_file() else list(_files_under(path))
        for file in files:
            if file is not path and excluded(file.resolve().as_posix()):
                continue  # as with mypy, exclude applies to what a directory walk finds, not to a named file
            root, name = _package_root(file.resolve())
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            yield name, str(file)
        return
    yield target, None
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return  # the import of the name itself reports it
    if spec is not None and spec.submodule_search_locations:
        for info in pkgutil.walk_packages(spec.submodule_search_locations, prefix=f"{target}."):
            if not info.name.endswith(".__main__"):
                yield info.name, None


def load(targets: Sequence[str], exclude: Sequence[str] = ()) -> Loaded:
    """Import every module the targets name; an import that fails is an ``[import]`` problem."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    patterns = [re.compile(p) for p in exclude]

    def excluded(posix: str) -> bool:
        shown = Path(posix)
        relative = shown.relative_to(Path.cwd()).as_posix() if shown.is_relative_to(Path.cwd()) else posix
        return any(p.search(relative) for p in patterns)

    modules: list[ModuleType] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str | None]] = set()
    for target in targets:
        path = Path(target)
        if not path.exists() and not re.fullmatch(r"[\w.]+", target):
            problems.append(Problem(target, 0, f"no such file, directory or module: {target}", "import"))
            continue
        if path.exists() and not path.is_dir() and (not path.is_file() or path.suffix != ".py"):
            kind = "a Python file (*.py)" if path.is_file() else "a regular file or directory (a device or pipe?)"
            problems.append(Problem(target, 0, f"{target} is not {kind}", "import"))
            continue
        for name, file in _module_names(target, excluded):
            if (name, file) in seen:
                continue
            seen.add((name, file))
            try:
                modules.append(_import(name, file))
            except KeyboardInterrupt:
                raise
            except BaseException as error:
                problems.append(_import_problem(name, file, error))
    return Loaded(modules, problems)


def _import(name: str, file: str | None) -> ModuleType:
    """Import ``name``, as ``file`` when given: with ``sys.argv`` set as if the file ran, and under a
    name of its own when another module already owns that name (two folders' ``model.py``)."""
    saved, exit_now = sys.argv, os._exit
    sys.argv = [file or name]
    os._exit = _refuse_exit  # a module that ends the process at import would end the check with it
    try:
        module = importlib.import_module(name)
        if file is None or Path(getattr(module, "__file__", "") or "").resolve() == Path(file).resolve():
            return module
        spec = importlib.util.spec_from_file_location(f"typedlm_check_{len(sys.modules)}_{Path(file).stem}", file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.argv, os._exit = saved, exit_now


def _refuse_exit(status: int) -> NoReturn:
    raise SystemExit(f"os._exit({status}) called at import")


def _import_problem(name: str, file: str | None, error: BaseException) -> Problem:
    if isinstance(error, ModuleNotFoundError) and error.name and f"{name}.".startswith(f"{error.name}."):
        return Problem(file or name, 0, f"no such file, directory or module: {name}", "import")
    location = user_location(error.__traceback__)
    path, line = (location.path, location.line) if location else (file or name, 1)
    if isinstance(error, SyntaxError):
        path, line = error.filename or path, error.lineno or line
    return Problem(path, line, f"cannot import {name}: {type(error).__name__}: {error}", "import")


def _source_line(obj: Any) -> tuple[str, int]:
    try:
        lines = inspect.getsourcelines(inspect.unwrap(obj))
        return inspect.getsourcefile(inspect.unwrap(obj)) or "?", lines[1]
    except (OSError, TypeError):
        return getattr(inspect.getmodule(obj), "__file__", None) or "?", 1


def _assignment_lines(module: ModuleType) -> dict[str, int]:
    """Module-level ``name = ...`` / ``name: T = ...`` lines of the module's source, by name."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return {}
    lines: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                lines.setdefault(target.id, node.lineno)
    return lines


def _returns_layer(fn: Callable[..., Any]) -> bool:
    """A zero-argument function annotated to return a `Layer` (a class or ``Layer[In, Out]``)."""
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError, ValueError):
        return False
    if any(
        p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()
    ):
        return False
    returned = hints.get("return")
    origin = typing.get_origin(returned) or returned
    return isinstance(origin, type) and issubclass(origin, Layer)


def is_layer_class(obj: object) -> bool:
    """A concrete layer class: a `Layer` subclass whose ``Layer[In, Out]`` names its shapes."""
    return isinstance(obj, type) and issubclass(obj, Layer) and declared_io(obj) is not None


def find_targets(modules: Sequence[ModuleType]) -> list[Target]:
    """Every layer class, model instance, model factory and checked function defined in ``modules``."""
    found: list[Target] = []
    seen_instances: set[int] = set()
    for module in modules:
        assigned = _assignment_lines(module)
        file = getattr(module, "__file__", None) or module.__name__
        for name, obj in list(vars(module).items()):
            if isinstance(obj, Layer):
                if id(obj) not in seen_instances:
                    seen_instances.add(id(obj))
                    found.append(Target("model", f"{module.__name__}.{name}", file, assigned.get(name, 1), obj))
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere: checked where it is defined
            checks = getattr(obj, "__typedlm_checks__", None)
            if isinstance(checks, FunctionChecks):
                found.append(Target("function", obj.__qualname__, *_source_line(obj), obj))
            elif is_layer_class(obj):
                found.append(Target("layer class", obj.__qualname__, *_source_line(obj), obj))
            elif inspect.isfunction(obj) and _returns_layer(obj):
                found.append(Target("factory", f"{obj.__qualname__}()", *_source_line(obj), obj))
    return found
