"""Model invariants, checked on tiny real tensors in eval mode with a fixed seed.

- causality: changing the input at position j changes no output at a position before j;
- batch independence: changing one sample changes no output of another sample;
- cached decoding: token-by-token decoding through the KV cache gives the logits of one full forward;
- next-token targets: a loss over a token model must reward predicting the *next* token, not the one
  the model was given.

Each returns None when the invariant holds, else a one-line description of the first violation.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

Forward = Callable[[Tensor], object]


def _close(a: Tensor, b: Tensor) -> bool:
    """Equal up to rounding in ``a``'s dtype (float32: 1e-4 relative; bfloat16: about 6e-2)."""
    rtol = max(1e-4, 8 * torch.finfo(a.dtype).eps) if a.dtype.is_floating_point else 0.0
    a, b = a.float(), b.float()
    scale = max(1.0, float(a.abs().max()) if a.numel() else 1.0)
    return bool(torch.allclose(a, b, rtol=rtol, atol=0.1 * rtol * scale))


def _changed(x: Tensor, index: tuple[Any, ...], generator: torch.Generator, vocab: int) -> Tensor:
    """``x`` with ``x[index]`` replaced by other values (other ids, for integer inputs)."""
    changed = x.clone()
    part = changed[index]
    if x.dtype.is_floating_point:
        changed[index] = part + torch.randn(part.shape, generator=generator).to(part) + 1.0
    elif x.dtype == torch.bool:
        changed[index] = ~part
    else:
        changed[index] = (part + torch.randint(1, max(vocab, 2), part.shape, generator=generator).to(part)) % max(
            vocab, 2
        )
    return changed


@contextlib.contextmanager
def running(module: torch.nn.Module, *, training: bool) -> Iterator[None]:
    """Training or eval mode and no gradients for the block; the module's own mode is restored after."""
    was_training = module.training
    module.train(training)
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _output(forward: Forward, x: Tensor) -> Tensor:
    torch.manual_seed(0)  # a layer that draws random numbers draws the same ones for both inputs
    out = forward(x)
    if not isinstance(out, Tensor):
        raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
    return out


def causality(forward: Forward, x: Tensor, *, in_axis: int, out_axis: int, vocab: int) -> str | None:
    """None if no output position ``i`` changes when input position ``j > i`` changes."""
    generator = torch.Generator().manual_seed(1)
    base = _output(forward, x)
    for j in range(1, x.shape[in_axis]):
        index = (slice(None),) * in_axis + (j,)
        out = _output(forward, _changed(x, index, generator, vocab))
        for i in range(min(j, base.shape[out_axis])):
            earlier = (slice(None),) * out_axis + (i,)
            if not _close(base[earlier], out[earlier]):
                return f"the output at position {i} changes when the input at position {j} changes"
    return None


def batch_independence(forward: Forward, x: Tensor, *, in_axis: int, out_axis: int, vocab: int) -> str | None:
    """None if changing sample ``j`` changes no output of any other sample."""
    generator = torch.Generator().manual_seed(2)
    base = _output(forward, x)
    for j in range(x.shape[in_axis]):
        out = _output(forward, _changed(x, (slice(None),) * in_axis + (j,), generator, vocab))
        for other in range(base.shape[out_axis]):
            index = (slice(None),) * out_axis + (other,)
            if other != j and not _close(base[index], out[index]):
                return f"the output of sample {other} changes when sample {j} changes (batch size {x.shape[in_axis]})"
    return None


def decodes_with_cache(model: Layer[Any, Any]) -> bool:
    """Whether ``model`` offers the KV-cache protocol: ``kv_cache(batch)`` and ``forward(ids, start_pos)``."""
    forward_params = inspect.signature(type(model).forward).parameters
    return callable(getattr(model, "kv_cache", None)) and "start_pos" in forward_params


def cached_decoding(model: Layer[Any, Any], ids: Tensor) -> str | None:
    """None if decoding ``ids`` through the KV cache gives the full forward's logits: one token at a
    time from the start, and a prefill of the first half followed by one token at a time."""
    full = _output(model, ids)
    seq = ids.shape[1]
    for prefill in (1, seq // 2):
        pieces = [(0, prefill)] + [(t, t + 1) for t in range(prefill, seq)]
        with model.kv_cache(ids.shape[0]):  # type: ignore[operator]  # decodes_with_cache checked it is callable
            steps = [_output(functools.partial(model, start_pos=start), ids[:, start:end]) for start, end in pieces]
        decoded = torch.cat(steps, dim=1)
        for t in range(seq):
            if not _close(full[:, t], decoded[:, t]):
                diff = float((full[:, t] - decoded[:, t]).abs().max())
                how = "one token at a time" if prefill == 1 else f"after a prefill of {prefill} tokens"
                return (
                    f"decoding with the KV cache ({how}) differs from one full forward at position {t} "
                    f"(max |diff| {diff:.3g})"
                )
    return None


class CopyOracle(Layer[TokenIds, Logits]):
    """A stand-in token model that is sure of the id it reads at each position (``shift = 0``)."""

    shift: ClassVar[int] = 0

    def forward(self, ids: Int[Tensor, "batch seq"], start_pos: int = 0) -> Float[Tensor, "batch seq vocab"]:
        seq = ids.shape[1]
        source = (torch.arange(seq, device=ids.device) + self.shift).clamp(0, seq - 1)
        return 20.0 * torch.nn.functional.one_hot(ids[:, source], self.cfg.vocab).float()


class PreviousOracle(CopyOracle):
    """Sure of the id *before* each position: it copies the past."""

    shift = -1


class NextOracle(CopyOracle):
    """Sure of the id *after* each position, which only a model that peeks ahead could know."""

    shift = 1
    causal = False


LEAK_MARGIN = 1.0
"""Nats by which another oracle must beat the next-token one before the targets are called wrong: a
loss that ignores its targets (a z-loss, an entropy bonus) scores every oracle the same and passes."""


def next_token_targets(loss_of: Callable[[Layer[Any, Any]], object], cfg: Any) -> str | None:
    """None unless ``loss_of(model)`` rewards copying the current or the previous id clearly more than
    predicting the next one: targets not shifted, or shifted the wrong way."""
    next_loss = loss_of(NextOracle(cfg))
    if not (isinstance(next_loss, Tensor) and next_loss.numel() == 1):
        return None
    for oracle, what, diagnosis in (
        (CopyOracle, "copies its input", "the targets are not shifted"),
        (PreviousOracle, "repeats the previous token", "the targets are shifted the wrong way"),
    ):
        other = loss_of(oracle(cfg))
        if isinstance(other, Tensor) and float(other) + LEAK_MARGIN < float(next_loss):
            return (
                f"the loss is {float(other):.3g} for a model that {what} and {float(next_loss):.3g} for one that "
                f"predicts the next token: {diagnosis} (use tl.losses.next_token_cross_entropy)"
            )
    return None


def non_finite_output(forward: Forward, x: Tensor) -> str | None:
    """None if a finite input gives a finite output."""
    out = _output(forward, x)
    if out.dtype.is_floating_point and not bool(torch.isfinite(out).all()):
        return f"a finite input of shape {tuple(x.shape)} gives NaN or infinite outputs"
    return None
