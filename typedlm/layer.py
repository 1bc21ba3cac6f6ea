"""`Layer[In, Out]`, a shape-typed ``nn.Module``, and its composites: ``a >> b`` (`Chain`) and `Stack`.

``In`` and ``Out`` are shape aliases (`typedlm.shapes`), i.e. ``Literal`` dimension strings. They are
invariant on purpose: mypy then rejects ``a >> b`` when ``a``'s Out is not ``b``'s In, and `Stack`
accepts only layers of type ``Layer[S, S]``. The same promise is checked three more times:

- when a subclass is created: its ``forward`` annotations must state the declared ``In`` and ``Out``;
- when layers are composed: shapes must meet and model-wide config-scoped dims (vocab, d_model, ...)
  must agree across all layers — at import time for a module-level model; layer-local dims may differ;
- on calls, by `typedlm.checks`.

A dim name that nothing binds (no config field, no declaration) is refused when the class is created.
"""

import inspect
import itertools
import typing
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from jaxtyping import Int
from torch import Tensor, nn

from typedlm.checks import CallSignature, check_mode_variable, install_layer_checks, register_owner
from typedlm.config import CausalConfig
from typedlm.dims import DimEnv, TensorSpec, config_dims, dim_names, is_config_type
from typedlm.errors import ConfigError, ShapeError
from typedlm.shapes import FREE_DIMS, literal_dims, literal_tag

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

In = TypeVar("In", bound=str)
Out = TypeVar("Out", bound=str)
Next = TypeVar("Next", bound=str)
S = TypeVar("S", bound=str)


