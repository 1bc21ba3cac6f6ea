"""Dim names of `typedlm.checked` functions: a name nothing binds is refused when the function is decorated,
like a layer's when its class is created; every name an argument binds, ``batch``/``seq``, declared
``free_dims`` and ``_``-prefixed names are known, and still checked on calls."""

import re
import threading

import pytest
import torch
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl


def test_a_misspelt_result_dim_is_refused_at_decoration_listing_the_known_ones() -> None:
    with pytest.raises(tl.ShapeError) as caught:

        @tl.checked
        def project(
            x: Float[Tensor, "batch seq d_model"], w: Float[Tensor, "d_model ffn"]
        ) -> Float[Tensor, "batch seq ffn_hidden"]:
            return x @ w

    message = str(caught.value)
    assert message.startswith("checked function ")
    assert "project: its result is annotated \"batch seq ffn_hidden\": unknown dim 'ffn_hidden'" in message
    assert "known: batch, seq, d_model, ffn (per call: a function has no config)" in message
    assert "free_dims=('ffn_hidden',)" in message and "_ffn_hidden" in message


def test_a_name_only_inside_an_argument_expression_is_refused() -> None:
    with pytest.raises(tl.ShapeError, match=r"argument pos is annotated \"batch sq\+1\": unknown dim 'sq'"):

        @tl.checked
        def shift(x: Float[Tensor, "batch seq"], pos: Float[Tensor, "batch sq+1"]) -> Float[Tensor, "batch seq"]:
            return x


def test_a_misspelt_dim_is_refused_even_with_checks_off() -> None:
    with tl.checks.mode("off"), pytest.raises(tl.ShapeError, match="unknown dim 'vocba'"):

        @tl.checked
        def head(x: Float[Tensor, "batch seq vocab"]) -> Float[Tensor, "batch seq vocba"]:
            return x


def test_names_bound_by_arguments_variadic_broadcast_underscored_and_declared_are_known() -> None:
    def top(x: Float[Tensor, "*lead n"], bias: Float[Tensor, "#n"], k: int) -> Float[Tensor, "*lead k"]:
        return (x + bias).topk(k).values

    with pytest.raises(tl.ShapeError, match="its result is annotated \"\\*lead k\": unknown dim 'k'"):
        tl.checked(top)
    values = tl.checked(free_dims=("k",))(top)(torch.ones(2, 3, 5), torch.zeros(1), 2)
    assert values.shape == (2, 3, 2)

    @tl.checked
    def flat(x: Float[Tensor, "*lead n"]) -> Float[Tensor, " _flat"]:
        return x.flatten()

    assert flat(torch.ones(2, 3, 5)).shape == (30,)

    @tl.checked
    def pair(x: Float[Tensor, "batch n"], y: Float[Tensor, "batch n+1"]) -> Float[Tensor, "batch 2*n+1"]:
        return torch.cat([x, y], dim=1)

    assert pair(torch.ones(2, 3), torch.ones(2, 4)).shape == (2, 7)
    with pytest.raises(tl.ShapeError, match=r"pair: y expected \"batch n\+1\": n\+1 = 4, got 5"):
        pair(torch.ones(2, 3), torch.ones(2, 5))


def test_a_result_dim_bound_by_an_argument_is_still_checked() -> None:
    @tl.checked
    def wrong(x: Float[Tensor, "batch n"], w: Float[Tensor, "n m"]) -> Float[Tensor, "batch m"]:
        return x  # the bug: not x @ w

    with pytest.raises(tl.ShapeError, match=r"wrong: its result expected \"batch m\": m = 4 \(fixed by w\), got m = 3"):
        wrong(torch.ones(2, 3), torch.ones(3, 4))


@pytest.mark.parametrize("free_dims", ["k", ("k", 3), ("not a name",)])
def test_free_dims_must_be_dim_names(free_dims: object) -> None:
    with pytest.raises(tl.ConfigError, match=r"checked\(free_dims=.*\): must be a tuple of dim names"):
        tl.checked(free_dims=free_dims)  # type: ignore[call-overload]  # the point: a wrong value at runtime


@pytest.mark.parametrize("bad", ["seq+", "(seq", "2seq", "seq()", "seq(1)"])
def test_a_malformed_dim_expression_is_refused_at_decoration(bad: str) -> None:
    with pytest.raises(tl.ShapeError, match=rf"the dim '{re.escape(bad)}' is not supported"):

        @tl.checked
        def f(x: Float[Tensor, f"batch {bad}"]) -> Float[Tensor, " batch"]:
            return x.sum(-1)


def test_checks_in_other_threads_keep_their_messages_while_a_union_is_tried() -> None:
    @tl.checked
    def either(ids: Int[Tensor, "batch 1"] | Int[Tensor, "batch seq"]) -> Tensor:
        return ids  # a wider ids fails the first alternative (quietly), then matches the second

    @tl.checked
    def strict(x: Float[Tensor, "batch 3"]) -> Tensor:
        return x

    stop = threading.Event()

    def tries_unions() -> None:
        size = 1
        while not stop.is_set():
            size = size % 50 + 1  # a new size each call: no remembered signature skips the check
            either(torch.zeros(1, size + 1, dtype=torch.long))

    other = threading.Thread(target=tries_unions)
    other.start()
    try:
        empty = 0
        for _ in range(3000):
            try:
                strict(torch.zeros(2, 4))
            except tl.ShapeError as error:
                empty += not str(error)
    finally:
        stop.set()
        other.join()
    assert empty == 0
