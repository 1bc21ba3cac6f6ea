"""Training a model through the fused head loss: the ``(batch, seq, vocab)`` logits never exist.

A model takes part by giving its final hidden states and its head's table (`typedlm.models.GPT2` does):
``model.hidden_states(ids) -> (batch, seq, d_model)`` and ``model.head_weight -> (vocab, d_model)``,
with ``forward(ids) == F.linear(hidden_states(ids), head_weight)``. The trainer then runs
`HiddenStates(model)` — so DDP's hooks and ``torch.compile`` see the computation that trains — and scores
it with `typedlm.losses.fused_next_token_cross_entropy`. Evaluation and sampling call the model as usual.
"""

from collections.abc import Callable
from typing import Protocol, cast

from jaxtyping import Float, Int, Int64
from torch import Tensor, nn

from typedlm import losses


class FusedHeadModel(Protocol):
    """What the fused loss needs of a model besides its forward."""

    @property
    def head_weight(self) -> Float[Tensor, "vocab d_model"]: ...

    def hidden_states(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq d_model"]: ...


def has_fused_head(model: nn.Module) -> bool:
    """Whether ``model`` gives ``hidden_states(ids)`` and a ``head_weight`` table for the fused loss, and
    its ``forward`` is the class's that defines them (a subclass overriding ``forward`` alone — soft-capped
    logits, say — trains on its own logits)."""
    hidden_states = getattr(type(model), "hidden_states", None)
    if not callable(hidden_states) or not isinstance(getattr(model, "head_weight", None), Tensor):
        return False
    owner = next(klass for klass in type(model).__mro__ if "hidden_states" in vars(klass))
    forward_owner = next(klass for klass in type(model).__mro__ if "forward" in vars(klass))
    return forward_owner is owner


class HiddenStates(nn.Module):
    """``model.hidden_states`` as a forward ``(batch, seq)`` ids → ``(batch, seq, d_model)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq d_model"]:
        return cast(FusedHeadModel, self.model).hidden_states(ids)


def fused_next_token_loss(model: nn.Module) -> Callable[[nn.Module, Tensor], Tensor]:
    """The loss ``loss(runner, windows)`` for a runner built on `HiddenStates` of ``model``: the runner
    reads ``windows[:, :-1]`` and every next id is scored against ``model.head_weight``."""

    def loss(runner: nn.Module, windows: Int64[Tensor, "batch seq_len+1"]) -> Tensor:
        hidden = runner(windows[:, :-1])
        return losses.fused_next_token_cross_entropy(hidden, cast(FusedHeadModel, model).head_weight, windows)

    return loss
