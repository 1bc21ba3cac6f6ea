"""Models: one-hot and indexed models agree, GPT-2 ties its head, counts parameters and learns."""

import torch
import torch.nn.functional as F

import typedlm as tl


def test_one_hot_and_indexed_models_give_the_same_logits(cfg: tl.CausalConfig) -> None:
    one_hot = tl.models.causal_transformer_one_hot(cfg, seed=3)
    indexed = tl.models.causal_transformer_indexed(cfg, seed=3)
    ids = torch.randint(0, cfg.vocab, (2, 11))
    torch.testing.assert_close(one_hot(F.one_hot(ids, cfg.vocab).float()), indexed(ids), atol=1e-5, rtol=1e-5)


def test_weights_move_between_one_hot_and_indexed_models(cfg: tl.CausalConfig) -> None:
    one_hot = tl.models.causal_transformer_one_hot(cfg, seed=1)
    indexed = tl.models.causal_transformer_indexed(cfg, seed=2)
    indexed.load_state_dict(one_hot.state_dict())
    ids = torch.randint(0, cfg.vocab, (1, 5))
    torch.testing.assert_close(one_hot(F.one_hot(ids, cfg.vocab).float()), indexed(ids), atol=1e-5, rtol=1e-5)


def test_gpt2_equals_the_indexed_constructor(cfg: tl.CausalConfig) -> None:
    gpt2 = tl.models.GPT2(cfg, seed=9)
    indexed = tl.models.causal_transformer_indexed(cfg, seed=9)
    ids = torch.randint(0, cfg.vocab, (3, 4))
    torch.testing.assert_close(gpt2(ids), indexed(ids))


def test_start_pos_reads_later_positions(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg)
    ids = torch.randint(0, cfg.vocab, (1, 4))
    x = model.embed(ids) + model.transformer.pos.weight[10:14]
    expected = model.transformer.head(model.transformer.ln_f(model.transformer.blocks(x)))
    torch.testing.assert_close(model(ids, start_pos=10), expected)


def test_tied_and_untied_heads(cfg: tl.CausalConfig) -> None:
    tied = tl.models.GPT2(cfg)
    assert tied.transformer.head.weight is tied.embed.weight
    untied = tl.models.GPT2(cfg.replace(tie_embeddings=False))
    assert untied.transformer.head.weight is not untied.embed.weight
    assert untied.param_count() - tied.param_count() == cfg.vocab * cfg.d_model


def test_param_count_matches_the_formula(cfg: tl.CausalConfig) -> None:
    d, f, v, t = cfg.d_model, cfg.ffn_hidden, cfg.vocab, cfg.seq_len
    block = (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (2 * d) + (d * f + f) + (f * d + d)
    assert tl.models.GPT2(cfg).param_count() == v * d + t * d + cfg.layers * block + 2 * d


def test_a_few_steps_learn_a_repeated_sequence(cfg: tl.CausalConfig) -> None:
    torch.manual_seed(0)
    model = tl.models.GPT2(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.arange(17).remainder(5).unsqueeze(0).repeat(2, 1)
    losses = []
    for _ in range(30):
        loss = tl.losses.cross_entropy_indexed(model(ids[:, :-1]), ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 5.0 and losses[-1] < 0.5
