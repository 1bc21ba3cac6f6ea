"""Decoding: extend prompts token by token with a causal model, reusing keys and values through a KV cache.

The model is any ``Layer[TokenIds, Logits]``: `typedlm.models.GPT2`, a ``>>`` chain from token ids to
logits, or a user's own. What it offers decides how it decodes:

- ``forward(ids, start_pos)`` and attention layers that hold a cache (``self.cache: AttentionCache |
  None = None``, calling ``k, v = self.cache.append(k, v)``; see `typedlm.kv_cache`): decoding with the
  KV cache (through the model's own ``kv_cache(batch)`` context when it has one);
- a forward without ``start_pos``: the window is recomputed at every step;
- ``forward(ids, start_pos, pad)``, ``pad`` being left-pad counts ``(batch,)``: prompts of different
  lengths, left-padded into one batch. A row's positions count its real tokens only and no query attends
  to its pad columns, so each row decodes as if alone. `Chain` and `Stack` pass ``pad`` on to the layers
  whose forward takes it (positions, attention, blocks); every cacheable attention layer must take it
  (`typedlm.nn.padded_causal_mask` gives the mask it needs). A model that does not take part is refused
  (a `ConfigError`, not a slow row-by-row fallback) for prompts of different lengths; prompts of one
  length decode as before, without ``pad``, at the same speed.

Prompts are a ``(batch, seq)`` tensor of ids, that tensor with an HF-style ``attention_mask`` (True/1 on
real tokens, left-padded), or a list of prompts of any lengths (1-D tensors or lists of ids, left-padded
with id 0 here, see `left_pad`). How each next token is chosen is a `typedlm.sampling.Sampling`.

`stream_tokens` yields one ``(batch,)`` tensor of ids per step; `generate_tokens` returns the (padded)
prompts followed by them.

Context: the model sees at most ``cfg.seq_len`` tokens. A longer prompt is cropped to its last
``seq_len`` tokens (the returned ids still start with the whole prompt). Once prompt + generated tokens
exceed ``seq_len`` the window slides; positions are learned and absolute, so every token of a slid window
changes position and the window is recomputed in full at each step. Results are therefore identical to
recompute decoding (``kv_cache=False``); the cache only makes the steps before the window fills cheap.

End of text: with ``Sampling.stop_at_eot`` a sequence that emits ``eot_token`` is finished; later steps
give it ``eot_token`` again (padding) and decoding stops once every sequence of the batch has finished.
The default ``eot_token="auto"`` is GPT-2's ``<|endoftext|>`` (50256) for a 50,257-token vocabulary and no
end token otherwise.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Bool, Int, Int64
from torch import Tensor

from typedlm.errors import ConfigError, ShapeError
from typedlm.kv_cache import AttentionCache, attached_kv_cache, cacheable_attention
from typedlm.layer import Layer
from typedlm.sampling import EotToken, Sampling, sample_next
from typedlm.shapes import Logits, TokenIds
from typedlm.token_ids import ids_validated

__all__ = ["GPT2_EOT", "Prompts", "default_eot_token", "generate_tokens", "left_pad", "pad_counts", "stream_tokens"]

GPT2_EOT = 50256
"""``<|endoftext|>`` in GPT-2's 50,257-token BPE vocabulary."""

CausalModel = Layer[TokenIds, Logits]
"""What decodes: token ids ``(batch, seq)`` to logits ``(batch, seq, vocab)``, sized by its ``cfg``."""

Prompts = Int[Tensor, "batch seq"] | Sequence[Int[Tensor, " seq"] | Sequence[int]]
"""A ``(batch, seq)`` tensor of ids, or a list of prompts of any lengths (1-D tensors or lists of ids)."""

AttentionMask = Int[Tensor, "batch seq"] | Bool[Tensor, "batch seq"]
"""HF-style: True (or 1) on a prompt's tokens, False (0) on the left padding before them."""


def default_eot_token(vocab: int) -> int | None:
    """GPT-2's end-of-text id for GPT-2's vocabulary size (50,257), else None (no end token)."""
    return GPT2_EOT if vocab == GPT2_EOT + 1 else None


def _resolve_eot(eot_token: EotToken, vocab: int) -> int | None:
    if eot_token == "auto":
        return default_eot_token(vocab)
    if eot_token is not None and not 0 <= eot_token < vocab:
        raise ConfigError(f"eot_token={eot_token}: must be an id in 0..{vocab - 1} (cfg.vocab = {vocab}) or None")
    return eot_token


