"""Per-block widths of a whole model: ``GPT2(cfg, block_heads=..., block_ffn=...)`` computes plain pre-LN
blocks of those widths, decodes with the KV cache, survives a typedlm checkpoint, and is refused by the
Hugging Face format, which cannot hold it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_user_dims import _reference_block
from torch import Tensor

import typedlm as tl
from typedlm.hf import save_gpt2
from typedlm.training import (
    CheckpointError,
    TrainConfig,
    find_checkpoint,
    load_gpt2_checkpoint,
    load_weights,
    save_checkpoint,
    train,
)

CFG = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=64, layers=3)
HEADS, FFN = [2, 4, 1], [32, 64, 48]


def _model(seed: int = 0, heads: list[int] = HEADS, ffn: list[int] = FFN) -> tl.models.GPT2:
    model = tl.models.GPT2(CFG, seed=seed, block_heads=heads, block_ffn=ffn).eval()
    with torch.no_grad():  # non-zero biases and gains, so that a dropped or misplaced one is noticed
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.normal_(0.5, 0.3, generator=torch.Generator().manual_seed(seed))
    return model


def _reference_logits(model: tl.models.GPT2, ids: Tensor, heads: list[int]) -> Tensor:
    """GPT-2 in plain PyTorch from ``model``'s weights: block ``i`` with ``heads[i]`` heads."""
    body = model.transformer
    x = F.embedding(ids, model.embed.weight) + body.pos.weight[: ids.shape[1]]
    for block, count in zip(body.blocks, heads, strict=True):
        assert isinstance(block, tl.nn.TransformerBlock)
        x = _reference_block(block, x, count)
    x = F.layer_norm(x, (CFG.d_model,), body.ln_f.weight, body.ln_f.bias, CFG.layer_norm_eps)
    return x @ model.embed.weight.T


