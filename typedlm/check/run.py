"""`check`: probe every target `discover` found and collect what fails as `Problem`s.

For a layer or model: two shape traces on the meta device with different free sizes (a third and
fourth tell a hard-coded ``batch`` from a hard-coded ``seq``), then the invariants on tiny real tensors.
For a `typedlm.checked` function: two calls with probe tensors of its annotated shapes and, for a loss
over a token model, the next-token-targets invariant.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
import typing
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch

from typedlm import checks, models, nn
from typedlm.check import invariants
from typedlm.check.discover import Target, find_targets, load
from typedlm.check.probe import (
    CannotProbe,
    FreeSizes,
    ProbeCall,
    build_layer,
    dim_sizes,
    free_sizes,
    is_meta_limitation,
    layer_call,
    probe_config,
    probe_tensor,
    run_on_meta,
    signature_of,
)
from typedlm.check.report import Problem, Report
from typedlm.checks import Param
from typedlm.config import CausalConfig
from typedlm.dims import DimEnv, TensorSpec
from typedlm.errors import ConfigError, ShapeError
from typedlm.layer import Layer, declared_io
from typedlm.shapes import literal_dims
from typedlm.torch_errors import is_torch_shape_error, shape_error_from, torch_error_message, user_location

PLAIN_PROBES: dict[object, object] = {int: 3, float: 0.5, bool: False}
"""Values for plain parameters without a default (a count, a rate, a switch)."""

_POSITIONAL_INVARIANTS = (
    ("seq", "causal", invariants.causality),
    ("batch", "batch-mixing", invariants.batch_independence),
)

DEFAULT_MAX_PARAMS = 30_000_000
"""Models with more parameters get the shape traces (on meta) but not the invariants (real compute)."""


class _Checker:
    """Checks targets one by one, appending to one report."""

    def __init__(self, report: Report, max_params: int) -> None:
        self.report = report
        self.max_params = max_params

    # --- reporting ----------------------------------------------------------------------------------

    def problem(
        self, target: Target, message: str, code: str, error: BaseException | None = None, layer: object = None
    ) -> None:
        """Report at the user's line in the error's traceback, else at the layer's forward or the target."""
        location = None
        for e in (error, getattr(error, "__cause__", None)):
            if e is not None:
                location = user_location(e.__traceback__) or location
        fallback = _definition(target, layer) if isinstance(layer, Layer) else (target.path, target.line)
        path, line = (location.path, location.line) if location else fallback
        self.report.add(Problem(path, line, message, code))

    def skipped(self, target: Target, why: str) -> None:
        self.report.add(Problem(target.path, target.line, f"skipped {target.name}: {why}", "skipped", "note"))

    # --- targets ------------------------------------------------------------------------------------

    def check(self, target: Target) -> None:
        try:
            if target.kind == "layer class":
                self.report.layers += 1
                self.check_layer(target, build_layer(target.obj), real=True)
            elif target.kind == "model":
                self.report.models += 1
                self.check_layer(target, target.obj, real=self.small_enough(target, target.obj))
            elif target.kind == "factory":
                self.report.models += 1
                self.check_factory(target)
            else:
                self.report.functions += 1
                self.check_function(target)
        except CannotProbe as why:
            self.skipped(target, str(why))
        except (ShapeError, ConfigError) as error:  # refused while building: a construction check
            self.problem(target, f"{target.name}: {error}", "construction", error)
        except Exception as error:
            self.skipped(target, f"building it at the probe config raised {type(error).__name__}: {error}")

    def small_enough(self, target: Target, model: torch.nn.Module) -> bool:
        count = sum(p.numel() for p in model.parameters())
        if count <= self.max_params:
            return True
        self.skipped(
            target,
            f"invariants not run ({count:,} parameters > --max-params {self.max_params:,}); "
            "shapes traced on meta, and its layer classes are checked at the probe config",
        )
        return False

    def check_factory(self, target: Target) -> None:
        """Build on meta (no memory); a model small enough for the invariants is then built for real."""
        factory = typing.cast(Callable[[], Layer[Any, Any]], target.obj)
        try:
            with torch.device("meta"):
                model = factory()
        except (ShapeError, ConfigError):
            raise
        except Exception:
            model = factory()
        real = self.small_enough(target, model)
        on_meta = any(p.device.type == "meta" for p in model.parameters())
        self.check_layer(target, factory() if real and on_meta else model, real=real)

    # --- layers and models --------------------------------------------------------------------------

    def check_layer(self, target: Target, layer: Layer[Any, Any], *, real: bool) -> None:
        first, second = free_sizes(layer.dim_env)
        failed = self.trace(layer, first)
        if failed is not None:
            self.problem(target, self.shape_message(layer, failed, first), "shape", failed, layer)
            return
        failed = self.trace(layer, second)
        if failed is not None:
            message = self.hard_coded_message(layer, failed, first, second)
            self.problem(target, message, "hard-coded-size", failed, layer)
            return
        if real:
            self.run_invariants(target, layer, first)

    def trace(self, layer: Layer[Any, Any], free: FreeSizes) -> BaseException | None:
        """The error a probe forward raises with these free sizes (on meta, else on the CPU), or None."""
        try:
            run_on_meta(layer, layer_call(layer, free, device="meta"))
            return None
        except CannotProbe:
            raise
        except Exception as error:
            if not is_meta_limitation(error):
                return _as_shape_error(layer.describe(), error)
        try:
            with invariants.running(layer, training=False):
                layer_call(layer, free, device="cpu")(layer)
            return None
        except NotImplementedError as error:
            raise CannotProbe(f"its forward raises NotImplementedError ({error}): an abstract base?") from None
        except Exception as error:
            return _as_shape_error(layer.describe(), error)

    def shape_message(self, layer: Layer[Any, Any], error: BaseException, free: FreeSizes) -> str:
        return f"{_error_text(error)} (probe with {free.text()}, {_config_text(layer.dim_env)})"

    def hard_coded_message(
        self, layer: Layer[Any, Any], error: BaseException, first: FreeSizes, second: FreeSizes
    ) -> str:
        culprits = []
        if self.trace(layer, FreeSizes(second.batch, first.seq)) is not None:
            culprits.append(f"batch={first.batch} but not batch={second.batch}")
        if self.trace(layer, FreeSizes(first.batch, second.seq)) is not None:
            culprits.append(f"seq={first.seq} but not seq={second.seq}")
        works = " or ".join(culprits) or f"{first.text()} but not {second.text()}"
        return f"{layer.describe()} works with {works}: is a size hard-coded? {_error_text(error)}"

    def run_invariants(self, target: Target, layer: Layer[Any, Any], free: FreeSizes) -> None:
        """Causality and batch independence (in eval mode, and in training mode on a layer the checker
        built itself, so dropout or batch statistics are seen too), then cached decoding."""
        call = layer_call(layer, free, device="cpu", seed=3)
        if len(call.args) != 1 or call.kwargs:
            self.skipped(target, "invariants not run: its forward needs more tensors than its input (a mask?)")
            return
        x = call.args[0]
        signature = layer._typedlm_signature
        spec_out = signature.result[0] if signature.result else None
        vocab = dim_sizes(layer.dim_env, free).get("vocab", 2)
        where = _definition(target, layer)
        modes = (False, True) if target.kind in ("layer class", "factory") else (False,)
        with checks.mode("full"):
            with invariants.running(layer, training=False):
                found = _guarded(functools.partial(invariants.non_finite_output, layer, x))
            if found:  # NaN differs from NaN: the other invariants would report nonsense
                self.report.add(Problem(*where, f"{layer.describe()}: {found}", "non-finite"))
                return
            reported: set[str] = set()
            for training, (dim, code, test) in itertools.product(modes, _POSITIONAL_INVARIANTS):
                if code in reported or (code == "causal" and not type(layer).causal):
                    continue
                in_axis, out_axis = _axis(signature.input_specs[0], dim), _axis(spec_out, dim)
                if in_axis is None or out_axis is None:
                    continue
                with invariants.running(layer, training=training):
                    found = _guarded(functools.partial(test, layer, x, in_axis=in_axis, out_axis=out_axis, vocab=vocab))
                if found:
                    mode = " in training mode" * training
                    hint = " (set causal = False on a layer that is meant to see later positions)" * (code == "causal")
                    self.report.add(Problem(*where, f"{layer.describe()}{mode}: {found}{hint}", code))
                    reported.add(code)
            if reported:
                return
            if invariants.decodes_with_cache(layer) and not x.dtype.is_floating_point:
                with invariants.running(layer, training=False):
                    found = _guarded(lambda: invariants.cached_decoding(layer, x))
                if found:
                    self.report.add(Problem(*where, f"{layer.describe()}: {found}", "cache"))

    # --- checked functions --------------------------------------------------------------------------

    def check_function(self, target: Target) -> None:
        fn = target.obj
        sig = signature_of(fn)
        cfg = probe_config()
        env = DimEnv.from_config(cfg)
        first, second = free_sizes(env)
        errors = [self.call_function(fn, sig.params, cfg, env, free) for free in (first, second)]
        if errors[0] is not None:
            self.problem(
                target,
                f"{_named(target.name, errors[0])} (probe with {first.text()}, {_config_text(env)})",
                "shape",
                errors[0],
            )
        elif errors[1] is not None:
            message = (
                f"{target.name} works with {first.text()} but not {second.text()}: is a size hard-coded? "
                f"{_error_text(errors[1])}"
            )
            self.problem(target, message, "hard-coded-size", errors[1])
        else:
            found = self.leak_of(fn, sig.params, cfg, env, first)
            if found:
                self.problem(target, f"{target.name}: {found}", "target-leak")

    def function_call(
        self, params: Sequence[Param], cfg: CausalConfig, env: DimEnv, free: FreeSizes, **given: object
    ) -> ProbeCall:
        """Probe arguments for a checked function (``given`` values for some parameters by name)."""
        generator = torch.Generator().manual_seed(4)
        sizes = dim_sizes(env, free)
        call = ProbeCall((), {})
        for param in params:
            if param.name in given:
                value = given[param.name]
            elif param.specs:
                value = probe_tensor(param.specs[0], sizes, device="cpu", generator=generator)
            elif param.default is not inspect.Parameter.empty:
                continue
            elif param.hint in PLAIN_PROBES:
                value = PLAIN_PROBES[param.hint]
            elif _layer_type(param.hint) is not None:
                value = _stock_model(param.hint, cfg)
            else:
                raise CannotProbe(
                    f"parameter {param.name!r} is not an annotated tensor, a Layer, an int, a float or a bool, "
                    "and has no default"
                )
            if param.positional_only:
                call = ProbeCall((*call.args, value), call.kwargs)
            else:
                call = ProbeCall(call.args, {**call.kwargs, param.name: value})
        return call

    def call_function(
        self, fn: Callable[..., Any], params: Sequence[Param], cfg: CausalConfig, env: DimEnv, free: FreeSizes
    ) -> BaseException | None:
        call = self.function_call(params, cfg, env, free)
        try:
            with checks.mode("full"):
                call(fn)
            return None
        except Exception as error:
            return _as_shape_error(fn.__qualname__, error)

    def leak_of(
        self, fn: Callable[..., Any], params: Sequence[Param], cfg: CausalConfig, env: DimEnv, free: FreeSizes
    ) -> str | None:
        """The next-token-targets invariant, for a function of a token model that returns a scalar."""
        sig = signature_of(fn)
        if not sig.result or sig.result[0].dims != ():
            return None
        token_models = [p for p in params if _reads_token_ids(p.hint)]
        if len(token_models) != 1:
            return None
        name = token_models[0].name

        def loss_of(model: Layer[Any, Any]) -> object:
            with checks.mode("full"):
                return self.function_call(params, cfg, env, free, **{name: model})(fn)

        return _guarded(lambda: invariants.next_token_targets(loss_of, cfg), quiet=True)


