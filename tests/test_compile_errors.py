"""An inner layer's ShapeError under the user's ``torch.compile(fullgraph=True)`` — of the model, or of a
function of the user's that calls it —, static and dynamic shapes, reaches the user as a ShapeError: the
same message as the same bad call run eagerly (the reference). A valid input still compiles to one graph,
the same graph as with checks off.

Dynamo runs with the ``eager`` backend here (the errors arise while dynamo traces, before any backend).
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from jaxtyping import Bool, Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded

DYNAMIC = ["static", "dynamic", "mark_dynamic"]


class _DropsALastFeature(Layer[Embedded, Embedded]):
    """A user's layer whose forward passes a tensor one feature too narrow to its inner LayerNorm."""

    def __init__(self, cfg: tl.CausalConfig) -> None:
        super().__init__(cfg)
        self.norm = tl.nn.LayerNorm(cfg)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return self.norm(x[..., :-1])


class _TransposedWeight(Layer[Embedded, Embedded]):
    """A user's layer whose weight has the wrong shape: torch refuses the matmul."""

    def __init__(self, cfg: tl.CausalConfig) -> None:
        super().__init__(cfg)
        self.weight = torch.nn.Parameter(torch.zeros(cfg.d_model - 1, cfg.d_model))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x @ self.weight


def _compiled(fn: Callable[..., Tensor], dynamic: str, backend: str = "eager") -> Callable[..., Tensor]:
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend, dynamic=dynamic == "dynamic")


def _input(x: Tensor, dynamic: str) -> Tensor:
    if dynamic == "mark_dynamic":
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(x, 1)
    return x


def _eager_message(model: Callable[[Tensor], Tensor], x: Tensor) -> str:
    with pytest.raises(tl.ShapeError) as eager:
        model(x)
    return str(eager.value)


@pytest.mark.parametrize(
    ("dynamic", "backend"),
    [*((d, "eager") for d in DYNAMIC), pytest.param("static", "inductor", marks=pytest.mark.slow)],
)
def test_an_inner_layers_shape_error_in_a_compiled_model_is_the_eager_one(
    cfg: tl.CausalConfig, dynamic: str, backend: str
) -> None:
    model = tl.nn.TokenEmbedding(cfg) >> _DropsALastFeature(cfg) >> tl.nn.LMHead(cfg)
    ids = torch.randint(0, cfg.vocab, (2, 8))
    expected = _eager_message(model, ids)
    assert expected.startswith("LayerNorm: x expected") and "got d_model = 63" in expected  # the eager reference
    with pytest.raises(tl.ShapeError) as compiled:
        _compiled(model, dynamic, backend)(_input(ids.clone(), dynamic))
    assert str(compiled.value) == expected


@pytest.mark.parametrize("dynamic", ["static", "dynamic"])
def test_a_torch_shape_error_in_a_compiled_model_is_the_eager_one(cfg: tl.CausalConfig, dynamic: str) -> None:
    model = tl.nn.TokenEmbedding(cfg) >> _TransposedWeight(cfg) >> tl.nn.LMHead(cfg)
    ids = torch.randint(0, cfg.vocab, (2, 8))
    expected = _eager_message(model, ids)
    assert expected.startswith("_TransposedWeight: torch RuntimeError at tests/test_compile_errors.py:")
    with pytest.raises(tl.ShapeError) as compiled:
        _compiled(model, dynamic)(_input(ids.clone(), dynamic))
    assert str(compiled.value) == expected


@pytest.mark.parametrize("dynamic", ["static", "dynamic"])
def test_a_wrong_d_model_given_to_a_compiled_model_is_the_eager_error(cfg: tl.CausalConfig, dynamic: str) -> None:
    model = tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg)
    x = torch.zeros(2, 8, cfg.d_model + 1)
    expected = _eager_message(model, x)
    assert f"got d_model = {cfg.d_model + 1}" in expected
    with pytest.raises(tl.ShapeError) as compiled:
        _compiled(model, dynamic)(_input(x.clone(), dynamic))
    assert str(compiled.value) == expected


