"""Decoding: extend prompts token by token with a causal model, reusing keys and values through a KV cache.

The model is any ``Layer[TokenIds, Logits]``: `typedlm.models.GPT2`, a ``>>`` chain from token ids to
logits, or a user's own. One whose forward takes ``start_pos`` and whose attention layers can hold a
cache (a ``cache`` attribute, as `typedlm.nn.CausalSelfAttention`) decodes with the cache (the model's
own ``kv_cache(batch)`` context when it has one); any other recomputes its window at every step.

`stream_tokens` yields one ``(batch,)`` tensor of ids per step; `generate_tokens` collects them after the
prompt. Each next token comes from `typedlm.sampling.sample_next` (greedy, temperature, top-k, top-p).

Context: the model sees at most ``cfg.seq_len`` tokens. A longer prompt is cropped to its last
``seq_len`` tokens (the returned ids still start with the whole prompt). Once prompt + generated tokens
exceed ``seq_len`` the window slides; positions are learned and absolute, so every token of a slid window
changes position and the window is recomputed in full at each step. Results are therefore identical to
recompute decoding (``kv_cache=False``); the cache only makes the steps before the window fills cheap.

End of text: with ``stop_at_eot`` a sequence that emits ``eot_token`` is finished; later steps give it
``eot_token`` again (padding) and decoding stops once every sequence of the batch has finished. The
default ``eot_token="auto"`` is GPT-2's ``<|endoftext|>`` (50256) for a 50,257-token vocabulary and no
end token otherwise.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Literal

import torch
from jaxtyping import Int, Int64
from torch import Tensor

from typedlm.checks import checked
from typedlm.errors import ConfigError, ShapeError
from typedlm.kv_cache import AttentionCache, attached_kv_cache
from typedlm.layer import Layer
from typedlm.sampling import check_sampling, sample_next
from typedlm.shapes import Logits, TokenIds
from typedlm.token_ids import ids_validated

__all__ = ["GPT2_EOT", "default_eot_token", "generate_tokens", "stream_tokens"]

GPT2_EOT = 50256
"""``<|endoftext|>`` in GPT-2's 50,257-token BPE vocabulary."""

EotToken = int | Literal["auto"] | None


def default_eot_token(vocab: int) -> int | None:
    """GPT-2's end-of-text id for GPT-2's vocabulary size (50,257), else None (no end token)."""
    return GPT2_EOT if vocab == GPT2_EOT + 1 else None


def _resolve_eot(eot_token: EotToken, vocab: int) -> int | None:
    if eot_token == "auto":
        return default_eot_token(vocab)
    if eot_token is not None and not 0 <= eot_token < vocab:
        raise ConfigError(f"eot_token={eot_token}: must be an id in 0..{vocab - 1} (cfg.vocab = {vocab}) or None")
    return eot_token


def _check_request(model: CausalModel, ids: Tensor, max_new_tokens: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r}: must be an int >= 0")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ConfigError(f"prompt ids of shape {tuple(ids.shape)}: need at least one sequence of at least one token")
    low, high = torch.stack(torch.aminmax(ids)).tolist()
    if low < 0 or high >= model.cfg.vocab:
        bad = low if low < 0 else high
        raise ShapeError(
            f"generate: the prompt holds token id {bad}, outside the vocabulary 0..{model.cfg.vocab - 1} "
            f"(cfg.vocab={model.cfg.vocab})"
        )


CausalModel = Layer[TokenIds, Logits]
"""What decodes: token ids ``(batch, seq)`` to logits ``(batch, seq, vocab)``, sized by its ``cfg``."""


@contextlib.contextmanager
def _kv_cache(model: CausalModel, batch: int) -> Iterator[list[AttentionCache]]:
    """A KV cache for ``model``'s attention layers; empty (recompute decoding) when it cannot use one."""
    if "start_pos" not in inspect.signature(model.forward).parameters:
        yield []  # it cannot be told which positions a single new token is at
        return
    own = getattr(model, "kv_cache", None)
    if callable(own):  # the model's own context (GPT2's checks start_pos against the cache)
        with own(batch) as caches:
            yield list(caches)
        return
    with attached_kv_cache(model, model.cfg, batch) as caches:
        yield caches