def _ids(batch: int, seq: int, seed: int = 0) -> Tensor:
    return torch.randint(0, CFG.vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_each_block_has_its_widths_and_the_logits_are_plain_pytorchs() -> None:
    model = _model()
    assert model.block_heads == tuple(HEADS) and model.block_ffn == tuple(FFN)
    for block, heads, ffn in zip(model.transformer.blocks, HEADS, FFN, strict=True):
        assert isinstance(block, tl.nn.TransformerBlock)
        assert block.attn.heads == heads and block.mlp.fc.weight.shape == (ffn, CFG.d_model)
    ids = _ids(3, 9)
    torch.testing.assert_close(model(ids), _reference_logits(model, ids, HEADS), atol=1e-5, rtol=1e-5)


def test_without_widths_every_block_has_the_configs() -> None:
    plain, explicit = tl.models.GPT2(CFG, seed=2), tl.models.GPT2(CFG, seed=2, block_heads=[2] * 3, block_ffn=[64] * 3)
    assert plain.block_heads == (CFG.heads,) * 3 and plain.block_ffn == (CFG.ffn_hidden,) * 3
    ids = _ids(2, 5)
    assert torch.equal(plain(ids), explicit(ids))


def test_the_constructors_take_the_same_widths() -> None:
    indexed = tl.models.causal_transformer_indexed(CFG, seed=1, block_heads=HEADS, block_ffn=FFN)
    one_hot = tl.models.causal_transformer_one_hot(CFG, seed=1, block_heads=HEADS, block_ffn=FFN)
    gpt2 = tl.models.GPT2(CFG, seed=1, block_heads=HEADS, block_ffn=FFN)
    ids = _ids(2, 6)
    torch.testing.assert_close(indexed(ids), gpt2(ids))
    torch.testing.assert_close(one_hot(F.one_hot(ids, CFG.vocab).float()), gpt2(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ({"block_heads": [2, 3, 1]}, r"GPT2\(block_heads\[1\]=3\): d_model = 16 \(cfg.d_model\) is not divisible"),
        ({"block_heads": [2, 4]}, r"GPT2\(block_heads=...\): has 2 entries, but cfg.layers = 3"),
        ({"block_ffn": [32, 0, 48]}, r"GPT2\(block_ffn\[1\]=0\): block 1's ffn must be an int >= 1"),
        ({"block_ffn": [32, 64, 4.0]}, r"GPT2\(block_ffn\[2\]=4.0\): block 2's ffn must be an int >= 1"),
        ({"block_heads": [True, 2, 2]}, r"GPT2\(block_heads\[0\]=True\): block 0's heads must be an int"),
        ({"block_heads": 4}, r"GPT2\(block_heads=4\): must be a list of ints, one per block"),
    ],
)
def test_bad_widths_are_a_config_error_naming_the_argument_and_the_block(
    widths: dict[str, object], message: str
) -> None:
    with pytest.raises(tl.ConfigError, match=message):
        tl.models.GPT2(CFG, **widths)  # type: ignore[arg-type]  # the point: wrong values at runtime


def test_kv_cache_decoding_equals_recompute() -> None:
    model = _model(seed=3)
    ids = _ids(2, 12, seed=3)
    with torch.no_grad():
        full = model(ids)
        with model.kv_cache(batch=2):
            steps = [model(ids[:, :5])] + [model(ids[:, t : t + 1], start_pos=t) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    greedy = tl.Sampling(greedy=True)
    prompt = _ids(2, 4, seed=4)
    assert torch.equal(model.generate(prompt, 10, greedy), model.generate(prompt, 10, greedy, kv_cache=False))


def _save(model: tl.models.GPT2, out: Path) -> Path:
    optimizer = torch.optim.AdamW(model.parameters())
    return save_checkpoint(out, model, optimizer, {"step": 0, "config": CFG.to_dict()})


def test_a_checkpoint_keeps_the_widths_and_load_rebuilds_the_same_model(tmp_path: Path) -> None:
    model = _model(seed=5)
    path = _save(model, tmp_path)
    state = json.loads((path / "state.json").read_text())
    assert state["blocks"] == {"heads": HEADS, "ffn": FFN}
    loaded = load_gpt2_checkpoint(path)
    assert loaded.block_heads == tuple(HEADS) and loaded.block_ffn == tuple(FFN)
    ids = _ids(2, 7)
    assert torch.equal(loaded(ids), model(ids))


def test_a_checkpoint_without_widths_loads_with_the_configs(tmp_path: Path) -> None:
    model = _model(seed=6, heads=[2, 2, 2], ffn=[64, 64, 64])
    path = _save(model, tmp_path)
    state = json.loads((path / "state.json").read_text())
    del state["blocks"]  # as written before widths were recorded
    (path / "state.json").write_text(json.dumps(state))
    loaded = load_gpt2_checkpoint(path)
    assert loaded.block_heads == (2, 2, 2)
    ids = _ids(1, 5)
    assert torch.equal(loaded(ids), model(ids))
    other = tl.models.GPT2(CFG, block_heads=[2, 1, 2], block_ffn=[64, 64, 64])  # same weight shapes
    with pytest.raises(CheckpointError, match=r"the blocks. heads are \[2, 2, 2\], but this GPT2 has"):
        load_weights(other, path)  # such a checkpoint has the config's widths in every block


def test_loading_into_a_model_of_other_widths_is_refused_even_with_equal_shapes(tmp_path: Path) -> None:
    path = _save(_model(), tmp_path)
    other = tl.models.GPT2(CFG, block_heads=[1, 4, 1], block_ffn=FFN)  # every weight has the same shape
    with pytest.raises(CheckpointError, match=r"state.json: the blocks. heads are \[2, 4, 1\], but this GPT2 has"):
        load_weights(other, path)


def test_the_trainers_checkpoint_of_such_a_model_loads_as_the_trained_model(tmp_path: Path) -> None:
    model = _model(seed=7)
    tokens = (np.arange(300) % CFG.vocab).astype(np.uint16)
    tc = TrainConfig(steps=1, warmup_steps=0, eval_batches=1, device="cpu", progress=False)
    train(model, CFG, tokens[:240], tokens[240:], tc, out_dir=tmp_path)
    found = find_checkpoint(tmp_path)
    assert found is not None
    ids = _ids(2, 6)
    assert torch.equal(load_gpt2_checkpoint(found)(ids), model.eval()(ids))


def test_a_chain_from_the_constructors_records_and_checks_its_widths_too(tmp_path: Path) -> None:
    chain = tl.models.causal_transformer_indexed(CFG, block_heads=HEADS, block_ffn=FFN)
    path = save_checkpoint(tmp_path, chain, torch.optim.AdamW(chain.parameters()), {"step": 0, "config": {}})
    assert json.loads((path / "state.json").read_text())["blocks"] == {"heads": HEADS, "ffn": FFN}
    other = tl.models.causal_transformer_indexed(CFG, block_heads=[1, 4, 1], block_ffn=FFN)
    with pytest.raises(
        CheckpointError, match=r"the blocks. heads are \[2, 4, 1\], but this Chain has block_heads=\[1, 4, 1\]"
    ):
        load_weights(other, path)


def test_damaged_widths_in_a_checkpoint_are_named(tmp_path: Path) -> None:
    path = _save(_model(), tmp_path)
    state = json.loads((path / "state.json").read_text())
    state["blocks"]["ffn"] = [32, 64]
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"state.json: blocks.ffn: has 2 entries, but config.layers = 3"):
        load_gpt2_checkpoint(path)


def test_the_hugging_face_format_refuses_a_model_of_per_block_widths(tmp_path: Path) -> None:
    with pytest.raises(tl.ConfigError, match=r"save_gpt2: block 1 has heads = 4, not the config's 2 .* one n_head"):
        save_gpt2(_model(), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
