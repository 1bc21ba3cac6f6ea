"""Runtime shape checks: the mode switch, call signatures, and the wrappers that enforce them.

Modes (``TYPEDLM_CHECKS`` at import — a malformed one is refused when a layer is built, see
`check_mode_variable` —, `set_mode` or ``with checks.mode(...)`` later):

- ``full`` (default): every layer's forward, every loss and public function is checked.
- ``boundary``: model entry/exit (classes declared ``boundary=True``) and losses only.
- ``off``: layer classes keep their own ``forward``; nothing is wrapped.

A check depends only on shapes, dtypes, non-tensor argument values and the config, so each layer
remembers the call signatures that passed and skips the check for them: the steady-state cost is one
tuple build and one set lookup per call. The slow path runs typedlm's dimension binding (config-scoped
dims against the config) and then beartype + jaxtyping on every annotated argument.

Under ``torch.compile`` the outermost checked call runs outside the graph (dynamo skips its frame, so a
wrong input still raises `ShapeError`); calls that dynamo inlines run their checks while it traces them
(once per compiled shape), leaving no checks in the compiled graph. TorchDynamo itself is not imported
here: those frames are registered with it when a program first imports it (``import typedlm`` stays
about 0.3 s over ``import torch``; ``benchmarks/import_time.py``).
"""

import contextlib
import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from types import CodeType, ModuleType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

import torch
from beartype.door import die_if_unbearable
from beartype.roar import BeartypeException
from jaxtyping import jaxtyped
from torch import Tensor

from typedlm.dims import Bindings, DimEnv, TensorSpec, match_tensor, specs_of
from typedlm.errors import ConfigError, ShapeError
from typedlm.torch_errors import is_torch_shape_error, shape_error_from, torch_error_message

Mode = Literal["full", "boundary", "off"]
MODES: tuple[Mode, ...] = ("full", "boundary", "off")
_PASSED_LIMIT = 4096
"""Signatures remembered per layer or function before the memory is cleared (generation varies seq)."""


def _parse_mode(value: str, source: str) -> Mode:
    cleaned = value.strip().lower()
    for known in MODES:
        if cleaned == known:
            return known
    raise ConfigError(f"{source}={value!r}: must be one of {', '.join(MODES)}")


def _mode_from_environment() -> tuple[Mode, ConfigError | None]:
    """``TYPEDLM_CHECKS`` (default full); a malformed value gives full mode plus the error to raise."""
    try:
        return _parse_mode(os.environ.get("TYPEDLM_CHECKS", "full") or "full", "TYPEDLM_CHECKS"), None
    except ConfigError as error:
        return "full", error


_mode, _variable_error = _mode_from_environment()


def check_mode_variable() -> None:
    """Raise the ConfigError for a malformed ``TYPEDLM_CHECKS``. Not raised at import (a command line
    could not report it in one line then): every `typedlm.Layer` raises it when built, and the
    command lines before any work."""
    if _variable_error is not None:
        raise _variable_error


def current_mode() -> Mode:
    """The checking mode in force now."""
    return _mode


def set_mode(new_mode: Mode) -> None:
    """Switch checking mode for every layer class and checked function, from now on."""
    global _mode
    _mode = _parse_mode(new_mode, "checks.set_mode(mode)")
    for entry in _installed:
        entry.apply()


@contextlib.contextmanager
def mode(new_mode: Mode) -> Iterator[None]:
    """``with checks.mode("off"): ...`` runs the block in ``new_mode`` and restores the previous mode."""
    previous = _mode
    set_mode(new_mode)
    try:
        yield
    finally:
        set_mode(previous)


# --- call signatures -------------------------------------------------------------------------------