# --- prompts: one tensor, a tensor and its attention mask, or a list of prompts of any lengths --------


def left_pad(
    prompts: Sequence[Int[Tensor, " seq"] | Sequence[int]], *, pad_id: int = 0, device: torch.device | None = None
) -> tuple[Int64[Tensor, "batch longest"], Bool[Tensor, "batch longest"]]:
    """Prompts of any lengths as one batch, each row left-padded with ``pad_id`` to the longest, and the
    attention mask (True on each prompt's own tokens)."""
    given: object = prompts  # checked at runtime: a caller without mypy may pass anything
    if isinstance(given, Tensor | str) or not isinstance(given, Sequence):
        raise ShapeError(f"prompts: expected a list of 1-D tensors or id lists, got {type(given).__name__}")
    if not prompts:
        raise ConfigError("prompts: an empty list; need at least one prompt")
    rows = [_prompt_row(prompt, index, device) for index, prompt in enumerate(prompts)]
    longest = max(row.shape[0] for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.int64, device=rows[0].device)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool, device=rows[0].device)
    for index, row in enumerate(rows):
        ids[index, longest - row.shape[0] :] = row
        mask[index, longest - row.shape[0] :] = True
    return ids, mask


def _holds_ids(t: Tensor) -> bool:
    """Whether ``t``'s dtype is one of token ids (an integer type, not bool)."""
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


def _prompt_row(prompt: Tensor | Sequence[int], index: int, device: torch.device | None) -> Tensor:
    """Prompt ``index`` of a list as a 1-D int64 tensor, refused with a one-line error if it is not one."""
    given: object = prompt  # checked at runtime: a caller without mypy may pass anything
    if isinstance(given, Tensor):
        if given.dim() != 1 or not _holds_ids(given):
            got = f"{tuple(given.shape)} {given.dtype}"
            raise ShapeError(f"prompts[{index}]: expected a 1-D tensor of token ids, got shape {got}")
        row = given.to(dtype=torch.int64, device=device)
    elif isinstance(given, Sequence) and not isinstance(given, str) and all(_is_id(i) for i in given):
        row = torch.tensor(list(given), dtype=torch.int64, device=device)
    else:
        hint = " (one prompt is a list of lists: [[1, 2, 3]])" if _is_id(given) else ""
        raise ShapeError(f"prompts[{index}]: expected a 1-D tensor or a list of int token ids, got {given!r:.60}{hint}")
    if row.shape[0] == 0:
        raise ConfigError(f"prompts[{index}]: an empty prompt; every prompt needs at least one token")
    return row


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pad_counts(attention_mask: AttentionMask, ids: Int[Tensor, "batch seq"] | None = None) -> Int64[Tensor, " batch"]:
    """The number of left-pad columns of each row of an HF-style mask (True/1 on real tokens).

    Refused with a one-line error: another shape than ``ids``', values other than 0/1, a row that is
    right-padded or has a gap (a 0 after a 1), a row with no real token.
    """
    where = "attention_mask"
    if not isinstance(attention_mask, Tensor):
        raise ShapeError(
            f"{where}: expected a (batch, seq) tensor of True/False or 1/0, got {type(attention_mask).__name__}"
        )
    if ids is not None and attention_mask.shape != ids.shape:
        raise ShapeError(
            f"{where}: shape {tuple(attention_mask.shape)} must be the prompt ids' shape {tuple(ids.shape)}"
        )
    if attention_mask.dim() != 2 or attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
        raise ShapeError(
            f"{where}: expected a (batch, seq) tensor of True/False or 1/0, got shape "
            f"{tuple(attention_mask.shape)} {attention_mask.dtype}"
        )
    if attention_mask.dtype != torch.bool:
        if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
            raise ConfigError(f"{where}: holds values other than 0 and 1 (1 marks a prompt's tokens)")
        attention_mask = attention_mask.bool()
    real = attention_mask.sum(dim=1)
    if not bool(real.all()):
        row = int((real == 0).nonzero()[0])
        raise ConfigError(f"{where}: row {row} is all False/0; every prompt needs at least one token")
    gaps = attention_mask[:, :-1] & ~attention_mask[:, 1:]  # a real token followed by padding
    if bool(gaps.any()):
        row = int(gaps.any(dim=1).nonzero()[0])
        raise ConfigError(
            f"{where}: row {row} has padding after a token (right-padded or with a gap); prompts must be "
            "left-padded: False/0 first, then True/1 to the end of the row"
        )
    return attention_mask.shape[1] - real