# --- helpers ---------------------------------------------------------------------------------------


def _as_shape_error(where: str, error: BaseException) -> BaseException:
    """A torch shape error as the ShapeError a checked call would raise; any other error as it is."""
    if is_torch_shape_error(error):
        return shape_error_from(error, torch_error_message(where, error, (), {})).with_traceback(error.__traceback__)
    return error


def _named(name: str, error: BaseException) -> str:
    """The error's text, beginning with ``name`` (a checked call's own ShapeError already does)."""
    text = _error_text(error)
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


def _error_text(error: BaseException) -> str:
    return str(error) if isinstance(error, ShapeError) else f"{type(error).__name__}: {error}"


def _guarded(run: Callable[[], str | None], *, quiet: bool = False) -> str | None:
    """Run an invariant; an error it raises is itself the finding (unless ``quiet``)."""
    try:
        return run()
    except Exception as error:
        return None if quiet else _error_text(error)


def _axis(spec: TensorSpec | None, dim: str) -> int | None:
    """The axis of ``dim`` in ``spec``, if every dim before it is a single named or sized axis."""
    if spec is None or dim not in spec.dims:
        return None
    before = spec.dims[: spec.dims.index(dim)]
    return None if any(t == "..." or t.startswith("*") for t in before) else len(before)


