"""KV cache: incremental decoding through forward(ids, start_pos) gives the logits of a full recompute."""

import pytest
import torch

import typedlm as tl


@pytest.fixture
def model(cfg: tl.CausalConfig) -> tl.models.GPT2:
    return tl.models.GPT2(cfg, seed=11).eval()


def test_prefill_then_steps_equal_one_full_pass(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    ids = torch.randint(0, cfg.vocab, (2, 20))
    with torch.no_grad():
        full = model(ids)
        with model.kv_cache(batch=2):
            pieces = [model(ids[:, :12], 0), model(ids[:, 12:15], 12)]
            pieces += [model(ids[:, t : t + 1], t) for t in range(15, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_rewinding_recomputes_from_an_earlier_position(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    ids = torch.randint(0, cfg.vocab, (1, 16))
    with torch.no_grad(), model.kv_cache(batch=1):
        model(ids, 0)
        model.rewind_kv_cache(8)
        again = model(ids[:, 8:], 8)
    torch.testing.assert_close(again, model(ids)[:, 8:], atol=1e-5, rtol=1e-5)


def test_cache_misuse_is_reported(model: tl.models.GPT2, cfg: tl.CausalConfig) -> None:
    ids = torch.randint(0, cfg.vocab, (1, 4))
    with model.kv_cache(batch=1):
        model(ids, 0)
        for wrong in (6, 5, 3, 0):  # too large, too small, or forgotten (0): the cache holds 4 positions
            with pytest.raises(tl.ShapeError, match=rf"start_pos={wrong} but the KV cache holds positions 0..3"):
                model(ids[:, :1], wrong)
        with pytest.raises(tl.ShapeError, match=r"cannot rewind to start_pos=5"):
            model.rewind_kv_cache(5)
        with pytest.raises(tl.ShapeError, match=r"built for batch = 1, got batch = 2"):
            model(torch.randint(0, cfg.vocab, (2, 1)), 4)
        with pytest.raises(RuntimeError, match="already active"), model.kv_cache(batch=1):
            pass
    assert all(block.attn.cache is None for block in model.transformer.blocks)  # type: ignore[union-attr]  # blocks are TransformerBlocks
