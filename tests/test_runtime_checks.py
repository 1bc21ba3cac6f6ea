"""Runtime checks: config-scoped dims, free batch, seq <= seq_len, dtypes, results, messages, memory of passes."""

import pytest
import torch
from jaxtyping import Bool, Float
from torch import Tensor

import typedlm as tl
from typedlm import checks
from typedlm.layer import Layer
from typedlm.shapes import Embedded


def test_wrong_width_names_d_model_expected_and_actual(cfg: tl.CausalConfig) -> None:
    block = tl.nn.TransformerBlock(cfg, index=0)
    with pytest.raises(tl.ShapeError) as caught:
        block(torch.randn(2, 8, 48))
    message = str(caught.value)
    assert "TransformerBlock(index=0)" in message
    assert "d_model = 64" in message and "cfg.d_model" in message and "d_model = 48" in message
    assert "(2, 8, 48)" in message
    assert "\n" not in message and "beartype" not in message.lower() and len(message) < 300


def test_wrong_width_is_caught_by_the_first_layer_that_sees_it(cfg: tl.CausalConfig) -> None:
    body = tl.models.causal_transformer_from_embeddings(cfg)
    with pytest.raises(tl.ShapeError, match=r"^CausalTransformer: x expected .*d_model = 64.*got d_model = 48"):
        body(torch.randn(1, 4, 48))


def test_batch_is_free_and_seq_is_bounded(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg)
    for batch, seq in [(1, 1), (5, 7), (3, cfg.seq_len)]:
        assert model(torch.randint(0, cfg.vocab, (batch, seq))).shape == (batch, seq, cfg.vocab)
    with pytest.raises(tl.ShapeError, match=r"seq = 33 exceeds cfg.seq_len = 32"):
        model(torch.randint(0, cfg.vocab, (1, 33)))


@pytest.mark.parametrize(
    ("make", "value", "pattern"),
    [
        (lambda c: tl.nn.TokenEmbedding(c), torch.zeros(2, 4), r"ids expected \"batch seq\" as an integer tensor"),
        (lambda c: tl.nn.TokenEmbedding(c), torch.zeros(2, 4, 3, dtype=torch.long), r"\(2 dims\), got 3 dims"),
        (
            lambda c: tl.nn.OneHotEmbedding(c),
            torch.zeros(2, 4, 256, dtype=torch.long),
            r"one_hot expected \"batch seq vocab\" as a floating-point tensor",
        ),
        (lambda c: tl.nn.OneHotEmbedding(c), torch.zeros(2, 4, 255), r"vocab = 256 \(cfg.vocab\), got vocab = 255"),
        (lambda c: tl.nn.LayerNorm(c), torch.zeros(2, 4, 64, dtype=torch.long), r"as a floating-point tensor"),
    ],
)
def test_dtype_and_rank(cfg: tl.CausalConfig, make: object, value: Tensor, pattern: str) -> None:
    layer = make(cfg)  # type: ignore[operator]  # the parametrised constructors are lambdas
    with pytest.raises(tl.ShapeError, match=pattern):
        layer(value)


class DropsAColumn(Layer[Embedded, Embedded]):
    """A buggy user layer: claims to keep d_model but drops the last feature."""

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x[..., :-1]


def test_a_layer_returning_the_wrong_shape_is_named(cfg: tl.CausalConfig) -> None:
    with pytest.raises(tl.ShapeError, match=r"DropsAColumn: its result expected .*d_model = 64.*got d_model = 63"):
        DropsAColumn(cfg)(torch.zeros(1, 2, 64))