def _declared_types(cls: type) -> tuple[object, object] | None:
    """``(In, Out)`` of the nearest ``Layer[In, Out]`` base of ``cls``."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Layer):
                first, second = typing.get_args(base)
                return first, second
    return None


def declared_io(cls: type) -> tuple[str, str] | None:
    """The dimension strings of the nearest ``Layer[In, Out]`` base of ``cls``; None while still generic."""
    types = _declared_types(cls)
    if types is None:
        return None
    dims_in, dims_out = literal_dims(types[0]), literal_dims(types[1])
    return (dims_in, dims_out) if dims_in is not None and dims_out is not None else None


def _io_types(layer: "Layer[Any, Any]") -> tuple[object, object]:
    """The shape types ``layer`` declares it takes and gives (`Logits`, ...); None where it declares none."""
    if isinstance(layer, _Sequence):
        return _io_types(layer[0])[0], _io_types(layer[-1])[1]
    return _declared_types(type(layer)) or (None, None)


def _dims_text(specs: tuple[TensorSpec, ...]) -> set[str]:
    return {" ".join(spec.dims) for spec in specs}


def _check_declared(cls: type, sig: CallSignature) -> None:
    """Refuse a class whose forward annotations disagree with its declared ``Layer[In, Out]``."""
    declared = declared_io(cls)
    if declared is None:
        return
    dims_in, dims_out = declared
    name = cls.__qualname__
    header = f'class {name}(Layer["{dims_in}", "{dims_out}"])'
    if not sig.input_specs or not sig.result:
        raise ShapeError(
            f"{header}: {name}.forward must annotate its first argument and its return value with jaxtyping "
            f'shapes, e.g. x: Float[Tensor, "{dims_in}"] -> Float[Tensor, "{dims_out}"]'
        )
    for role, declared_dims, specs in (("input", dims_in, sig.input_specs), ("output", dims_out, sig.result)):
        wanted = " ".join(declared_dims.split())
        found = _dims_text(specs)
        if found != {wanted}:
            shown = " | ".join(f'"{d}"' for d in sorted(found))
            raise ShapeError(f'{header}: {name}.forward annotates its {role} as {shown}, not "{wanted}"')


class _Unknown:
    """The config type of a layer whose ``__init__`` annotation cannot be read when its class is created."""


def _init_config_type(cls: type) -> tuple[type | _Unknown | None, bool, bool]:
    """The config type ``cls.__init__`` takes, whether it is annotated, and whether ``cls``'s own
    ``__init__`` takes a config (then ``super().__init__()`` without one is a mistake).

    The type is its first parameter's annotation (a `CausalConfig` or frozen dataclass type, also inside
    ``X | None``), `CausalConfig` if unannotated or inherited from `Layer`, None if it takes no
    positional parameter nor a keyword-only ``cfg`` (a stateless layer), else unknown.
    """
    init = getattr(cls, "__init__")  # noqa: B009  # mypy reads cls.__init__ as object.__init__
    if init is Layer.__init__:
        return CausalConfig, False, False
    try:
        parameters = list(inspect.signature(init).parameters.values())[1:]
    except (TypeError, ValueError):
        return _Unknown(), False, False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    positional = positional or [p for p in parameters if p.kind == p.KEYWORD_ONLY and p.name == "cfg"]
    if not positional:
        return (_Unknown() if any(p.kind == p.VAR_POSITIONAL for p in parameters) else None), False, False
    first = positional[0]
    if first.annotation is inspect.Parameter.empty:
        return CausalConfig, False, first.name == "cfg"
    try:
        hint = typing.get_type_hints(init).get(first.name)
    except Exception:  # a forward reference not defined yet: checked when the layer is built
        return _Unknown(), False, False
    for candidate in (hint, *typing.get_args(hint)):
        if is_config_type(candidate):
            return typing.cast(type, candidate), True, True
    return _Unknown(), False, False


def _check_dim_names(cls: type, where: str, sig: CallSignature, bound: Sequence[str], source: str) -> None:
    """Refuse a dim name in ``cls.forward``'s annotations that nothing binds.

    ``bound``: the names the config (``source`` names it; "" for a stateless layer) and the layer-local
    sizes fix. Per-call names: batch, seq, ``free_dims``, ``*variadic`` inputs, and every input name of a
    stateless layer.
    """
    inputs = [spec for param in sig.params for spec in param.specs]
    input_names = [(name, variadic) for spec in inputs for name, variadic in dim_names(spec)]
    free_dims: tuple[str, ...] = getattr(cls, "free_dims", ())
    local_dims: tuple[str, ...] = getattr(cls, "local_dims", ())
    per_call = [*FREE_DIMS, *free_dims, *(name for name, variadic in input_names if variadic or not source)]
    known = set(per_call) | set(bound) | set(local_dims)
    for spec in (*inputs, *sig.result):
        for name, _ in dim_names(spec):
            if name in known or name.startswith("_"):
                continue
            listed = list(dict.fromkeys([*per_call, *bound, *local_dims]))
            of = f" (per call, and {source}'s)" if source else " (per call: the layer has no config)"
            raise ShapeError(
                f"{where}: forward annotates {spec.quoted}: unknown dim {name!r}; known: {', '.join(listed)}{of}. "
                f"Declare it as an int field of the config, as local_dims = ({name!r},) with "
                f"super().__init__(cfg, {name}=...), or as free_dims = ({name!r},) to bind it per call"
            )


class Layer(nn.Module, Generic[In, Out]):
    """An ``nn.Module`` from shape ``In`` to shape ``Out``, built from a config (or none, if stateless).

    A subclass declares ``Layer[In, Out]``, calls ``super().__init__(cfg)`` and annotates ``forward``
    with the same shapes. The dim names in those annotations are:

    - ``batch`` and ``seq``, bound per call (``seq`` at most the config's ``seq_len``);
    - config-scoped, fixed by ``cfg``: for a `CausalConfig`, vocab, d_model, heads, head_dim and ffn, plus
      every int field a subclass adds (``kv_heads``); for any other frozen dataclass config, its int fields
      but ``batch`` and ``seq_len``. Annotate ``__init__``'s ``cfg`` with the config's type so the names
      are known when the class is created;
    - layer-local: ``super().__init__(cfg, heads=4, ffn=1024)`` sets sizes for this layer only (they are
      not unified across ``>>``/`Stack`, so blocks of different widths compose); a name no config has
      is declared in ``local_dims = ("rope_dim",)``;
    - per call, declared in ``free_dims = ("kv_seq",)``; and any ``_``-prefixed name;
    - for a stateless layer (``super().__init__()``, no config), every name its inputs use, bound per call.

    Any other name is a ShapeError when the class is created (or, if its config type cannot be read
    then, when it is built). Set ``boundary = True`` on model-level classes to keep them checked in
    ``boundary`` mode, and ``causal = False`` on a layer that may look at later positions.
    """

    boundary: ClassVar[bool] = False
    causal: ClassVar[bool] = True
    """Whether no output at a position depends on a later position; `typedlm check` verifies it.
    A deliberately non-causal layer (a bidirectional encoder, a pooling layer) sets it False."""
    free_dims: ClassVar[tuple[str, ...]] = ()
    """Dim names bound per call, like ``batch`` (``("kv_seq",)``)."""
    local_dims: ClassVar[tuple[str, ...]] = ()
    """Dim names whose size each instance passes to ``super().__init__(cfg, name=size)``."""
    cfg: Any
    """The config the layer was built from; None for a stateless layer."""
    _typedlm_signature: CallSignature
    _typedlm_config_type: ClassVar[type | None] = None
    """The config type ``__init__`` annotates its ``cfg`` with; building with another is a ConfigError."""
    _typedlm_takes_config: ClassVar[bool] = False
    """Whether the class's own ``__init__`` takes a config: then ``super().__init__()`` without it is refused."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config_type, annotated, takes_config = _init_config_type(cls)
        cls._typedlm_config_type = config_type if annotated and isinstance(config_type, type) else None
        cls._typedlm_takes_config = takes_config
        if "forward" not in cls.__dict__:
            return
        signature = CallSignature.of(cls.__dict__["forward"], method=True)
        _check_declared(cls, signature)
        if not isinstance(config_type, _Unknown):
            bound = config_dims(config_type) if config_type is not None else ()
            source = config_type.__name__ if config_type is not None else ""
            _check_dim_names(cls, f"class {cls.__qualname__}", signature, bound, source)
        cls._typedlm_signature = signature
        install_layer_checks(cls, boundary=cls.boundary)

    def __init__(self, cfg: "DataclassInstance | None" = None, **local_sizes: int) -> None:
        """``cfg``: a `CausalConfig` (or subclass), another frozen dataclass, or None for a stateless layer;
        ``local_sizes``: this layer's own sizes of dims (``heads=4``), which win over the config's."""
        super().__init__()
        check_mode_variable()
        name = type(self).__name__
        wanted = type(self)._typedlm_config_type
        if cfg is None and type(self)._typedlm_takes_config:
            raise ConfigError(
                f"{name}: __init__ takes a config but called super().__init__() without it (its config dims would go "
                "unchecked): pass super().__init__(cfg)"
            )
        if cfg is not None and wanted is not None and not isinstance(cfg, wanted):
            raise ConfigError(f"{name}(cfg): cfg must be a {wanted.__name__}, got {type(cfg).__name__}")
        try:
            env = DimEnv.from_config(cfg)
        except ConfigError as error:
            raise ConfigError(f"{name}(cfg): {error}") from None
        self.cfg = cfg
        self.dim_env = env.with_local(local_sizes, name)
        self._typedlm_passed: set[tuple[Any, ...]] = set()
        register_owner(self)
        self._check_built_dims()

    def _check_built_dims(self) -> None:
        """Every declared local dim has a size, and every annotated dim is known for this config."""
        cls, env = type(self), self.dim_env
        missing = [n for n in cls.local_dims if n not in env.sizes]
        if missing:
            raise ConfigError(
                f"{cls.__name__}: local dim {missing[0]!r} has no size: pass super().__init__(cfg, {missing[0]}=...)"
            )
        signature: CallSignature | None = getattr(cls, "_typedlm_signature", None)
        key = (cls, frozenset(env.sizes), self.cfg is None)
        if signature is None or key in _dims_checked:
            return
        source, where = (
            (type(self.cfg).__name__, f"{cls.__name__}(cfg)") if self.cfg is not None else ("", f"{cls.__name__}()")
        )
        _check_dim_names(cls, where, signature, tuple(env.sizes), source)
        _dims_checked.add(key)

    def dim_size(self, dim: str) -> int:
        """This layer's size of ``dim``: a layer-local size, else its config's (``self.dim_size("ffn")``)."""
        bound = self.dim_env.sizes.get(dim)
        if bound is None:
            known = ", ".join(self.dim_env.sizes) or "none"
            raise ConfigError(f"{self.describe()}: no size for dim {dim!r} (its dims: {known})")
        return bound.size

    def describe(self) -> str:
        """How errors name this layer, e.g. ``TransformerBlock(index=3)``."""
        return type(self).__name__

    def __rshift__(self, other: "Layer[Out, Next]") -> "Layer[In, Next]":
        """``self`` then ``other``: one layer whose shapes and config-scoped dims have been checked."""
        return Chain[In, Next](self, other)

    if TYPE_CHECKING:

        def __call__(self, x: Tensor, /, *args: Any, **kwargs: Any) -> Tensor: ...


def _check_meets(left: Layer[Any, Any], right: Layer[Any, Any]) -> None:
    """``left``'s output shape must be ``right``'s input shape (for code that bypassed mypy)."""
    produced = _dims_text(left._typedlm_signature.result)
    accepted = _dims_text(right._typedlm_signature.input_specs)
    if produced and accepted and not produced & accepted:
        raise ShapeError(
            f"cannot compose {left.describe()} >> {right.describe()}: {left.describe()} gives "
            f"{' | '.join(sorted(produced))!r} but {right.describe()} takes {' | '.join(sorted(accepted))!r}"
        )
    gives_type, takes_type = _io_types(left)[1], _io_types(right)[0]
    if literal_dims(gives_type) is None or literal_dims(takes_type) is None:
        return  # a layer still generic in its shapes: no tag to compare
    gives, takes = literal_tag(gives_type) or "untagged", literal_tag(takes_type) or "untagged"
    if gives != takes:
        raise ShapeError(
            f"cannot compose {left.describe()} >> {right.describe()}: {left.describe()} gives {gives} "
            f"{' | '.join(sorted(produced))!r} but {right.describe()} takes {takes} (same dims, another meaning)"
        )


class _Sequence(Layer[In, Out]):
    """Layers applied in order, with one dimension environment for all of them."""

    def __init__(self, layers: Sequence[Layer[Any, Any]], *, label: str) -> None:
        if not layers:
            raise ConfigError(f"{label}: needs at least one layer")
        super().__init__(next((layer.cfg for layer in layers if layer.cfg is not None), None))
        env = layers[0].dim_env
        for left, right in itertools.pairwise(layers):
            _check_meets(left, right)
            env = env.merged(right.dim_env, left.describe(), right.describe())
        self.dim_env = env
        self.layers = nn.ModuleList(layers)
        self._decoding_args = [_decoding_args(layer) for layer in layers]
        first, last = layers[0]._typedlm_signature, layers[-1]._typedlm_signature
        self._typedlm_signature = type(self)._typedlm_signature.with_io(first.input_specs, last.result)

    def _apply_in_order(self, x: Tensor, start_pos: int = 0, pad: Tensor | None = None) -> Tensor:
        for layer, (takes_start_pos, takes_pad) in zip(self.layers, self._decoding_args, strict=True):
            if takes_pad and pad is not None:
                x = layer(x, start_pos, pad=pad) if takes_start_pos else layer(x, pad=pad)
            else:
                x = layer(x, start_pos) if takes_start_pos else layer(x)
        return x

    @property
    def passes_pad(self) -> bool:
        """Whether some layer takes the left-pad counts ``pad`` that this composite passes on."""
        return any(takes_pad for _, takes_pad in self._decoding_args)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer[Any, Any]]:
        return iter(typing.cast("Sequence[Layer[Any, Any]]", self.layers))

    def __getitem__(self, index: int) -> Layer[Any, Any]:
        return typing.cast("Layer[Any, Any]", self.layers[index])


