"""Decoding with `typedlm.generate`: KV cache = recompute, cropping, sliding, batches, streaming, seeds, EOT."""

import dataclasses

import pytest
import torch
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl
from typedlm.generate import default_eot_token, generate_tokens, stream_tokens
from typedlm.shapes import Logits, TokenIds

GREEDY = tl.Sampling(greedy=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(cfg: tl.CausalConfig) -> tl.models.GPT2:
    return tl.models.GPT2(cfg, seed=3).eval()


def _prompt(cfg: tl.CausalConfig, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_kv_cache_decoding_gives_the_tokens_of_recompute_decoding(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    prompt = _prompt(cfg, 2, 5)
    cached = generate_tokens(model, prompt, 40, GREEDY)  # 5 + 40 > seq_len = 32: the window slides
    assert cached.shape == (2, 45)
    assert torch.equal(cached, generate_tokens(model, prompt, 40, GREEDY, kv_cache=False))
    assert torch.equal(cached, _argmax_reference(model, prompt, 40, cfg.seq_len))


def _argmax_reference(model: tl.Layer[TokenIds, Logits], ids: torch.Tensor, new: int, seq_len: int) -> torch.Tensor:
    """The plainest decoder: recompute the last ``seq_len`` ids, append the argmax, repeat."""
    with torch.no_grad():
        for _ in range(new):
            ids = torch.cat([ids, model(ids[:, -seq_len:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def test_seeded_sampling_is_deterministic_and_the_same_with_or_without_the_cache(model: tl.models.GPT2) -> None:
    prompt = _prompt(model.cfg, 1, 4)
    sampling = tl.Sampling(temperature=1.5, top_k=50, top_p=0.95, seed=7)
    first = generate_tokens(model, prompt, 20, sampling)
    assert torch.equal(first, generate_tokens(model, prompt, 20, sampling))
    assert torch.equal(first, generate_tokens(model, prompt, 20, sampling, kv_cache=False))
    assert not torch.equal(first, generate_tokens(model, prompt, 20, dataclasses.replace(sampling, seed=8)))


def test_a_seed_leaves_the_global_generator_alone(model: tl.models.GPT2) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    generate_tokens(model, _prompt(model.cfg, 1, 3), 5, tl.Sampling(seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_a_long_prompt_is_cropped_to_the_last_seq_len_tokens(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    prompt = _prompt(cfg, 1, cfg.seq_len + 13)
    out = generate_tokens(model, prompt, 6, GREEDY)
    assert torch.equal(out[:, : prompt.shape[1]], prompt)  # the whole prompt comes back
    cropped = generate_tokens(model, prompt[:, -cfg.seq_len :], 6, GREEDY)
    assert torch.equal(out[:, prompt.shape[1] :], cropped[:, cfg.seq_len :])


def test_a_batch_decodes_each_prompt_as_if_alone(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    prompts = _prompt(cfg, 3, 6)
    together = generate_tokens(model, prompts, 30, GREEDY)
    for row in range(3):
        alone = generate_tokens(model, prompts[row : row + 1], 30, GREEDY)
        assert torch.equal(together[row : row + 1], alone)


def test_stream_yields_the_generated_tokens_one_step_at_a_time(model: tl.models.GPT2) -> None:
    prompt = _prompt(model.cfg, 2, 4)
    steps = model.stream(prompt, 12, GREEDY)
    first = next(steps)
    assert first.shape == (2,) and first.dtype == torch.int64
    rest = list(steps)
    assert len(rest) == 11
    expected = model.generate(prompt, 12, GREEDY)
    assert torch.equal(torch.stack([first, *rest], dim=1), expected[:, 4:])


def test_closing_a_stream_early_releases_the_cache(model: tl.models.GPT2) -> None:
    steps = stream_tokens(model, _prompt(model.cfg, 1, 4), 10, GREEDY)
    next(steps)
    assert all(block.attn.cache is not None for block in model.transformer.blocks)  # type: ignore[union-attr]  # TransformerBlocks
    steps.close()  # type: ignore[attr-defined]  # the iterator is a generator
    assert all(block.attn.cache is None for block in model.transformer.blocks)  # type: ignore[union-attr]  # TransformerBlocks
    model(_prompt(model.cfg, 2, 3))  # an ordinary call works again


def test_stop_at_eot_pads_finished_sequences_and_stops_when_all_have_finished(model: tl.models.GPT2) -> None:
    prompt = _prompt(model.cfg, 2, 4, seed=5)
    free = generate_tokens(model, prompt, 20, tl.Sampling(greedy=True, stop_at_eot=False))[:, 4:]
    eot = int(free[0, 3])  # a token that row 0 emits; the rows stop at its first occurrence, if any
    ends = [int((row == eot).nonzero()[0]) + 1 if bool((row == eot).any()) else 20 for row in free]
    expected = free[:, : max(ends)].clone()
    for row, end in enumerate(ends):
        expected[row, end:] = eot
    stopped = generate_tokens(model, prompt, 20, tl.Sampling(greedy=True, eot_token=eot))[:, 4:]
    assert torch.equal(stopped, expected)
    assert torch.equal(
        generate_tokens(model, prompt, 20, tl.Sampling(greedy=True, eot_token=eot, stop_at_eot=False))[:, 4:], free
    )


def test_the_default_end_of_text_is_gpt2s_for_gpt2s_vocabulary_only() -> None:
    assert default_eot_token(50257) == 50256
    assert default_eot_token(256) is None


def test_zero_new_tokens_gives_back_the_prompt(model: tl.models.GPT2) -> None:
    prompt = _prompt(model.cfg, 2, 3)
    assert torch.equal(generate_tokens(model, prompt, 0), prompt)


def test_generation_runs_in_eval_mode_and_restores_training_mode(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg.replace(dropout=0.5), seed=3).train()
    prompt = _prompt(cfg, 1, 4)
    out = generate_tokens(model, prompt, 10, GREEDY)
    assert model.training
    assert torch.equal(out, generate_tokens(model.eval(), prompt, 10, GREEDY))


def test_bad_requests_are_refused_before_decoding(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    prompt = _prompt(cfg, 1, 3)
    with pytest.raises(tl.ConfigError, match="max_new_tokens=-1"):
        generate_tokens(model, prompt, -1)
    with pytest.raises(tl.ConfigError, match=r"sampling: expected a typedlm.sampling.Sampling, got dict"):
        stream_tokens(model, prompt, 5, {"temperature": 1.0})  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(tl.ConfigError, match="attention_mask: only with a"):
        stream_tokens(model, [[1, 2]], 5, attention_mask=torch.ones(1, 2, dtype=torch.bool))  # refused at the call
    with pytest.raises(tl.ShapeError, match=r"token id 256, outside the vocabulary 0..255 \(cfg.vocab=256\)"):
        generate_tokens(model, torch.tensor([[1, 256]]), 5)
    with pytest.raises(tl.ConfigError, match=r"eot_token=300"):
        generate_tokens(model, prompt, 5, tl.Sampling(eot_token=300))
    with pytest.raises(tl.ConfigError, match="at least one token"):
        generate_tokens(model, prompt[:, :0], 5)
    with pytest.raises(tl.ShapeError, match="ids"):
        generate_tokens(model, prompt[0], 5)


def test_a_chain_of_layers_decodes_with_the_kv_cache_like_gpt2(cfg: tl.CausalConfig) -> None:
    """A ``>>`` model from token ids to logits is a model `generate` decodes, with a KV cache: its tokens
    equal the plain recompute decoder's, and GPT2's with the same weights."""
    embed, pos, norm, head = (
        tl.nn.TokenEmbedding(cfg),
        tl.nn.PositionalEmbedding(cfg),
        tl.nn.LayerNorm(cfg),
        tl.nn.LMHead(cfg),
    )
    blocks = tl.nn.Stack([tl.nn.TransformerBlock(cfg, index=i) for i in range(cfg.layers)])
    chain = (embed >> pos >> blocks >> norm >> head).eval()
    prompt = _prompt(cfg, 2, 5)
    calls: list[int] = []
    chain.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[1]))
    cached = generate_tokens(chain, prompt, 12, GREEDY)
    assert calls[0] == 5 and set(calls[1:]) == {1}  # one full window, then one new token per step: cached
    assert torch.equal(cached, _argmax_reference(chain, prompt, 12, cfg.seq_len))
    sampled = generate_tokens(chain, prompt, 12, tl.Sampling(top_k=5, seed=7))
    assert torch.equal(sampled, generate_tokens(chain, prompt, 12, tl.Sampling(top_k=5, seed=7), kv_cache=False))
    gpt2 = tl.models.GPT2(cfg).eval()
    gpt2.embed.load_state_dict(embed.state_dict())
    gpt2.transformer.pos.load_state_dict(pos.state_dict())
    gpt2.transformer.blocks.load_state_dict(blocks.state_dict())
    gpt2.transformer.ln_f.load_state_dict(norm.state_dict())
    gpt2.transformer.head.weight = torch.nn.Parameter(head.weight.detach().clone())
    assert torch.equal(cached, generate_tokens(gpt2, prompt, 12, GREEDY))


def test_a_model_without_start_pos_decodes_by_recomputing_its_window(cfg: tl.CausalConfig) -> None:
    class NoPositions(tl.Layer[tl.shapes.TokenIds, tl.shapes.Logits]):
        """A user's model whose forward takes ids only."""

        def __init__(self, cfg: tl.CausalConfig) -> None:
            super().__init__(cfg)
            self.inner = tl.models.GPT2(cfg, seed=1)

        def forward(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
            return self.inner(ids)

    model = NoPositions(cfg).eval()
    prompt = _prompt(cfg, 1, 4)
    assert torch.equal(generate_tokens(model, prompt, 6, GREEDY), _argmax_reference(model, prompt, 6, cfg.seq_len))
