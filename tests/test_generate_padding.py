"""Prompts of different lengths decode in one left-padded batch exactly as each prompt alone.

References: the plainest decoder run on each prompt by itself (no padding, no cache: recompute the last
``seq_len`` ids, append the argmax), each row's full forward by itself (logits), and Hugging Face's
``generate`` on the same left-padded batch and weights.
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl
from typedlm.generate import generate_tokens, left_pad, pad_counts, stream_tokens
from typedlm.kv_cache import AttentionCache, attached_kv_cache
from typedlm.layer import Layer
from typedlm.nn import padded_causal_mask
from typedlm.shapes import Embedded, Logits, TokenIds

GREEDY = tl.Sampling(greedy=True)


pytestmark = pytest.mark.usefixtures("one_thread")


def _prompts(cfg: tl.CausalConfig, lengths: Sequence[int], seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, cfg.vocab, (n,), generator=generator) for n in lengths]


def _alone(model: Layer[TokenIds, Logits], prompt: Tensor, new: int) -> Tensor:
    """The plainest decoder on one prompt by itself: recompute the last ``seq_len`` ids, append the argmax."""
    ids = prompt[None]
    with torch.no_grad():
        for _ in range(new):
            ids = torch.cat([ids, model(ids[:, -model.cfg.seq_len :])[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0]


def _chain(
    cfg: tl.CausalConfig, block: Callable[[tl.CausalConfig, int], Layer[Embedded, Embedded]] | None = None
) -> Layer[TokenIds, Logits]:
    """The README's ``>>`` model, with the library's blocks or a user's ``block(cfg, index)``."""
    torch.manual_seed(5)
    blocks = [tl.nn.TransformerBlock(cfg, index=i) if block is None else block(cfg, i) for i in range(cfg.layers)]
    return (
        tl.nn.TokenEmbedding(cfg, seed=1)
        >> tl.nn.PositionalEmbedding(cfg, seed=1)
        >> tl.nn.Stack(blocks)
        >> tl.nn.LayerNorm(cfg)
        >> tl.nn.LMHead(cfg, seed=1)
    ).eval()


# --- a user's attention layer: grouped-query attention caching 2 key/value heads for 4 query heads -------


class GroupedQueryAttention(Layer[Embedded, Embedded]):
    """Queries in ``cfg.heads`` heads, keys and values in ``kv_heads`` heads, each shared by a group.

    Takes part in cached decoding (``self.cache``) and in padded decoding (``pad``), with the public API only.
    """

    def __init__(self, cfg: tl.CausalConfig, kv_heads: int = 2) -> None:
        super().__init__(cfg)
        self.kv_heads = kv_heads
        self.q = torch.nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = torch.nn.Linear(cfg.d_model, 2 * kv_heads * cfg.head_dim)
        self.out = torch.nn.Linear(cfg.d_model, cfg.d_model)
        self.cache: AttentionCache | None = None

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        batch, seq, d_model = x.shape
        q = self.q(x).view(batch, seq, self.cfg.heads, self.cfg.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(batch, seq, 2, self.kv_heads, self.cfg.head_dim).permute(2, 0, 3, 1, 4)
        start = 0
        if self.cache is not None:
            start = self.cache.length
            k, v = self.cache.append(k, v)  # (batch, kv_heads, start + seq, head_dim)
        group = self.cfg.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if pad is not None:
            mask = padded_causal_mask(seq, start + seq, pad)
        else:
            mask = torch.ones(seq, start + seq, dtype=torch.bool, device=x.device).tril(start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out: Tensor = self.out(y.transpose(1, 2).reshape(batch, seq, d_model))
        return out


class GroupedQueryBlock(Layer[Embedded, Embedded]):
    def __init__(self, cfg: tl.CausalConfig, index: int) -> None:
        super().__init__(cfg)
        self.ln_1, self.attn, self.ln_2 = tl.nn.LayerNorm(cfg), GroupedQueryAttention(cfg), tl.nn.LayerNorm(cfg)
        self.mlp = tl.nn.MLP(cfg, seed=index)

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], pad: Int[Tensor, " batch"] | None = None
    ) -> Float[Tensor, "batch seq d_model"]:
        x = x + self.attn(self.ln_1(x), pad)
        return x + self.mlp(self.ln_2(x))