def _config_text(env: DimEnv) -> str:
    return ", ".join(f"{name}={bound.size}" for name, bound in env.sizes.items())


def _definition(target: Target, layer: Layer[Any, Any]) -> tuple[str, int]:
    """Where to report an invariant: the layer's forward if its class is the target, else the target."""
    if target.kind == "layer class":
        forward = inspect.unwrap(type(layer).__dict__.get("forward", type(layer).forward))
        try:
            return inspect.getsourcefile(forward) or target.path, inspect.getsourcelines(forward)[1]
        except (OSError, TypeError):
            pass
    return target.path, target.line


def _layer_type(hint: object) -> type[Layer[Any, Any]] | None:
    origin = typing.get_origin(hint) or hint
    return origin if isinstance(origin, type) and issubclass(origin, Layer) else None


def _io_of(hint: object) -> tuple[str, str] | None:
    cls = _layer_type(hint)
    if cls is None:
        return None
    args = typing.get_args(hint)
    if len(args) == 2:
        first, second = literal_dims(args[0]), literal_dims(args[1])
        return (first, second) if first is not None and second is not None else None
    return declared_io(cls)


def _reads_token_ids(hint: object) -> bool:
    io = _io_of(hint)
    return io is not None and io[0].split() == ["batch", "seq"]