def _as_batch(
    model: CausalModel, prompts: Prompts, attention_mask: AttentionMask | None
) -> tuple[Tensor, AttentionMask | None]:
    """``(batch, seq)`` prompt ids and their mask (None: no padding); a list is left-padded on the model's device."""
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2 or not _holds_ids(prompts):
            got = f"{tuple(prompts.shape)} {prompts.dtype}"
            raise ShapeError(f"prompt ids: expected a (batch, seq) tensor of token ids, got shape {got}")
        return prompts, attention_mask
    if attention_mask is not None:
        raise ConfigError("attention_mask: only with a (batch, seq) tensor of ids; a list of prompts is padded here")
    weight = next(iter(model.parameters()), None)
    return left_pad(prompts, device=None if weight is None else weight.device)


def _readable_and_pad(ids: Tensor, attention_mask: AttentionMask | None) -> tuple[Tensor, Tensor | None]:
    """The ids the model may read (pad columns set to 0: pad ids may be any value) and the pad counts,
    None when no row is padded."""
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ConfigError(f"prompt ids of shape {tuple(ids.shape)}: need at least one sequence of at least one token")
    if attention_mask is None:
        return ids, None
    pad = pad_counts(attention_mask, ids).to(ids.device)
    if not bool(pad.any()):
        return ids, None
    return ids.masked_fill(~attention_mask.bool().to(ids.device), 0), pad


def _check_decodable(model: CausalModel) -> None:
    """Decoding reads the vocabulary and the context length from the model's config."""
    cfg = getattr(model, "cfg", None)
    for field in ("vocab", "seq_len"):
        value = getattr(cfg, field, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"generate: {type(model).__name__}.cfg has no int field {field!r} (got {type(cfg).__name__}): a "
                "decoded model is built from a config with vocab and seq_len, such as a CausalConfig"
            )


def _check_request(model: CausalModel, ids: Tensor, max_new_tokens: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r}: must be an int >= 0")
    low, high = torch.stack(torch.aminmax(ids)).tolist()
    if low < 0 or high >= model.cfg.vocab:
        bad = low if low < 0 else high
        raise ShapeError(
            f"generate: the prompt holds token id {bad}, outside the vocabulary 0..{model.cfg.vocab - 1} "
            f"(cfg.vocab={model.cfg.vocab})"
        )


def _takes_pad(module: torch.nn.Module) -> bool:
    return "pad" in inspect.signature(module.forward).parameters


def _check_takes_part_in_padding(model: CausalModel) -> None:
    """Refuse a model that cannot be told where each row's padding is (prompts of different lengths)."""
    fix = "pass prompts of one length, or decode them one at a time"
    name = type(model).__name__
    if not _takes_pad(model) or not getattr(model, "passes_pad", True):
        raise ConfigError(
            f"generate: prompts of different lengths need a model whose forward takes pad (left-pad counts, "
            f"as forward(ids, start_pos, pad)); {name}'s does not: {fix}"
        )
    for layer in cacheable_attention(model):
        if not _takes_pad(layer):
            raise ConfigError(
                f"generate: prompts of different lengths need every attention layer to take pad; "
                f"{type(layer).__name__}.forward of {name} does not: {fix}"
            )


# --- decoding -------------------------------------------------------------------------------------------


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


def stream_tokens(
    model: CausalModel,
    prompts: Prompts,
    max_new_tokens: int,
    sampling: Sampling | None = None,
    *,
    attention_mask: AttentionMask | None = None,
    kv_cache: bool = True,
) -> Iterator[Int64[Tensor, " batch"]]:
    """Yield the next id of each of the ``batch`` prompts, up to ``max_new_tokens`` times.

    ``prompts``: a ``(batch, seq)`` tensor of ids (left-padded when ``attention_mask`` marks padding), or a
    list of prompts of any lengths. ``sampling`` (default ``Sampling()``: temperature 1, all tokens, stop
    at GPT-2's end of text) says how each token is chosen. ``kv_cache=False`` recomputes the whole window
    at every step (the reference the cache must match). Everything is checked here, before the first
    token; while the iterator is open the model's KV cache is active, so exhaust or ``close()`` it.
    """
    settings = Sampling() if sampling is None else sampling
    if not isinstance(settings, Sampling):
        raise ConfigError(f"sampling: expected a typedlm.sampling.Sampling, got {type(settings).__name__}")
    _check_decodable(model)
    ids, pad = _readable_and_pad(*_as_batch(model, prompts, attention_mask))
    _check_request(model, ids, max_new_tokens)
    if pad is not None:
        _check_takes_part_in_padding(model)
    eot = _resolve_eot(settings.eot_token, model.cfg.vocab) if settings.stop_at_eot else None
    return _decode(model, ids, pad, max_new_tokens, settings, eot, kv_cache)