def test_free_dims_must_agree_within_a_call(cfg: tl.CausalConfig) -> None:
    logits = torch.zeros(2, 5, cfg.vocab)
    with pytest.raises(
        tl.ShapeError, match=r"targets expected \"batch seq\": seq = 5 \(fixed by logits\), got seq = 4"
    ):
        tl.losses.cross_entropy_indexed(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(tl.ShapeError, match=r"batch\*seq = 10, got 9"):
        tl.losses.cross_entropy_indexed(logits, torch.zeros(9, dtype=torch.long))


def test_non_tensor_arguments_are_checked_by_beartype(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg)
    with pytest.raises(tl.ShapeError, match=r"GPT2: start_pos expected int, got 'one'"):
        model(torch.zeros(1, 2, dtype=torch.long), start_pos="one")


def test_a_passed_signature_is_not_checked_again(cfg: tl.CausalConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = checks.check_arguments

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(str(args[1]))
        return real(*args, **kwargs)  # type: ignore[arg-type]  # forwarded unchanged

    monkeypatch.setattr(checks.wrapping, "check_arguments", counting)  # where the checked call finds it
    norm = tl.nn.LayerNorm(cfg)
    for _ in range(3):
        norm(torch.zeros(2, 3, 64))
    assert calls == ["LayerNorm"]
    norm(torch.zeros(4, 3, 64))
    norm(torch.zeros(4, 5, 64))
    assert calls == ["LayerNorm"] * 3
    with pytest.raises(tl.ShapeError):  # a failure is never remembered as a pass
        norm(torch.zeros(4, 3, 63))
    with pytest.raises(tl.ShapeError):
        norm(torch.zeros(4, 3, 63))


def test_checked_model_gives_the_same_values_and_gradients_as_unchecked(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg, seed=4)
    ids = torch.randint(0, cfg.vocab, (2, 9))
    grads = []
    for mode in ("full", "off"):
        with checks.mode(mode):
            model.zero_grad()
            loss = tl.losses.cross_entropy_indexed(model(ids[:, :-1]), ids[:, 1:])
            loss.backward()
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(list(model.parameters()))
    for checked_grad, plain_grad in zip(*grads, strict=True):
        torch.testing.assert_close(checked_grad, plain_grad)


class _WrongReadout(Layer[Embedded, Embedded]):
    """A projection sized from ffn where d_model was meant."""

    def __init__(self, cfg: tl.CausalConfig) -> None:
        super().__init__(cfg)
        self.proj = torch.nn.Linear(cfg.ffn_hidden, cfg.d_model)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        y: Tensor = self.proj(x)  # the failing line
        return y


def test_a_torch_error_inside_a_forward_is_a_shape_error_naming_layer_line_and_shapes(cfg: tl.CausalConfig) -> None:
    layer = _WrongReadout(cfg)
    for _ in range(2):  # the first call (checked) and a repeat (remembered signature): both explain the error
        with pytest.raises(tl.ShapeError) as caught:
            layer(torch.randn(2, 5, cfg.d_model))
        message = str(caught.value)
        assert message.startswith("_WrongReadout: torch RuntimeError at tests/test_runtime_checks.py:")
        assert "`y: Tensor = self.proj(x)  # the failing line`" in message and "(2, 5, 64) float32" in message
        assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_users_own_errors_and_non_shape_torch_errors_are_not_rewritten(cfg: tl.CausalConfig) -> None:
    class Refuses(Layer[Embedded, Embedded]):
        def __init__(self, cfg: tl.CausalConfig, error: Exception) -> None:
            super().__init__(cfg)
            self.error = error
            self.parts = torch.nn.ModuleList([torch.nn.Identity()])
            self.leaf = torch.nn.Parameter(torch.ones(1))

        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            if isinstance(self.error, IndexError):
                out: Tensor = self.parts[3](x)  # a Python index error, not a shape
                return out
            if isinstance(self.error, ArithmeticError):
                self.leaf.add_(1.0)  # autograd refuses an in-place change of a leaf: not a shape either
            raise self.error

    for error in (ValueError("my own rule"), RuntimeError("call setup() first"), IndexError(), ArithmeticError()):
        expected = RuntimeError if isinstance(error, ArithmeticError) else type(error)
        with pytest.raises(expected) as caught:
            Refuses(cfg, error)(torch.randn(1, 2, cfg.d_model))
        assert not isinstance(caught.value, tl.ShapeError)


def test_a_converted_torch_error_is_still_its_own_class(cfg: tl.CausalConfig) -> None:
    with pytest.raises(RuntimeError) as caught:  # code written for plain torch keeps working
        _WrongReadout(cfg)(torch.randn(2, 5, cfg.d_model))
    assert isinstance(caught.value, tl.ShapeError) and type(caught.value).__name__ == "ShapeError"


def test_an_eval_only_shape_change_is_caught_after_training_calls(cfg: tl.CausalConfig) -> None:
    class EvalTrims(Layer[Embedded, Embedded]):
        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            return x if self.training else x[:, :-1]

    layer = EvalTrims(cfg).train()
    layer(torch.randn(2, 4, cfg.d_model))  # passes and is remembered for training mode
    with pytest.raises(tl.ShapeError, match="its result expected"):
        layer.eval()(torch.randn(2, 4, cfg.d_model))


class _Masked(Layer[Embedded, Embedded]):
    """A layer with an optional mask: None means every position counts."""

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], mask: Bool[Tensor, "batch seq"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        return x if mask is None else x * mask[..., None]


def test_an_optional_tensor_argument_may_be_none_and_is_checked_when_given(cfg: tl.CausalConfig) -> None:
    layer = _Masked(cfg)
    x = torch.randn(2, 3, cfg.d_model)
    assert torch.equal(layer(x), x) and torch.equal(layer(x, None), x)
    keep_first = torch.tensor([[True, False, False]] * 2)
    assert torch.equal(layer(x, keep_first)[:, 1:], torch.zeros(2, 2, cfg.d_model))
    wrong_length = r"_Masked: mask expected \"batch seq\": seq = 3 \(fixed by x\), got seq = 4"
    with pytest.raises(tl.ShapeError, match=wrong_length):
        layer(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(tl.ShapeError, match=r"mask expected .*bool|mask expected Bool"):
        layer(x, torch.ones(2, 3))


class _Bias(Layer[Embedded, Embedded]):
    """Adds ``bias`` (broadcast over batch and seq) scaled by per-item ``scale`` of any leading shape."""

    def forward(
        self,
        x: Float[Tensor, "batch seq d_model"],
        bias: Float[Tensor, "#batch #seq d_model"],
        scale: Float[Tensor, "*lead"],
        weights: Float[Tensor, "*lead 2"],
    ) -> Float[Tensor, "batch seq d_model"]:
        return x + bias * scale.sum() * weights.sum()


def test_jaxtyping_variadic_broadcast_and_fixed_dims_are_checked(cfg: tl.CausalConfig) -> None:
    layer, x = _Bias(cfg), torch.randn(2, 3, cfg.d_model)
    assert layer(x, torch.randn(1, 1, cfg.d_model), torch.ones(4, 5), torch.ones(4, 5, 2)).shape == x.shape
    assert layer(x, torch.randn(2, 3, cfg.d_model), torch.ones(()), torch.ones(2)).shape == x.shape
    with pytest.raises(tl.ShapeError, match=r"bias expected .*: batch = 2 \(fixed by x\), got batch = 5"):
        layer(x, torch.randn(5, 1, cfg.d_model), torch.ones(4), torch.ones(4, 2))
    with pytest.raises(tl.ShapeError, match=r"weights expected \"\*lead 2\": \*lead = \(4, 5\) \(fixed by scale\)"):
        layer(x, torch.randn(1, 1, cfg.d_model), torch.ones(4, 5), torch.ones(4, 6, 2))
    with pytest.raises(tl.ShapeError, match=r"a dim of size 2, got 3"):
        layer(x, torch.randn(1, 1, cfg.d_model), torch.ones(4), torch.ones(4, 3))


@pytest.mark.parametrize("dims", ["batch=2 seq", "batch seq?", "batch $"])  # two variadics: jaxtyping refuses
def test_a_dim_typedlm_cannot_check_is_refused_when_the_class_is_created(dims: str) -> None:
    with pytest.raises(tl.ShapeError, match=r"is not supported \(a name, a size such as 3"):

        class Odd(Layer[Embedded, Embedded]):
            def forward(
                self, x: Float[Tensor, "batch seq d_model"], y: Float[Tensor, dims]
            ) -> Float[Tensor, "batch seq d_model"]:
                return x
