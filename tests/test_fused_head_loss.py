"""The fused head loss equals the plain ``F.cross_entropy(F.linear(hidden, W))`` path, loss and gradients."""

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import typedlm as tl
from typedlm.fused_head_loss import CHUNK_BYTES, chunk_sizes, fused_head_cross_entropy

fused = tl.losses.fused_next_token_cross_entropy


def plain_loss(hidden: Tensor, weight: Tensor, ids: Tensor, ignore_index: int = -100) -> Tensor:
    """The reference: full logits, shifted by hand, scored by ``F.cross_entropy``."""
    scored = hidden if ids.shape[1] > hidden.shape[1] else hidden[:, :-1]
    logits = F.linear(scored, weight)
    return F.cross_entropy(logits.reshape(-1, weight.shape[0]), ids[:, 1:].reshape(-1), ignore_index=ignore_index)


def loss_and_grads(loss_fn: Callable[[Tensor, Tensor], Tensor], hidden: Tensor, weight: Tensor) -> list[Tensor]:
    """``[loss, d loss/d hidden, d loss/d weight]`` for fresh leaf copies of ``hidden`` and ``weight``."""
    h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = loss_fn(h, w)
    grads = torch.autograd.grad(loss, (h, w))
    return [loss.detach(), *grads]


def assert_all_close(actual: list[Tensor], expected: list[Tensor], tol: float) -> None:
    for name, a, e in zip(("loss", "d hidden", "d weight"), actual, expected, strict=True):
        assert a.dtype == e.dtype, name
        try:
            torch.testing.assert_close(a, e, rtol=tol, atol=tol)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


def inputs(batch: int = 2, seq: int = 7, d_model: int = 16, vocab: int = 23, seed: int = 0) -> tuple[Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, d_model, generator=generator)
    weight = torch.randn(vocab, d_model, generator=generator) * 0.5
    ids = torch.randint(0, vocab, (batch, seq + 1), generator=generator)
    return hidden, weight, ids


@pytest.mark.parametrize("one_more_id", [False, True], ids=["ids (batch, seq)", "ids (batch, seq+1)"])
@pytest.mark.parametrize(
    "chunks",
    [{}, {"chunk_rows": 3}, {"chunk_rows": 1}, {"chunk_rows": 100}, {"chunk_rows": 5, "chunk_vocab": 4}],
    ids=["default", "rows not dividing", "one row", "rows beyond all", "vocab chunked too"],
)
def test_loss_and_gradients_equal_the_plain_path(one_more_id: bool, chunks: dict[str, int]) -> None:
    hidden, weight, window = inputs()
    ids = window if one_more_id else window[:, :-1]
    actual = loss_and_grads(lambda h, w: fused(h, w, ids, **chunks), hidden, weight)
    assert_all_close(actual, loss_and_grads(lambda h, w: plain_loss(h, w, ids), hidden, weight), 1e-5)


def test_ignore_index_positions_are_not_scored() -> None:
    hidden, weight, window = inputs()
    window[0, 2:5] = -1
    window[1, -1] = -1
    expected = loss_and_grads(lambda h, w: plain_loss(h, w, window, ignore_index=-1), hidden, weight)
    actual = loss_and_grads(lambda h, w: fused(h, w, window, ignore_index=-1), hidden, weight)
    assert_all_close(actual, expected, 1e-5)
    actual = loss_and_grads(
        lambda h, w: fused(h, w, window, ignore_index=-1, chunk_rows=2, chunk_vocab=5), hidden, weight
    )
    assert_all_close(actual, expected, 1e-5)


def test_every_position_ignored_gives_nan_and_zero_gradients_like_torch() -> None:
    hidden, weight, window = inputs(seq=3)
    window[:, 1:] = -100
    actual = loss_and_grads(lambda h, w: fused(h, w, window), hidden, weight)
    expected = loss_and_grads(lambda h, w: plain_loss(h, w, window), hidden, weight)
    assert actual[0].isnan() and expected[0].isnan()
    for a, e in zip(actual[1:], expected[1:], strict=True):
        assert torch.equal(a, e) and not a.any()


def test_a_scaled_loss_scales_the_gradients() -> None:
    hidden, weight, window = inputs()
    actual = loss_and_grads(lambda h, w: 3.0 * fused(h, w, window, chunk_rows=4), hidden, weight)
    assert_all_close(actual, loss_and_grads(lambda h, w: 3.0 * plain_loss(h, w, window), hidden, weight), 1e-5)