class NoPadBlock(Layer[Embedded, Embedded]):
    """A user's block whose attention caches keys but cannot be told about padding."""

    def __init__(self, cfg: tl.CausalConfig, index: int) -> None:
        super().__init__(cfg)
        self.attn = NoPadAttention(cfg)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x + self.attn(x)


class NoPadAttention(GroupedQueryAttention):
    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:  # type: ignore[override]  # drops pad on purpose
        return super().forward(x)


# --- decoding a padded batch = decoding each prompt alone ----------------------------------------------


MODELS = ["gpt2", "chain", "grouped-query chain"]


def _model(kind: str, cfg: tl.CausalConfig, *, wide: bool = True) -> Layer[TokenIds, Logits]:
    """A model of ``kind`` (`_widened` unless ``wide`` is False)."""
    if kind == "gpt2":
        model: Layer[TokenIds, Logits] = tl.models.GPT2(cfg, seed=3).eval()
    else:
        model = _chain(cfg, GroupedQueryBlock if kind == "grouped-query chain" else None)
    return _widened(model) if wide else model


M = TypeVar("M", bound=torch.nn.Module)


def _widened(model: M) -> M:
    """``model`` with its weight matrices 15 times wider than GPT-2's init, so that greedy decoding wanders
    over the vocabulary and attending to a pad column would change the tokens."""
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.mul_(15.0)
    return model


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("kv_cache", [True, False], ids=["cache", "recompute"])
def test_a_padded_batch_decodes_each_prompt_as_alone(kind: str, kv_cache: bool, cfg: tl.CausalConfig) -> None:
    """Prompts of 35, 1 and 20 tokens, 20 new tokens each: the 35-token prompt is cropped to ``seq_len`` =
    32, the batch's window slides (padding leaves it), and the 20-token prompt's own window slides too."""
    model = _model(kind, cfg)
    lengths = (35, 1, 20)
    prompts = _prompts(cfg, lengths)
    out = generate_tokens(model, prompts, 20, GREEDY, kv_cache=kv_cache)
    longest = max(lengths)
    assert out.shape == (3, longest + 20)
    assert all(len(set(row.tolist())) > 5 for row in out[:, longest:])  # real decoding, not one repeated token
    for row, prompt in enumerate(prompts):
        expected = _alone(model, prompt, 20)
        assert torch.equal(out[row, longest - len(prompt) :], expected), f"row {row} (length {len(prompt)})"
        assert torch.equal(out[row, : longest - len(prompt)], torch.zeros(longest - len(prompt), dtype=torch.long))


def test_a_left_padded_tensor_with_an_hf_attention_mask_decodes_like_the_list(cfg: tl.CausalConfig) -> None:
    """Pad ids may be any value (here 255 and -100); they come back as given."""
    model = _widened(tl.models.GPT2(cfg, seed=3).eval())
    prompts = _prompts(cfg, (4, 1, 6), seed=1)
    ids, mask = left_pad(prompts)
    ids = ids.masked_fill(~mask, 255)
    ids[1, 0] = -100
    out = model.generate(ids, 12, GREEDY, attention_mask=mask.long())
    assert torch.equal(out[:, :6], ids)
    for row, prompt in enumerate(prompts):
        assert torch.equal(out[row, 6 - len(prompt) :], _alone(model, prompt, 12))
    streamed = torch.stack(list(model.stream(ids, 12, GREEDY, attention_mask=mask)), dim=1)
    assert torch.equal(streamed, out[:, 6:])


def test_prompts_of_one_length_keep_the_unpadded_path(cfg: tl.CausalConfig) -> None:
    """A list of equal prompts, or an all-True mask, calls the model without ``pad``."""
    model = tl.models.GPT2(cfg, seed=3).eval()
    seen: list[bool] = []
    model.register_forward_hook(lambda _m, args, kwargs, _out: seen.append("pad" in kwargs), with_kwargs=True)
    prompts = _prompts(cfg, (4, 4))
    out = generate_tokens(model, prompts, 3, GREEDY, attention_mask=None)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert torch.equal(out, generate_tokens(model, torch.stack(prompts), 3, GREEDY, attention_mask=mask))
    assert seen and not any(seen)