_EMPTY: Any = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a checked callable: its annotation and, if it is a tensor, its shape specs."""

    name: str
    hint: object
    specs: tuple[TensorSpec, ...]
    default: object
    keyword_only: bool = False
    positional_only: bool = False
    optional: bool = False
    """Its annotation allows None (``Bool[Tensor, "batch seq"] | None``): a None passes unchecked."""


@dataclasses.dataclass(frozen=True)
class CallSignature:
    """What a checked callable takes and gives, read from its jaxtyping annotations."""

    params: tuple[Param, ...]
    result: tuple[TensorSpec, ...]
    result_hint: object

    @classmethod
    def of(cls, fn: Callable[..., Any], *, method: bool) -> "CallSignature":
        """Read ``fn``'s annotations (``method``: skip ``self``)."""
        hints = typing.get_type_hints(fn, include_extras=True)
        parameters = list(inspect.signature(fn).parameters.values())[1 if method else 0 :]
        params = tuple(
            Param(
                p.name,
                hints.get(p.name, _EMPTY),
                specs_of(hints.get(p.name)),
                p.default,
                keyword_only=p.kind == p.KEYWORD_ONLY,
                positional_only=p.kind == p.POSITIONAL_ONLY,
                optional=_allows_none(hints.get(p.name, _EMPTY)),
            )
            for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        result_hint = hints.get("return", _EMPTY)
        return cls(params, specs_of(result_hint), result_hint)

    def with_io(self, inputs: tuple[TensorSpec, ...], result: tuple[TensorSpec, ...]) -> "CallSignature":
        """The same parameters with the first one's specs and the result's replaced (for composites)."""
        first, *rest = self.params
        return CallSignature((dataclasses.replace(first, specs=inputs), *rest), result, self.result_hint)

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.params[0].specs if self.params else ()


def _allows_none(hint: object) -> bool:
    """Whether ``hint`` is a Union with None in it (``X | None``, ``Optional[X]``)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _match_any(
    specs: tuple[TensorSpec, ...], value: Tensor, arg: str, where: str, env: DimEnv, bindings: Bindings
) -> None:
    """Match ``value`` against one of ``specs`` (a Union); report the alternative of the same rank."""
    if len(specs) == 1:
        match_tensor(specs[0], value, arg, where, env, bindings)
        return
    errors: list[ShapeError] = []
    for spec in specs:
        trial = dict(bindings)
        try:
            match_tensor(spec, value, arg, where, env, trial)
        except ShapeError as error:
            errors.append(error)
            continue
        bindings.update(trial)
        return
    same_rank = [e for e, s in zip(errors, specs, strict=True) if len(s.dims) == value.dim()]
    raise (same_rank or errors)[0]


def _hint_text(hint: object) -> str:
    return getattr(hint, "__name__", None) or repr(hint).replace("typing.", "")


def check_arguments(
    sig: CallSignature, where: str, env: DimEnv, args: tuple[Any, ...], kwargs: dict[str, Any], *, eager: bool
) -> Bindings:
    """Check every annotated argument; return the free dims they bound. ``eager`` adds beartype checks."""
    bindings: Bindings = {}
    for index, param in enumerate(sig.params):
        if index < len(args):
            value = args[index]
        elif param.name in kwargs:
            value = kwargs[param.name]
        elif param.default is not _EMPTY:
            value = param.default
        else:
            continue  # Python itself reports the missing argument when the call runs
        if param.specs:
            if value is None and param.optional:
                continue
            if not isinstance(value, Tensor):
                raise ShapeError(
                    f"{where}: {param.name} expected a tensor {param.specs[0].quoted}, got {type(value).__name__}"
                )
            _match_any(param.specs, value, param.name, where, env, bindings)
    if eager:
        _beartype_check(sig, where, args, kwargs)
    return bindings


def check_result(
    sig: CallSignature,
    where: str,
    env: DimEnv,
    value: object,
    bindings: Bindings,
    *,
    eager: bool,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Check a return value against the declared result, using the dims the arguments bound.

    ``eager`` adds beartype + jaxtyping, which re-read ``args``/``kwargs`` to bind the result's dims.
    """
    if sig.result:
        if not isinstance(value, Tensor):
            raise ShapeError(f"{where}: returned {type(value).__name__}, expected a tensor {sig.result[0].quoted}")
        _match_any(sig.result, value, "its result", where, env, bindings)
    if eager:
        _beartype_check(sig, where, args, kwargs or {}, result=(value,))


def _beartype_check(
    sig: CallSignature, where: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: tuple[object, ...] = ()
) -> None:
    """beartype + jaxtyping on every annotated argument (and the result), in one jaxtyping dim context.

    Their report becomes a one-line ShapeError.
    """
    checks: list[tuple[str, object, object]] = []
    for index, param in enumerate(sig.params):
        if param.hint is _EMPTY:
            continue
        if index < len(args):
            checks.append((param.name, args[index], param.hint))
        elif param.name in kwargs:
            checks.append((param.name, kwargs[param.name], param.hint))
    if result and sig.result_hint is not _EMPTY:
        checks.append(("its result", result[0], sig.result_hint))
    with jaxtyped("context"):
        for name, value, hint in checks:
            try:
                die_if_unbearable(value, hint)
            except BeartypeException:
                got = f"shape {tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else repr(value)[:80]
                raise ShapeError(f"{where}: {name} expected {_hint_text(hint)}, got {got}") from None


# --- call keys: the memory of signatures that passed -------------------------------------------------


_PLAIN = (int, float, str)


def _call_key(training: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """Training mode, shapes, dtypes and plain values of a call; None if an argument cannot be remembered safely.

    Training mode is part of the key because a forward may take another branch (and give another
    shape) in eval mode.
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], Tensor):  # the common call: one tensor
        return (args[0].shape, args[0].dtype, training)
    key: list[Any] = [training]
    for value in args:
        if not _add_to_key(key, value):
            return None
    for name, value in kwargs.items():
        key.append(name)
        if not _add_to_key(key, value):
            return None
    return tuple(key)


def _add_to_key(key: list[Any], value: object) -> bool:
    if isinstance(value, Tensor):
        key.append(value.shape)
        key.append(value.dtype)
    elif value is None or isinstance(value, _PLAIN):
        key.append(value)
    else:
        return False
    return True


def _remember(passed: set[tuple[Any, ...]], key: tuple[Any, ...] | None) -> None:
    if key is not None:
        if len(passed) >= _PASSED_LIMIT:
            passed.clear()
        passed.add(key)


# TorchDynamo is imported only when a program compiles (importing it costs about a second): the
# frames below are registered with it by `_register_with_dynamo`, when it is loaded, not before.
_DYNAMO = "torch._dynamo.eval_frame"
_outside_dynamo: list[CodeType] = []


def _run_outside_dynamo(fn: Callable[..., Any]) -> None:
    """Make TorchDynamo run ``fn``'s frame eagerly (its callees are still compiled)."""
    _outside_dynamo.append(fn.__code__)
    if _DYNAMO in sys.modules:
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


if _DYNAMO not in sys.modules:
    sys.meta_path.insert(0, _OnDynamoImport())
_run_outside_dynamo(_call_key)
_run_outside_dynamo(_add_to_key)
_is_compiling = torch.compiler.is_compiling

P = ParamSpec("P")
R = TypeVar("R")


def _eager(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run eagerly even when called while TorchDynamo is active (the slow path of a check);
    ``torch.compiler.disable`` wraps it once dynamo is loaded (before that, nothing can be compiling)."""
    disabled: list[Callable[..., Any]] = []

    def eager(*args: P.args, **kwargs: P.kwargs) -> R:
        if _DYNAMO not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return cast(R, disabled[0](*args, **kwargs))

    _run_outside_dynamo(eager)
    return eager


# --- the checked call, shared by layers and functions ----------------------------------------------


class CheckTarget(Protocol):
    """What a checked call needs from its owner: a `typedlm.Layer`, or a checked function's `FunctionChecks`."""

    _typedlm_signature: CallSignature
    _typedlm_passed: set[tuple[Any, ...]]
    dim_env: DimEnv
    training: bool

    def describe(self) -> str: ...


@_eager
def _check_arguments_of(owner: CheckTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Bindings:
    return check_arguments(owner._typedlm_signature, owner.describe(), owner.dim_env, args, kwargs, eager=True)


@_eager
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
    _remember(owner._typedlm_passed, key)


def _checked_call(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call(owner, *args)`` with its arguments and result checked once per call signature of ``owner``."""

    def checked_forward(owner: CheckTarget, *args: Any, **kwargs: Any) -> Any:
        if _is_compiling():  # inlined by TorchDynamo: check at trace time, leave nothing in the graph
            where, sig, env = owner.describe(), owner._typedlm_signature, owner.dim_env
            bindings = check_arguments(sig, where, env, args, kwargs, eager=False)
            out = call(owner, *args, **kwargs)
            check_result(sig, where, env, out, bindings, eager=False)
            return out
        key = _call_key(owner.training, args, kwargs)
        try:
            if key is not None and key in owner._typedlm_passed:
                return call(owner, *args, **kwargs)
            bindings = _check_arguments_of(owner, args, kwargs)
            out = call(owner, *args, **kwargs)
        except (RuntimeError, IndexError, ValueError) as error:
            if not is_torch_shape_error(error):
                raise
            raise shape_error_from(error, torch_error_message(owner.describe(), error, args, kwargs)) from error
        _check_result_of(owner, out, bindings, key, args, kwargs)
        return out

    _copy_identity(checked_forward, call)
    return checked_forward


def _copy_identity(wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, name, getattr(original, name, None))
    wrapper.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]  # help() shows the real one
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]  # inspect.unwrap finds the source lines


_run_outside_dynamo(_checked_call(lambda owner: None))  # every checked call shares this one code object


# --- layers ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Installed:
    """A layer class whose ``forward`` is swapped between the checked and the original one by mode."""

    cls: type
    original: Callable[..., Any]
    checked: Callable[..., Any]
    boundary: bool

    def apply(self) -> None:
        wanted = _mode == "full" or (_mode == "boundary" and self.boundary)
        type.__setattr__(self.cls, "forward", self.checked if wanted else self.original)


_installed: list[_Installed] = []


def install_layer_checks(cls: type, *, boundary: bool) -> None:
    """Give ``cls`` a checked forward, active in full mode (and in boundary mode if ``boundary``)."""
    original = cls.__dict__["forward"]
    entry = _Installed(cls, original, _checked_call(original), boundary)
    _installed.append(entry)
    entry.apply()


# --- functions -------------------------------------------------------------------------------------


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
    if _mode == "off":
        fn.__typedlm_checks__ = owner  # type: ignore[attr-defined]  # found by `typedlm check` all the same
        return fn
    call = _checked_call(lambda _owner, *args, **kwargs: fn(*args, **kwargs))

    def checked_fn(*args: P.args, **kwargs: P.kwargs) -> R:
        if current_mode() == "off":
            return fn(*args, **kwargs)
        return cast(R, call(owner, *args, **kwargs))

    _copy_identity(checked_fn, fn)
    checked_fn.__typedlm_checks__ = owner  # type: ignore[attr-defined]  # found by `typedlm check`
    _run_outside_dynamo(checked_fn)
    return checked_fn
