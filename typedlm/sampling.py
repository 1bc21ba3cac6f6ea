"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus) sampling.

`Sampling` holds the settings of one decoding run (how to choose, the seed, when a sequence ends);
``sample_next`` is a pure function over one row of logits per sequence. `typedlm.generate` (the
KV-cached decoding loop behind ``GPT2.generate``) builds on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from typedlm.errors import ConfigError, NonFiniteError


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse sampling settings that make no sense, naming the field."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature):
        raise ConfigError(f"temperature={temperature!r}: must be a finite number >= 0 (0 = greedy)")
    if temperature < 0:
        raise ConfigError(f"temperature={temperature!r}: must be >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k={top_k!r}: must be an int >= 1, or None for all tokens")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p={top_p!r}: must be a number in (0, 1], or None for no nucleus cut")


EotToken = int | Literal["auto"] | None
"""An end-of-text id, ``"auto"`` (GPT-2's for GPT-2's vocabulary, else none) or None (no end token)."""


@dataclass(frozen=True)
class Sampling:
    """How `typedlm.generate` chooses each next token, and when a sequence ends.

    ``greedy`` (or ``temperature == 0``) takes the argmax; otherwise the logits are divided by
    ``temperature``, cut to the ``top_k`` largest and to the smallest set of mass ``top_p``, and sampled
    from a generator seeded with ``seed`` (the same seed gives the same tokens) or from torch's global
    generator when ``seed`` is None. With ``stop_at_eot`` a sequence that emits ``eot_token`` is finished.
    Each field is checked when the object is made (a `ConfigError` naming it); ``eot_token`` is checked
    against the model's vocabulary when decoding starts.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int | None = None
    stop_at_eot: bool = True
    eot_token: EotToken = "auto"

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        for name in ("greedy", "stop_at_eot"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be True or False")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed={self.seed!r}: must be an int >= 0, or None for torch's global generator")
        eot = self.eot_token
        if eot not in ("auto", None) and (isinstance(eot, bool) or not isinstance(eot, int) or eot < 0):
            raise ConfigError(f"eot_token={eot!r}: must be a token id >= 0, 'auto' or None")

    @property
    def effective_temperature(self) -> float:
        """0.0 (argmax) when ``greedy``, else ``temperature``."""
        return 0.0 if self.greedy else self.temperature


def check_logits(logits: Float[Tensor, "batch vocab"]) -> None:
    """Refuse logits holding NaN or +inf, or a row with no finite entry: no distribution to sample from.

    One reduction on the happy path (a row's max is finite exactly when the row is usable); the
    message is worked out only when a row is not.
    """
    if bool(torch.isfinite(logits.amax(dim=-1)).all()):
        return
    bad = logits.isnan() | logits.isposinf()
    bad |= ~logits.isfinite().any(dim=-1, keepdim=True)
    row, column = (int(i) for i in bad.nonzero()[0])
    raise NonFiniteError(
        f"sample_next: logits[{row}, {column}] is {float(logits[row, column])} (row {row} has "
        f"{int(logits[row].isnan().sum())} NaN and {int(logits[row].isfinite().sum())} finite values of "
        f"{logits.shape[-1]}): the model's output is not a distribution; check its weights (NaN or infinite "
        "after training or loading?)"
    )


def sample_next(
    logits: Float[Tensor, "batch vocab"],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Int64[Tensor, " batch"]:
    """One next-token id per row. ``temperature == 0`` is greedy (argmax); otherwise the logits are
    divided by ``temperature``, cut to the ``top_k`` largest, then to the smallest set whose
    probability reaches ``top_p``, and sampled."""
    check_sampling(temperature, top_k, top_p)
    check_logits(logits)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p; the first token always stays.
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