def _stock_model(hint: object, cfg: CausalConfig) -> Layer[Any, Any]:
    """A probe value for a Layer-typed parameter: that class at the probe config, or a stock model."""
    cls = _layer_type(hint)
    if cls is not None and cls is not Layer and declared_io(cls) is not None:
        return build_layer(cls)
    stock: dict[tuple[str, str], Callable[[], Layer[Any, Any]]] = {
        ("batch seq", "batch seq vocab"): lambda: models.GPT2(cfg),
        ("batch seq vocab", "batch seq vocab"): lambda: models.causal_transformer_one_hot(cfg),
        ("batch seq d_model", "batch seq vocab"): lambda: models.causal_transformer_from_embeddings(cfg),
        ("batch seq d_model", "batch seq d_model"): lambda: nn.TransformerBlock(cfg, index=0),
    }
    io = _io_of(hint)
    if io is None or io not in stock:
        raise CannotProbe(f"no probe model for a parameter of type {hint}")
    return stock[io]()


def check_modules(modules: Sequence[ModuleType], *, max_params: int = DEFAULT_MAX_PARAMS) -> Report:
    """Check every target in already-imported ``modules``."""
    started = time.perf_counter()
    report = Report()
    checker = _Checker(report, max_params)
    with checks.mode("full"):
        for target in find_targets(modules):
            checker.check(target)
    report.seconds = time.perf_counter() - started
    return report


def check(targets: Sequence[str], *, exclude: Sequence[str] = (), max_params: int = DEFAULT_MAX_PARAMS) -> Report:
    """Import ``targets`` (paths or module names) and check everything in them."""
    started = time.perf_counter()
    loaded = load(targets, exclude)
    report = check_modules(loaded.modules, max_params=max_params)
    report.problems[:0] = loaded.problems  # one per module: never the same place twice
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["DEFAULT_MAX_PARAMS", "check", "check_modules"]