@checked
def stream_tokens(
    model: CausalModel,
    ids: Int[Tensor, "batch seq"],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    stop_at_eot: bool = True,
    eot_token: EotToken = "auto",
    seed: int | None = None,
    kv_cache: bool = True,
) -> Iterator[Int64[Tensor, " batch"]]:
    """Yield the next id of each of the ``batch`` prompts, up to ``max_new_tokens`` times.

    ``greedy`` (or ``temperature == 0``) takes the argmax; otherwise sampling uses ``temperature``,
    ``top_k`` and ``top_p``, drawing from a generator seeded with ``seed`` when given (so the same seed
    gives the same tokens) or from torch's global generator. ``kv_cache=False`` recomputes the whole
    window at every step (the reference the cache must match). Settings are checked here, before the
    first token; while the iterator is open the model's KV cache is active, so exhaust or ``close()`` it.
    """
    check_sampling(temperature, top_k, top_p)
    _check_request(model, ids, max_new_tokens)
    eot = _resolve_eot(eot_token, model.cfg.vocab) if stop_at_eot else None
    return _decode(model, ids, max_new_tokens, 0.0 if greedy else temperature, top_k, top_p, eot, seed, kv_cache)


def _decode(
    model: CausalModel,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eot: int | None,
    seed: int | None,
    kv_cache: bool,
) -> Iterator[Tensor]:
    """The decoding loop behind `stream_tokens` (a generator, so nothing runs before the first ``next``)."""
    seq_len = model.cfg.seq_len
    generator = None if seed is None else torch.Generator(device=prompt.device).manual_seed(seed)
    window = prompt[:, -seq_len:]
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    was_training = model.training
    model.eval()
    try:
        with _kv_cache(model, prompt.shape[0]) if kv_cache else contextlib.nullcontext(None) as caches:
            cached = bool(caches)
            for step in range(max_new_tokens):
                with torch.inference_mode(), ids_validated():  # the prompt was checked; samples are in range
                    if step == 0 or not cached or window.shape[1] > seq_len:
                        window = window[:, -seq_len:]
                        for cache in caches or ():
                            cache.rewind(0)
                        logits = model(window)[:, -1]  # the whole window, at positions 0..seq-1
                    else:  # only the newest token; the cache holds the keys and values of the others
                        logits = model(window[:, -1:], window.shape[1] - 1)[:, -1]
                    token = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                    if eot is not None:
                        token = token.masked_fill(finished, eot)
                        finished |= token == eot
                    window = torch.cat([window, token[:, None]], dim=1)
                yield token.clone()  # a normal tensor, usable outside inference mode
                if eot is not None and bool(finished.all()):
                    return
    finally:
        model.train(was_training)


@checked
def generate_tokens(
    model: CausalModel,
    ids: Int[Tensor, "batch seq"],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    stop_at_eot: bool = True,
    eot_token: EotToken = "auto",
    seed: int | None = None,
    kv_cache: bool = True,
) -> Int64[Tensor, "batch total"]:
    """The prompt ``(batch, seq)`` followed by up to ``max_new_tokens`` generated ids: ``(batch, seq + new)``.

    Fewer than ``max_new_tokens`` are added only when every sequence has emitted ``eot_token`` (with
    ``stop_at_eot``); a sequence that finished earlier is padded with ``eot_token``. Arguments as in
    `stream_tokens`.
    """
    steps = stream_tokens(
        model,
        ids,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        stop_at_eot=stop_at_eot,
        eot_token=eot_token,
        seed=seed,
        kv_cache=kv_cache,
    )
    new = list(steps)
    return torch.cat([ids.long(), *(token[:, None] for token in new)], dim=1)