_dims_checked: set[tuple[type, frozenset[str], bool]] = set()
"""(layer class, dim names, stateless) whose forward annotations `Layer._check_built_dims` has checked."""


def _decoding_args(layer: Layer[Any, Any]) -> tuple[bool, bool]:
    """Whether ``layer.forward`` takes ``start_pos`` (the position of its first column: a positional
    embedding, a model) and ``pad`` (left-pad counts per row: positions, attention, a model)."""
    parameters = inspect.signature(layer.forward).parameters
    takes_pad = "pad" in parameters and not (isinstance(layer, _Sequence) and not layer.passes_pad)
    return "start_pos" in parameters, takes_pad


class Chain(_Sequence[In, Out]):
    """``a >> b >> c``: a model-level composition (checked at entry and exit in every mode but off).

    ``start_pos`` and ``pad`` (left-pad counts, one per row) are passed on to the layers that take them,
    so a chain from token ids to logits decodes with a KV cache and left-padded prompts like
    `typedlm.models.GPT2` (`typedlm.generate`).
    """

    boundary = True

    def __init__(self, *layers: Layer[Any, Any]) -> None:
        flat: list[Layer[Any, Any]] = []
        for layer in layers:
            flat.extend(layer if isinstance(layer, Chain) else [layer])
        super().__init__(flat, label="Chain")

    def forward(self, x: Tensor, start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None) -> Tensor:
        return self._apply_in_order(x, start_pos, pad)

    def describe(self) -> str:
        return " >> ".join(layer.describe() for layer in self)


class Stack(_Sequence[S, S]):
    """``Stack([block_0, ..., block_n])``: layers of one shape ``S`` applied in order."""

    def __init__(self, layers: Sequence[Layer[S, S]]) -> None:
        for layer in layers:
            produced, accepted = (
                _dims_text(layer._typedlm_signature.result),
                _dims_text(layer._typedlm_signature.input_specs),
            )
            if produced != accepted:
                raise ShapeError(
                    f"Stack: {layer.describe()} maps {accepted} to {produced}; only Layer[S, S] may be stacked"
                )
        super().__init__(layers, label="Stack")

    def forward(self, x: Tensor, pad: Int[Tensor, " batch"] | None = None) -> Tensor:
        return self._apply_in_order(x, pad=pad)

    def describe(self) -> str:
        return f"Stack[{len(self.layers)}]"