@pytest.mark.parametrize("kind", MODELS)
def test_padded_logits_match_each_row_alone_with_and_without_the_cache(kind: str, cfg: tl.CausalConfig) -> None:
    """Forward over a padded batch (whole, or a 6-column prefill then one column at a time with the KV
    cache): each row's logits at its real tokens equal the row's own forward, within 1e-5 (GPT-2's init)."""
    model = _model(kind, cfg, wide=False)
    rows = _prompts(cfg, (12, 1, 7), seed=2)
    ids, mask = left_pad(rows)
    pad = pad_counts(mask)
    with torch.no_grad():
        whole = model(ids, 0, pad=pad)
        with attached_kv_cache(model, cfg, 3) as caches:
            steps = [model(ids[:, :6], 0, pad=pad)] + [model(ids[:, t : t + 1], t, pad=pad) for t in range(6, 12)]
        assert [cache.length for cache in caches] and all(cache.length == 12 for cache in caches)
        for row, (tokens, padding) in enumerate(zip(rows, pad.tolist(), strict=True)):
            alone = model(tokens[None])[0]
            torch.testing.assert_close(whole[row, padding:], alone, atol=1e-5, rtol=0)
            torch.testing.assert_close(torch.cat(steps, dim=1)[row, padding:], alone, atol=1e-5, rtol=0)


