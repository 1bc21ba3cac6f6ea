"""Losses over `Logits`; each returns a scalar ``Float[Tensor, ""]`` averaged over the scored positions."""

import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from typedlm.checks import checked
from typedlm.token_ids import check_token_ids

__all__ = ["cross_entropy_indexed", "cross_entropy_one_hot", "masked_cross_entropy", "next_token_cross_entropy"]


@checked
def cross_entropy_one_hot(
    logits: Float[Tensor, "batch seq vocab"], targets: Float[Tensor, "batch seq vocab"]
) -> Float[Tensor, ""]:
    """Mean over positions of ``-sum(targets * log_softmax(logits))``; targets are one-hot (or soft) rows."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@checked
def cross_entropy_indexed(
    logits: Float[Tensor, "batch seq vocab"],
    targets: Int[Tensor, "batch seq"] | Int[Tensor, "batch*seq"],  # noqa: F821  # "batch*seq" is a jaxtyping dim expression
    ignore_index: int = -100,
) -> Float[Tensor, ""]:
    """Mean next-token loss for integer ``targets`` of shape (batch, seq) or flattened (batch*seq).

    Picks each target's log-probability by gather; no one-hot targets are built. Positions whose target
    is ``ignore_index`` are not scored.
    """
    _check_targets(targets, logits, "cross_entropy_indexed: targets", ignore_index)
    return F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1), ignore_index=ignore_index)


@checked
def next_token_cross_entropy(
    logits: Float[Tensor, "batch seq vocab"],
    ids: Int[Tensor, "batch seq"] | Int[Tensor, "batch seq+1"],
    ignore_index: int = -100,
) -> Float[Tensor, ""]:
    """Mean loss of predicting each next token: the logits at position t are scored against ``ids[:, t+1]``.

    ``ids`` are the ids the model read, ``(batch, seq)``, and the shift is done here, so targets can
    neither be forgotten nor shifted twice (the last position has no next id and is not scored). To
    score every position, pass the ids the model read followed by one more id each, ``(batch, seq+1)``
    (the windows the trainer samples, ``sample_windows``, whose ``[:, :-1]`` the model read).
    """
    _check_targets(ids, logits, "next_token_cross_entropy: ids", ignore_index)
    targets = ids[:, 1:]
    scored = logits if ids.shape[1] > logits.shape[1] else logits[:, :-1]
    return F.cross_entropy(scored.reshape(-1, scored.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)


@checked
def masked_cross_entropy(
    logits: Float[Tensor, "batch seq vocab"], targets: Int[Tensor, "batch seq"], mask: Bool[Tensor, "batch seq"]
) -> Float[Tensor, ""]:
    """Mean loss over the positions where ``mask`` is True (e.g. the answer half of a sorting task)."""
    _check_targets(targets, logits, "masked_cross_entropy: targets", None)
    per_position = F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1), reduction="none")
    weights = mask.reshape(-1).to(per_position.dtype)
    return (per_position * weights).sum() / weights.sum().clamp(min=1.0)


def _check_targets(targets: Tensor, logits: Tensor, where: str, ignore_index: int | None) -> None:
    """Every target id (``ignore_index`` aside) must index a row of the logits' vocabulary."""
    check_token_ids(targets, logits.shape[-1], where=where, source="logits' vocab", ignore_index=ignore_index)