def test_tied_head_gradient_adds_up_with_the_embedding_use() -> None:
    """The head weight is also the embedding table: its total gradient equals plain autograd's."""
    _, table, window = inputs(vocab=19)
    mix = torch.randn(16, 16, generator=torch.Generator().manual_seed(1)) * 0.3
    ids = window[:, :-1]

    def through_embedding(head: Callable[[Tensor, Tensor], Tensor]) -> list[Tensor]:
        weight, w_mix = table.clone().requires_grad_(), mix.clone().requires_grad_()
        hidden = torch.tanh(F.embedding(ids, weight) @ w_mix)
        loss = head(hidden, weight)
        return [loss.detach(), *torch.autograd.grad(loss, (weight, w_mix))]

    actual = through_embedding(lambda h, w: fused(h, w, ids, chunk_rows=3))
    assert_all_close(actual, through_embedding(lambda h, w: plain_loss(h, w, ids)), 1e-5)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gpt2_hidden_states_and_head_weight_give_its_logits_loss_and_gradients(tie: bool) -> None:
    cfg = tl.CausalConfig(
        batch=2, seq_len=8, vocab=40, heads=2, head_dim=4, ffn_hidden=16, layers=1, tie_embeddings=tie
    )
    model = tl.models.GPT2(cfg, seed=3)
    ids = torch.randint(0, cfg.vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(F.linear(model.hidden_states(ids), model.head_weight), model(ids))
    assert (model.head_weight is model.embed.weight) == tie

    def param_grads(loss: Tensor) -> list[Tensor]:
        return [loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))]

    actual = param_grads(fused(model.hidden_states(ids), model.head_weight, ids, chunk_rows=5))
    expected = param_grads(tl.losses.next_token_cross_entropy(model(ids), ids))
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_matches_the_plain_path_under_the_same_autocast() -> None:
    hidden, weight, window = inputs(batch=3, seq=20, d_model=32, vocab=300)

    def under_autocast(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        def run(h: Tensor, w: Tensor) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return loss_fn(h, w)

        return run

    actual = loss_and_grads(under_autocast(lambda h, w: fused(h, w, window, chunk_rows=7)), hidden, weight)
    expected = loss_and_grads(under_autocast(lambda h, w: plain_loss(h, w, window)), hidden, weight)
    assert [t.dtype for t in actual] == [torch.float32] * 3  # the inputs' dtypes
    assert_all_close(actual, expected, 2e-2)
    full_precision = loss_and_grads(lambda h, w: plain_loss(h, w, window), hidden, weight)
    assert (actual[0] - full_precision[0]).abs() > 0  # the chunk logits were computed in bf16


def test_bf16_inputs_get_bf16_gradients() -> None:
    hidden, weight, window = (t.bfloat16() if t.is_floating_point() else t for t in inputs())
    actual = loss_and_grads(lambda h, w: fused(h, w, window, chunk_rows=4), hidden, weight)
    expected = loss_and_grads(lambda h, w: plain_loss(h, w, window), hidden, weight)
    assert [t.dtype for t in actual[1:]] == [torch.bfloat16] * 2
    assert_all_close([actual[0].float(), *actual[1:]], [expected[0].float(), *expected[1:]], 2e-2)


def test_without_grad_the_loss_alone_is_computed() -> None:
    hidden, weight, window = inputs()
    with torch.no_grad():
        loss = fused(hidden, weight, window, chunk_rows=3, chunk_vocab=6)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, plain_loss(hidden, weight, window), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunks", [{"rows_per_chunk": 2}, {"rows_per_chunk": 3, "vocab_per_chunk": 2}, {}])
def test_gradcheck_float64(chunks: dict[str, int]) -> None:
    hidden = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, -100, 3, 3])
    assert torch.autograd.gradcheck(lambda h, w: fused_head_cross_entropy(h, w, targets, **chunks), (hidden, weight))


class _LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch leaves TorchDispatchMode.__init__ unannotated
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def test_no_tensor_as_large_as_the_logits_is_made() -> None:
    hidden, weight, window = inputs(batch=4, seq=16, d_model=8, vocab=500)
    h, w = hidden.requires_grad_(), weight.requires_grad_()
    with _LargestTensor() as seen:
        fused(h, w, window, chunk_rows=8).backward()
    assert seen.largest == weight.numel()  # the weight's gradient; a chunk of logits is 8 × 500
    with _LargestTensor() as seen:
        plain_loss(h, w, window).backward()
    assert seen.largest == 4 * 16 * 500  # the reference does make the full logits


def test_default_chunks_fit_the_memory_budget() -> None:
    rows, vocab = chunk_sizes(8 * 1024, 50_257, None, None)
    assert vocab == 50_257 and rows * vocab * 4 <= CHUNK_BYTES < (rows + 1) * vocab * 4
    rows, vocab = chunk_sizes(8 * 1024, 4_000_000, None, None)  # a few rows would exceed it: chunk the vocab
    assert vocab < 4_000_000 and rows * vocab * 4 <= CHUNK_BYTES and rows >= 64
    assert chunk_sizes(10, 50_257, None, None)[0] == 10
    assert chunk_sizes(1000, 50_257, 7, None) == (7, 50_257)


def test_bad_inputs_are_refused_naming_the_argument() -> None:
    hidden, weight, window = inputs(vocab=23)
    bad = window.clone()
    bad[1, 3] = 23
    with pytest.raises(tl.ShapeError, match=r"fused_next_token_cross_entropy: ids: token id 23 at position \(1, 3\)"):
        fused(hidden, weight, bad)
    with pytest.raises(tl.ShapeError, match=r"hidden expected \"batch seq d_model\" \(3 dims\), got 2 dims"):
        fused(hidden[0], weight, window)
    with pytest.raises(tl.ShapeError, match=r"head_weight expected .*d_model"):
        fused(hidden, weight[:, :5], window)
    with pytest.raises(tl.ShapeError, match="ids expected"):
        fused(hidden, weight, window[:, :-3])
    with pytest.raises(tl.ConfigError, match="chunk_rows=0 must be at least 1"):
        fused(hidden, weight, window, chunk_rows=0)