def test_a_padded_batch_gives_hugging_faces_tokens(tmp_path: Path) -> None:
    """Hugging Face's greedy ``generate`` on the same left-padded batch and weights (its position ids
    count real tokens only, as ours)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=101, n_positions=48, n_embd=48, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, initializer_range=0.3, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    reference: Any = torch.nn.Module.eval(transformers.GPT2LMHeadModel(config))
    reference.save_pretrained(tmp_path)
    model = tl.hf.load_gpt2(tmp_path)
    ids, mask = left_pad(_prompts(model.cfg, (6, 1, 3), seed=4))
    expected = reference.generate(ids, attention_mask=mask.long(), max_new_tokens=15, do_sample=False, pad_token_id=0)
    ours = model.generate(ids, 15, GREEDY, attention_mask=mask)
    assert len(set(ours[:, 6:].flatten().tolist())) > 5  # real decoding, not one repeated token
    assert torch.equal(ours, expected)


# --- the grouped-query layer: a cached head count other than cfg.heads -----------------------------------


def test_a_user_attention_layer_caching_fewer_heads_decodes_with_the_cache_like_recompute(
    cfg: tl.CausalConfig,
) -> None:
    model = _model("grouped-query chain", cfg)
    prompt = _prompts(cfg, (5, 5))
    calls: list[int] = []
    model.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[1]))
    cached = generate_tokens(model, torch.stack(prompt), 12, GREEDY)
    assert calls[0] == 5 and set(calls[1:]) == {1}  # one prefill, then one new token per step: cached
    assert torch.equal(cached, generate_tokens(model, torch.stack(prompt), 12, GREEDY, kv_cache=False))
    for row in range(2):
        assert torch.equal(cached[row], _alone(model, prompt[row], 12))
    with torch.no_grad(), attached_kv_cache(model, cfg, 2) as caches:
        model(torch.stack(prompt))
    assert {cache.keys.shape for cache in caches if cache.keys is not None} == {(2, 2, cfg.seq_len, cfg.head_dim)}


# --- models that cannot take part, and bad prompts or masks: one-line errors before decoding -------------


def test_a_model_that_cannot_be_told_the_padding_is_refused_for_prompts_of_different_lengths(
    cfg: tl.CausalConfig,
) -> None:
    class IdsOnly(tl.Layer[TokenIds, Logits]):
        def __init__(self, cfg: tl.CausalConfig) -> None:
            super().__init__(cfg)
            self.inner = tl.models.GPT2(cfg, seed=1)

        def forward(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
            return self.inner(ids)

    prompts = _prompts(cfg, (3, 2))
    with pytest.raises(tl.ConfigError, match=r"forward takes pad .*IdsOnly's does not") as error:
        stream_tokens(IdsOnly(cfg), prompts, 4)
    assert "\n" not in str(error.value)
    with pytest.raises(tl.ConfigError, match=r"every attention layer to take pad; NoPadAttention.forward of Chain"):
        generate_tokens(_chain(cfg, NoPadBlock), prompts, 4)
    assert generate_tokens(IdsOnly(cfg), _prompts(cfg, (3, 3)), 2).shape == (2, 5)  # one length: no padding


BAD_MASKS: list[tuple[str, Any, type[Exception], str]] = [
    ("right-padded", [[1, 1, 1], [1, 1, 0]], tl.ConfigError, "row 1 has padding after a token .right-padded"),
    ("a gap", [[1, 1, 1], [0, 1, 0]], tl.ConfigError, "row 1 has padding after a token"),
    ("an all-false row", [[0, 0, 0], [1, 1, 1]], tl.ConfigError, "row 0 is all False/0"),
    ("wrong shape", [[1, 1], [1, 1]], tl.ShapeError, r"shape \(2, 2\) must be the prompt ids' shape \(2, 3\)"),
    ("values other than 0/1", [[2, 1, 1], [1, 1, 1]], tl.ConfigError, "values other than 0 and 1"),
    ("floats", torch.ones(2, 3), tl.ShapeError, "True/False or 1/0, got shape"),
    ("not a tensor", "all", tl.ShapeError, "attention_mask: expected a .batch, seq. tensor"),
]


@pytest.mark.parametrize(("mask", "error", "message"), [case[1:] for case in BAD_MASKS], ids=[c[0] for c in BAD_MASKS])
def test_bad_attention_masks_are_refused_with_one_line(
    mask: Any, error: type[Exception], message: str, cfg: tl.CausalConfig
) -> None:
    model = tl.models.GPT2(cfg).eval()
    mask = torch.tensor(mask) if isinstance(mask, list) else mask
    with pytest.raises(error, match=message) as raised:
        stream_tokens(model, torch.ones(2, 3, dtype=torch.long), 4, attention_mask=mask)
    assert "\n" not in str(raised.value)


BAD_PROMPTS: list[tuple[str, Any, type[Exception], str]] = [
    ("an empty list", [], tl.ConfigError, "an empty list; need at least one prompt"),
    ("an empty prompt", [[1, 2], []], tl.ConfigError, r"prompts\[1\]: an empty prompt"),
    ("one flat list", [1, 2, 3], tl.ShapeError, r"prompts\[0\]: expected .* got 1 \(one prompt is a list of lists"),
    ("a 2-D row", [torch.ones(2, 2, dtype=torch.long)], tl.ShapeError, r"prompts\[0\]: expected a 1-D tensor"),
    ("float ids", [torch.ones(3)], tl.ShapeError, r"prompts\[0\]: expected a 1-D tensor of token ids"),
    ("a 1-D tensor", torch.ones(3, dtype=torch.long), tl.ShapeError, r"prompt ids: expected a \(batch, seq\)"),
    ("an id past vocab", [[1], [2, 256]], tl.ShapeError, "token id 256, outside the vocabulary 0..255"),
]


@pytest.mark.parametrize(
    ("prompts", "error", "message"), [case[1:] for case in BAD_PROMPTS], ids=[c[0] for c in BAD_PROMPTS]
)
def test_bad_prompts_are_refused_with_one_line(
    prompts: Any, error: type[Exception], message: str, cfg: tl.CausalConfig
) -> None:
    with pytest.raises(error, match=message) as raised:
        generate_tokens(tl.models.GPT2(cfg), prompts, 4)
    assert "\n" not in str(raised.value)


def test_a_model_whose_config_has_no_vocab_or_seq_len_is_refused_naming_the_field() -> None:
    class Stateless(tl.Layer[Literal["batch seq"], Literal["batch seq vocab", "logits"]]):
        free_dims = ("vocab",)

        def forward(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
            return torch.zeros(*ids.shape, 5)

    with pytest.raises(tl.ConfigError, match=r"^generate: Stateless\.cfg has no int field 'vocab' \(got NoneType\)"):
        tl.generate.generate_tokens(Stateless(), torch.zeros(1, 3, dtype=torch.long), 2)
