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
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

Forward = Callable[[Tensor], object]


def _close(a: Tensor, b: Tensor) -> bool:
    scale = max(1.0, float(a.abs().max()) if a.numel() else 1.0)
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale))


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
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; the module's own mode is restored after."""
    was_training = module.training
    module.eval()
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
    return out.float()


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
    """None if feeding ``ids`` one token at a time through the KV cache gives the full forward's logits."""
    full = _output(model, ids)
    steps = []
    with model.kv_cache(ids.shape[0]):  # type: ignore[operator]  # decodes_with_cache checked it is callable
        for t in range(ids.shape[1]):
            steps.append(_output(functools.partial(model, start_pos=t), ids[:, t : t + 1]))
    for t, step in enumerate(steps):
        if not _close(full[:, t : t + 1], step):
            diff = float((full[:, t : t + 1] - step).abs().max())
            return (
                f"decoding token by token with the KV cache differs from one full forward at position {t} "
                f"(max |diff| {diff:.3g})"
            )
    return None


class _Oracle(Layer[TokenIds, Logits]):
    """A stand-in token model that is sure of one id per position: the id it reads (``shift = 0``) or
    the next one (``shift = 1``, which only a model that peeks ahead could know)."""

    causal = False

    def __init__(self, cfg: Any, shift: int) -> None:
        super().__init__(cfg)
        self.shift = shift

    def forward(self, ids: Int[Tensor, "batch seq"], start_pos: int = 0) -> Float[Tensor, "batch seq vocab"]:
        target = torch.cat([ids[:, self.shift :], ids[:, -1:].expand(-1, self.shift)], dim=1)
        return 20.0 * torch.nn.functional.one_hot(target, self.cfg.vocab).float()


def next_token_targets(loss_of: Callable[[Layer[Any, Any]], object], cfg: Any) -> str | None:
    """None if ``loss_of(model)`` rewards predicting the next id more than copying the current one."""
    copy_loss, next_loss = (loss_of(_Oracle(cfg, shift)) for shift in (0, 1))
    if not (isinstance(copy_loss, Tensor) and isinstance(next_loss, Tensor) and copy_loss.numel() == 1):
        return None
    if float(copy_loss) <= float(next_loss):
        return (
            f"the loss is {float(copy_loss):.3g} for a model that copies its input and {float(next_loss):.3g} for one "
            "that predicts the next token: the targets are not shifted (use tl.losses.next_token_cross_entropy)"
        )
    return None