def _graph_of(model: Callable[[Tensor], Tensor], x: Tensor, mode: tl.checks.Mode) -> list[tuple[str, str]]:
    """The operations of the one graph dynamo compiles for ``model(x)`` with dynamic shapes, in ``mode``
    (inputs aside: their names depend on the frame dynamo starts from)."""
    graphs: list[torch.fx.GraphModule] = []

    def keep(gm: torch.fx.GraphModule, _inputs: list[Any]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    with tl.checks.mode(mode):
        compiled = torch.compile(model, fullgraph=True, backend=keep, dynamic=True)
        torch.testing.assert_close(compiled(x), model(x))
    assert len(graphs) == 1
    return [(node.op, str(node.target)) for node in graphs[0].graph.nodes if node.op.startswith("call")]


def test_a_valid_call_compiles_to_the_graph_of_an_unchecked_model(cfg: tl.CausalConfig) -> None:
    model = tl.nn.TokenEmbedding(cfg) >> tl.nn.PositionalEmbedding(cfg) >> tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg)
    ids = torch.randint(0, cfg.vocab, (2, 8))
    checked = _graph_of(model, ids, "full")
    assert checked == _graph_of(model, ids, "off")
    assert len(checked) >= 4  # embedding, add, layer_norm, linear at least


def test_a_compiled_function_calling_a_chain_compiles_in_one_graph(cfg: tl.CausalConfig) -> None:
    model = tl.nn.TokenEmbedding(cfg) >> tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg)

    def step(ids: Tensor) -> Tensor:
        return model(ids)

    ids = torch.randint(0, cfg.vocab, (2, 8))
    torch.testing.assert_close(_compiled(step, "dynamic")(ids), model(ids))


