"""Losses over `Logits`; each returns a scalar ``Float[Tensor, ""]`` averaged over the scored positions."""

import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from typedlm.checks import checked
from typedlm.errors import ConfigError
from typedlm.fused_head_loss import fused_head_cross_entropy
from typedlm.token_ids import check_token_ids

__all__ = [
    "cross_entropy_indexed",
    "cross_entropy_one_hot",
    "fused_next_token_cross_entropy",
    "masked_cross_entropy",
    "next_token_cross_entropy",
]


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
def fused_next_token_cross_entropy(
    hidden: Float[Tensor, "batch seq d_model"],
    head_weight: Float[Tensor, "vocab d_model"],
    ids: Int[Tensor, "batch seq"] | Int[Tensor, "batch seq+1"],
    ignore_index: int = -100,
    *,
    chunk_rows: int | None = None,
    chunk_vocab: int | None = None,
) -> Float[Tensor, ""]:
    """`next_token_cross_entropy` of the logits ``F.linear(hidden, head_weight)``, never building them.

    ``hidden`` are the final hidden states (after the last LayerNorm, `typedlm.models.GPT2.hidden_states`),
    ``head_weight`` the head's ``(vocab, d_model)`` table (`GPT2.head_weight`, shared with the embedding
    when tied); ``ids`` and ``ignore_index`` as in `next_token_cross_entropy`. The loss and its gradients
    are computed ``chunk_rows`` positions (and ``chunk_vocab`` vocabulary entries) at a time, by default
    sized so a chunk's logits stay under 64 MiB; see `typedlm.fused_head_loss`.
    """
    _check_chunk("chunk_rows", chunk_rows)
    _check_chunk("chunk_vocab", chunk_vocab)
    vocab = head_weight.shape[0]
    check_token_ids(
        ids, vocab, where="fused_next_token_cross_entropy: ids", source="head_weight's vocab", ignore_index=ignore_index
    )
    if ids.shape[1] > hidden.shape[1]:  # (batch, seq+1): every position has its next id
        targets = ids[:, 1:]
    else:  # (batch, seq): the last position has no next id; it is scored as ignored (no copy of hidden)
        targets = F.pad(ids[:, 1:], (0, 1), value=ignore_index)
    return fused_head_cross_entropy(
        hidden.reshape(-1, hidden.shape[-1]),
        head_weight,
        targets.reshape(-1),
        ignore_index,
        rows_per_chunk=chunk_rows,
        vocab_per_chunk=chunk_vocab,
    )


def _check_chunk(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(
            f"fused_next_token_cross_entropy: {name}={value} must be at least 1 (or None: fitted to memory)"
        )


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
