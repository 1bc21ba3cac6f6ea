"""`Layer[In, Out]`, a shape-typed ``nn.Module``, and its composites: ``a >> b`` (`Chain`) and `Stack`.

``In`` and ``Out`` are shape aliases (`typedlm.shapes`), i.e. ``Literal`` dimension strings. They are
invariant on purpose: mypy then rejects ``a >> b`` when ``a``'s Out is not ``b``'s In, and `Stack`
accepts only layers of type ``Layer[S, S]``. The same promise is checked three more times:

- when a subclass is created: its ``forward`` annotations must state the declared ``In`` and ``Out``;
- when layers are composed: shapes must meet and config-scoped dims (vocab, d_model, heads, head_dim,
  ffn) must agree across all layers — at import time for a module-level model;
- on calls, by `typedlm.checks`.
"""

import inspect
import itertools
import typing
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from jaxtyping import Int
from torch import Tensor, nn

from typedlm.checks import CallSignature, check_mode_variable, install_layer_checks
from typedlm.config import CausalConfig
from typedlm.dims import DimEnv, TensorSpec
from typedlm.errors import ConfigError, ShapeError
from typedlm.shapes import literal_dims, literal_tag

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


def _io_tags(layer: "Layer[Any, Any]") -> tuple[str | None, str | None]:
    """The tags of what ``layer`` takes and gives (``"logits"`` for `Logits`), where its shapes have one."""
    if isinstance(layer, _Sequence):
        return _io_tags(layer[0])[0], _io_tags(layer[-1])[1]
    types = _declared_types(type(layer))
    return (literal_tag(types[0]), literal_tag(types[1])) if types is not None else (None, None)


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


class Layer(nn.Module, Generic[In, Out]):
    """An ``nn.Module`` from shape ``In`` to shape ``Out``, built from a `CausalConfig`.

    A subclass declares ``Layer[In, Out]``, calls ``super().__init__(cfg)`` and annotates ``forward``
    with the same shapes. Set ``boundary = True`` on model-level classes to keep them checked in
    ``boundary`` mode, and ``causal = False`` on a layer that may look at later positions.
    """

    boundary: ClassVar[bool] = False
    causal: ClassVar[bool] = True
    """Whether no output at a position depends on a later position; `typedlm check` verifies it.
    A deliberately non-causal layer (a bidirectional encoder, a pooling layer) sets it False."""
    _typedlm_signature: CallSignature

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" not in cls.__dict__:
            return
        signature = CallSignature.of(cls.__dict__["forward"], method=True)
        _check_declared(cls, signature)
        cls._typedlm_signature = signature
        install_layer_checks(cls, boundary=cls.boundary)

    def __init__(self, cfg: CausalConfig) -> None:
        super().__init__()
        check_mode_variable()
        if not isinstance(cfg, CausalConfig):
            raise ConfigError(f"{type(self).__name__}(cfg): cfg must be a CausalConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.dim_env = DimEnv.from_config(cfg)
        self._typedlm_passed: set[tuple[Any, ...]] = set()

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
    gives, takes = _io_tags(left)[1], _io_tags(right)[0]
    if gives is not None and takes is not None and gives != takes:
        raise ShapeError(
            f"cannot compose {left.describe()} >> {right.describe()}: {left.describe()} gives {gives} "
            f"{' | '.join(sorted(produced))!r} but {right.describe()} takes {takes} (same dims, another meaning)"
        )


class _Sequence(Layer[In, Out]):
    """Layers applied in order, with one dimension environment for all of them."""

    def __init__(self, layers: Sequence[Layer[Any, Any]], *, label: str) -> None:
        if not layers:
            raise ConfigError(f"{label}: needs at least one layer")
        super().__init__(layers[0].cfg)
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
