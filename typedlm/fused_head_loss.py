"""Cross-entropy of an LM head computed in chunks, so the ``(rows, vocab)`` logits never exist at once.

``fused_head_cross_entropy(hidden, weight, targets)`` equals
``F.cross_entropy(F.linear(hidden, weight), targets, ignore_index=..)`` (mean over the scored rows) with
its gradients, but works on ``rows_per_chunk`` rows at a time: each chunk's logits, their logsumexp, its
share of the loss and the gradients w.r.t. ``hidden`` and ``weight`` are computed in the forward pass
(as in Liger-Kernel's fused linear cross-entropy); only the two gradients are kept, and backward scales
them by the incoming gradient. Peak memory is one chunk's logits plus the ``weight``-sized gradient
instead of the full logits and their gradient.

Where even a few rows of logits exceed the budget (very large vocabularies) the vocabulary is chunked
too: a first pass over the vocabulary chunks gives each row's logsumexp, a second recomputes each
chunk's logits to form its gradient (one more matmul, so it is used only where the budget demands it).

Under autocast the chunk logits are computed in the autocast dtype (like ``F.linear`` would), the
softmax and logsumexp in float32, and the gradients are returned in the inputs' dtypes.
"""

from typing import Any

import torch
from torch import Tensor

__all__ = ["CHUNK_BYTES", "MIN_ROWS", "chunk_sizes", "fused_head_cross_entropy"]

CHUNK_BYTES = 64 * 2**20
"""Memory budget of one chunk's float32 logits (rows × vocab-chunk × 4 bytes)."""
MIN_ROWS = 64
"""Fewest rows per chunk before the vocabulary is chunked instead (fewer rows make the matmuls slow)."""


def chunk_sizes(rows: int, vocab: int, rows_per_chunk: int | None, vocab_per_chunk: int | None) -> tuple[int, int]:
    """``(rows_per_chunk, vocab_per_chunk)``: the given ones, the others fitted to `CHUNK_BYTES`.

    The whole vocabulary is one chunk unless fewer than `MIN_ROWS` rows (or the rows asked for, if fewer)
    of its logits fit the budget; then the vocabulary chunk is what fits beside those rows.
    """
    if vocab_per_chunk is None:
        rows_wanted = MIN_ROWS if rows_per_chunk is None else rows_per_chunk
        whole_vocab_fits = CHUNK_BYTES // (4 * vocab) >= min(rows_wanted, MIN_ROWS)
        vocab_per_chunk = vocab if whole_vocab_fits else CHUNK_BYTES // (4 * rows_wanted)
    if rows_per_chunk is None:
        rows_per_chunk = max(1, CHUNK_BYTES // (4 * vocab_per_chunk))
    return max(1, min(rows_per_chunk, rows)), max(1, min(vocab_per_chunk, vocab))


def fused_head_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    *,
    rows_per_chunk: int | None = None,
    vocab_per_chunk: int | None = None,
) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, chunked; a scalar.

    ``hidden`` ``(rows, d_model)``, ``weight`` ``(vocab, d_model)``, ``targets`` ``(rows,)`` integer ids,
    rows whose target is ``ignore_index`` not scored (all of them ignored: NaN, as ``F.cross_entropy``).
    Unchecked: `typedlm.losses.fused_next_token_cross_entropy` is the checked entry point.
    """
    rows, chunk_vocab = chunk_sizes(hidden.shape[0], weight.shape[0], rows_per_chunk, vocab_per_chunk)
    compute_dtype = _compute_dtype(hidden, weight)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedHeadCrossEntropy.apply(hidden, weight, targets, ignore_index, compute_dtype, rows, chunk_vocab)  # type: ignore[no-any-return,no-untyped-call]  # torch leaves Function.apply unannotated
    with torch.autocast(hidden.device.type, enabled=False):
        loss, _, _ = _loss_and_grads(
            hidden,
            weight,
            targets,
            ignore_index,
            compute_dtype,
            rows,
            chunk_vocab,
            grad_hidden=False,
            grad_weight=False,
        )
    return loss


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype ``F.linear(hidden, weight)`` would compute in here: autocast's if it applies."""
    device = hidden.device.type
    inputs = torch.promote_types(hidden.dtype, weight.dtype)
    if torch.is_autocast_enabled(device) and inputs != torch.float64:
        return torch.get_autocast_dtype(device)
    return inputs


