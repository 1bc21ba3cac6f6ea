"""The layers compute what GPT-2 computes: reference maths, causality, dropout, initialisation and seeding."""

import math

import pytest
import torch
import torch.nn.functional as F

import typedlm as tl


def test_attention_matches_a_written_out_reference(cfg: tl.CausalConfig) -> None:
    attn = tl.nn.CausalSelfAttention(cfg, seed=1).eval()
    x = torch.randn(2, 7, cfg.d_model)
    q, k, v = attn.qkv(x).split(cfg.d_model, dim=2)
    heads = [t.view(2, 7, cfg.heads, cfg.head_dim).transpose(1, 2) for t in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(-2, -1) / math.sqrt(cfg.head_dim)
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    expected = attn.proj((scores.softmax(-1) @ heads[2]).transpose(1, 2).reshape(2, 7, cfg.d_model))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_mlp_is_gelu_tanh(cfg: tl.CausalConfig) -> None:
    mlp = tl.nn.MLP(cfg)
    x = torch.randn(1, 3, cfg.d_model)
    hidden = mlp.fc(x)
    expected = mlp.proj(0.5 * hidden * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3))))
    torch.testing.assert_close(mlp(x), expected, atol=1e-5, rtol=1e-5)


def test_block_is_pre_ln_residual(cfg: tl.CausalConfig) -> None:
    block = tl.nn.TransformerBlock(cfg, index=0)
    x = torch.randn(2, 5, cfg.d_model)
    h = x + block.attn(block.ln_1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.ln_2(h)))


def test_layer_norm_matches_torch(cfg: tl.CausalConfig) -> None:
    norm = tl.nn.LayerNorm(cfg)
    x = torch.randn(3, 4, cfg.d_model)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (cfg.d_model,), eps=cfg.layer_norm_eps))


def test_the_future_does_not_change_the_past(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg).eval()
    ids = torch.randint(0, cfg.vocab, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % cfg.vocab
    torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])
    assert not torch.allclose(model(ids)[:, 6:], model(changed)[:, 6:])


def test_positions_start_where_asked(cfg: tl.CausalConfig) -> None:
    pos = tl.nn.PositionalEmbedding(cfg)
    x = torch.randn(2, 3, cfg.d_model)
    torch.testing.assert_close(pos(x, start_pos=5), x + pos.weight[5:8])
    with pytest.raises(tl.ShapeError, match=r"positions 30..32 .* outside 0..31 \(cfg.seq_len = 32\)"):
        pos(x, start_pos=30)


def test_dropout_only_in_training(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg.replace(dropout=0.5))
    ids = torch.randint(0, cfg.vocab, (2, 8))
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_gpt2_initialisation(cfg: tl.CausalConfig) -> None:
    big = cfg.replace(heads=8, head_dim=32, ffn_hidden=1024, vocab=2048, layers=8)
    block = tl.nn.TransformerBlock(big, index=0)
    assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.001
    for projection in (block.attn.proj, block.mlp.proj):
        assert abs(projection.weight.std().item() - 0.02 / math.sqrt(2 * big.layers)) < 0.0005
        assert projection.bias is not None and not projection.bias.any()
    assert torch.equal(block.ln_1.weight, torch.ones(big.d_model))
    assert abs(tl.nn.TokenEmbedding(big).weight.std().item() - 0.02) < 0.001


def test_no_bias_when_the_config_says_so(cfg: tl.CausalConfig) -> None:
    block = tl.nn.TransformerBlock(cfg.replace(bias=False), index=0)
    assert all(b is None for b in (block.attn.qkv.bias, block.mlp.fc.bias, block.ln_1.bias))


def test_block_i_uses_seed_plus_i_times_stride(cfg: tl.CausalConfig) -> None:
    strided = cfg.replace(seed_stride=7)
    third = tl.nn.TransformerBlock(strided, index=3, seed=100)
    same = tl.nn.TransformerBlock(strided, index=0, seed=121)
    for a, b in zip(third.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = tl.nn.TransformerBlock(strided, index=1, seed=100)
    assert not torch.equal(third.attn.qkv.weight, other.attn.qkv.weight)


def test_same_seed_same_model_and_different_seed_different_model(cfg: tl.CausalConfig) -> None:
    a, b, c = tl.models.GPT2(cfg, seed=5), tl.models.GPT2(cfg, seed=5), tl.models.GPT2(cfg, seed=6)
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if "ln" not in name and "bias" not in name:
            assert not torch.equal(pa, pc), name


def test_gradients_reach_every_parameter(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg)
    ids = torch.randint(0, cfg.vocab, (2, 6))
    tl.losses.cross_entropy_indexed(model(ids), ids).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