def _step(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    def step(ids: Tensor) -> Tensor:
        logits: Tensor = model(ids)
        return logits

    return step


@pytest.mark.parametrize(
    ("dynamic", "backend"),
    [*((d, "eager") for d in DYNAMIC), pytest.param("static", "inductor", marks=pytest.mark.slow)],
)
def test_an_inner_layers_shape_error_in_a_compiled_function_is_the_eager_one(
    cfg: tl.CausalConfig, dynamic: str, backend: str
) -> None:
    step = _step(tl.nn.TokenEmbedding(cfg) >> _DropsALastFeature(cfg) >> tl.nn.LMHead(cfg))
    ids = torch.randint(0, cfg.vocab, (2, 8))
    expected = _eager_message(step, ids)
    assert expected.startswith("LayerNorm: x expected") and "got d_model = 63 in shape (2, 8, 63)" in expected
    with pytest.raises(tl.ShapeError) as compiled:
        _compiled(step, dynamic, backend)(_input(ids.clone(), dynamic))
    assert str(compiled.value) == expected
    notes = "\n".join(getattr(compiled.value, "__notes__", ()))
    assert "return self.norm(x[..., :-1])" in notes  # the user's line at fault, as an eager traceback shows it


class _ShortResult(Layer[Embedded, Embedded]):
    """A user's layer that returns one feature fewer than it declares: its result's check fails."""

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x[..., :-1]


def _training_step(model: torch.nn.Module, targets: Tensor) -> Callable[[Tensor], Tensor]:
    """A compiled function doing more than calling the model: logits, a checked loss, and arithmetic on it."""

    def step(ids: Tensor) -> Tensor:
        logits: Tensor = model(ids) * 0.5
        loss: Tensor = tl.losses.cross_entropy_one_hot(logits, targets) + logits.square().mean()
        return loss

    return step


@pytest.mark.parametrize("dynamic", ["static", "dynamic"])
@pytest.mark.parametrize("fault", ["an inner layer's result", "the loss's targets"])
def test_a_shape_error_in_a_compiled_training_step_is_the_eager_one(
    cfg: tl.CausalConfig, fault: str, dynamic: str
) -> None:
    ids = torch.randint(0, cfg.vocab, (2, 8))
    targets = torch.nn.functional.one_hot(ids, cfg.vocab).float()
    if fault == "an inner layer's result":
        model = tl.nn.TokenEmbedding(cfg) >> _ShortResult() >> tl.nn.LMHead(cfg)
        step, expected_start = _training_step(model, targets), "_ShortResult: its result expected"
    else:
        model = tl.nn.TokenEmbedding(cfg) >> tl.nn.LMHead(cfg)
        step, expected_start = _training_step(model, targets[:, :5]), "cross_entropy_one_hot: targets expected"
    expected = _eager_message(step, ids)
    assert expected.startswith(expected_start)  # the eager reference
    with pytest.raises(tl.ShapeError) as compiled:
        _compiled(step, dynamic)(_input(ids.clone(), dynamic))
    assert str(compiled.value) == expected


class _Masked(Layer[Embedded, Embedded]):
    """A user's layer taking an int and an optional keyword mask beside its input."""

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], start: int = 0, *, mask: Bool[Tensor, "batch seq"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        return x[:, start:] if mask is None else x * mask[..., None]


@pytest.mark.parametrize("dynamic", ["static", "dynamic"])
def test_a_wrong_keyword_argument_in_a_compiled_function_is_the_eager_error(cfg: tl.CausalConfig, dynamic: str) -> None:
    layer = _Masked(cfg)

    def step(x: Tensor) -> Tensor:
        out: Tensor = layer(x, 0, mask=torch.ones(x.shape[0], x.shape[1] - 1, dtype=torch.bool))
        return out

    x = torch.zeros(2, 8, cfg.d_model)
    expected = _eager_message(step, x)
    assert expected.startswith("_Masked: mask expected") and "got seq = 7" in expected  # the eager reference
    with pytest.raises(tl.ShapeError) as compiled:
        _compiled(step, dynamic)(x.clone())
    assert str(compiled.value) == expected


def test_a_shape_error_in_a_function_compiled_without_fullgraph_is_the_eager_one(cfg: tl.CausalConfig) -> None:
    step = _step(tl.nn.TokenEmbedding(cfg) >> _DropsALastFeature(cfg) >> tl.nn.LMHead(cfg))
    ids = torch.randint(0, cfg.vocab, (2, 8))
    expected = _eager_message(step, ids)
    torch._dynamo.reset()
    with pytest.raises(tl.ShapeError) as compiled:
        torch.compile(step, backend="eager", dynamic=True)(ids)
    assert str(compiled.value) == expected


def test_a_valid_compiled_training_step_compiles_to_the_graph_of_an_unchecked_model(cfg: tl.CausalConfig) -> None:
    model = tl.nn.TokenEmbedding(cfg) >> tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg)
    ids = torch.randint(0, cfg.vocab, (2, 8))
    step = _training_step(model, torch.nn.functional.one_hot(ids, cfg.vocab).float())
    checked = _graph_of(step, ids, "full")
    assert checked == _graph_of(step, ids, "off")
    assert len(checked) >= 6  # embedding, layer_norm, linear, log_softmax, sum, mean at least


@pytest.mark.parametrize("dynamic", DYNAMIC)
def test_a_loss_with_dim_arithmetic_compiles_in_a_users_function_and_equals_the_eager_loss(
    cfg: tl.CausalConfig, dynamic: str
) -> None:
    model = tl.nn.TokenEmbedding(cfg) >> tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg)

    def step(windows: Tensor) -> Tensor:  # targets are (batch, seq+1): the checks evaluate seq+1 while traced
        return tl.losses.next_token_cross_entropy(model(windows[:, :-1]), windows)

    windows = torch.randint(0, cfg.vocab, (2, 9))
    compiled = _compiled(step, dynamic)
    torch.testing.assert_close(compiled(_input(windows.clone(), dynamic)), step(windows))
    short = windows[:, :-2]  # another length: (2, 6) logits against (2, 7) windows
    torch.testing.assert_close(compiled(_input(short.clone(), dynamic)), step(short))
    expected = _eager_message(lambda w: tl.losses.next_token_cross_entropy(model(w[:, :-1]), w[:, :5]), windows)
    with pytest.raises(tl.ShapeError) as traced:
        _compiled(lambda w: tl.losses.next_token_cross_entropy(model(w[:, :-1]), w[:, :5]), dynamic)(
            _input(windows.clone(), dynamic)
        )
    assert str(traced.value) == expected