def _without_dropped_columns(pad: Tensor | None, dropped: int) -> Tensor | None:
    """The pad counts once a window's first ``dropped`` columns are gone; None when no row is padded."""
    if pad is None or dropped == 0:
        return pad
    pad = (pad - dropped).clamp(min=0)
    return pad if bool(pad.any()) else None


def _decode(
    model: CausalModel,
    prompt: Tensor,
    pad: Tensor | None,
    max_new_tokens: int,
    settings: Sampling,
    eot: int | None,
    kv_cache: bool,
) -> Iterator[Tensor]:
    """The decoding loop behind `stream_tokens` (a generator, so nothing runs before the first ``next``)."""
    seq_len = model.cfg.seq_len
    seed = settings.seed
    generator = None if seed is None else torch.Generator(device=prompt.device).manual_seed(seed)
    window = prompt
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    was_training = model.training
    model.eval()
    try:
        with _kv_cache(model, prompt.shape[0]) if kv_cache else contextlib.nullcontext(None) as caches:
            cached = bool(caches)
            for step in range(max_new_tokens):
                with torch.inference_mode(), ids_validated():  # the prompt was checked; samples are in range
                    if step == 0 or not cached or window.shape[1] > seq_len:
                        pad = _without_dropped_columns(pad, max(window.shape[1] - seq_len, 0))
                        window = window[:, -seq_len:]
                        for cache in caches or ():
                            cache.rewind(0)
                        logits = _forward(model, window, 0, pad)  # the whole window, at positions 0..seq-1
                    else:  # only the newest token; the cache holds the keys and values of the others
                        logits = _forward(model, window[:, -1:], window.shape[1] - 1, pad)
                    token = sample_next(
                        logits,
                        temperature=settings.effective_temperature,
                        top_k=settings.top_k,
                        top_p=settings.top_p,
                        generator=generator,
                    )
                    if eot is not None:
                        token = token.masked_fill(finished, eot)
                        finished |= token == eot
                    window = torch.cat([window, token[:, None]], dim=1)
                yield token.clone()  # a normal tensor, usable outside inference mode
                if eot is not None and bool(finished.all()):
                    return
    finally:
        model.train(was_training)


def _forward(model: CausalModel, ids: Tensor, start_pos: int, pad: Tensor | None) -> Tensor:
    """The logits of the last column, ``(batch, vocab)``; ``start_pos`` and ``pad`` only where needed."""
    if pad is not None:
        logits = model(ids, start_pos, pad=pad) if start_pos else model(ids, pad=pad)
    else:
        logits = model(ids, start_pos) if start_pos else model(ids)
    return logits[:, -1]


def generate_tokens(
    model: CausalModel,
    prompts: Prompts,
    max_new_tokens: int,
    sampling: Sampling | None = None,
    *,
    attention_mask: AttentionMask | None = None,
    kv_cache: bool = True,
) -> Int64[Tensor, "batch total"]:
    """The prompts ``(batch, seq)`` followed by up to ``max_new_tokens`` generated ids: ``(batch, seq + new)``.

    A list of prompts comes back left-padded with id 0 to the longest (as `left_pad` gives); a tensor
    comes back as given, its padding included. Fewer than ``max_new_tokens`` are added only when every
    sequence has emitted the end-of-text id (``Sampling.stop_at_eot``); a sequence that finished earlier
    is padded with it. Arguments as in `stream_tokens`.
    """
    ids, attention_mask = _as_batch(model, prompts, attention_mask)
    steps = stream_tokens(model, ids, max_new_tokens, sampling, attention_mask=attention_mask, kv_cache=kv_cache)
    new = list(steps)
    return torch.cat([ids.long(), *(token[:, None] for token in new)], dim=1)