class _FusedHeadCrossEntropy(torch.autograd.Function):
    """Loss in forward with both gradients; backward only scales them by the loss's gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        ignore_index: int,
        compute_dtype: torch.dtype,
        rows_per_chunk: int,
        vocab_per_chunk: int,
    ) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            loss, grad_hidden, grad_weight = _loss_and_grads(
                hidden, weight, targets, ignore_index, compute_dtype, rows_per_chunk, vocab_per_chunk,
                grad_hidden=hidden.requires_grad, grad_weight=weight.requires_grad,
            )  # fmt: skip
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        # Always a new tensor (no test of grad_loss == 1, which would wait for an accelerator): autograd
        # can hand it to ``.grad`` as it is, and the stored gradients stay intact for a retained graph.
        grads = tuple(None if grad is None else grad * grad_loss.to(grad.dtype) for grad in ctx.saved_tensors)
        return *grads, None, None, None, None, None


def _loss_and_grads(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int,
    compute_dtype: torch.dtype,
    rows_per_chunk: int,
    vocab_per_chunk: int,
    *,
    grad_hidden: bool,
    grad_weight: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The mean loss, and the gradients of it asked for (summed in float32 or better, returned in
    ``hidden``'s and ``weight``'s dtypes)."""
    vocab = weight.shape[0]
    scored = targets != ignore_index
    scored_count = scored.sum()
    softmax_dtype = torch.promote_types(compute_dtype, torch.float32)  # float32, or float64 for float64 inputs
    grad_scale = 1.0 / scored_count.clamp(min=1).to(softmax_dtype)  # a tensor: no device sync
    safe_targets = targets.masked_fill(~scored, 0)
    w = weight.to(compute_dtype)
    d_hidden = torch.zeros(hidden.shape, dtype=softmax_dtype, device=hidden.device) if grad_hidden else None
    d_weight = torch.zeros(weight.shape, dtype=softmax_dtype, device=weight.device) if grad_weight else None
    loss_sum = torch.zeros((), dtype=softmax_dtype, device=hidden.device)
    vocab_chunks = [slice(begin, begin + vocab_per_chunk) for begin in range(0, vocab, vocab_per_chunk)]
    for start in range(0, hidden.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        h, row_targets, row_scored = hidden[rows].to(compute_dtype), safe_targets[rows], scored[rows]
        # pass 1: each row's logsumexp over the vocabulary and its target's logit
        lse = torch.full((h.shape[0],), float("-inf"), dtype=softmax_dtype, device=h.device)
        target_logit = torch.zeros(h.shape[0], dtype=softmax_dtype, device=h.device)
        for columns in vocab_chunks:
            logits = (h @ w[columns].T).to(softmax_dtype)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1))
            local, inside = _local_targets(row_targets, columns)
            target_logit += logits.gather(1, local[:, None]).squeeze(1) * inside
        loss_sum += ((lse - target_logit) * row_scored).sum()
        if not (grad_hidden or grad_weight):
            continue
        # pass 2: d loss / d logits = (softmax - one_hot(target)) / scored rows, then through the matmul
        row_weights = row_scored * grad_scale
        lse_less_log_weight = (lse - row_weights.log())[:, None]
        for columns in vocab_chunks:
            if len(vocab_chunks) > 1:  # one chunk: its logits are still there from pass 1
                logits = (h @ w[columns].T).to(softmax_dtype)
            local, inside = _local_targets(row_targets, columns)
            # softmax × row weight in one pass: exp(logit - lse + log(weight)); an ignored row's weight 0 gives 0
            d_logits = logits.sub_(lse_less_log_weight).exp_()
            d_logits.scatter_add_(1, local[:, None], -(row_weights * inside)[:, None])
            d_logits = d_logits.to(compute_dtype)
            if d_hidden is not None:
                d_hidden[rows] += d_logits @ w[columns]
            if d_weight is not None:
                _add_product(d_weight[columns], d_logits.T, h)
            del logits, d_logits
    loss = loss_sum / scored_count
    return (
        loss,
        None if d_hidden is None else d_hidden.to(hidden.dtype),
        None if d_weight is None else d_weight.to(weight.dtype),
    )


def _local_targets(targets: Tensor, columns: slice) -> tuple[Tensor, Tensor]:
    """Targets as column indices into the vocabulary chunk ``columns`` (0 where outside it), and which are inside."""
    local = targets - columns.start
    inside = (local >= 0) & (local < columns.stop - columns.start)
    return local.masked_fill(~inside, 0), inside


def _add_product(total: Tensor, a: Tensor, b: Tensor) -> None:
    """``total += a @ b`` in place: one pass over ``total`` when the dtypes agree (no ``total``-sized temporary)."""
    if a.dtype == total.dtype:
        total.addmm_(a, b)
    else:
        total += a @ b
