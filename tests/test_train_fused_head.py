"""train() on token arrays trains a GPT2 through the fused head loss: the head never builds logits, and
the run matches the same run scored on ordinary logits (the plain path is the reference)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

import typedlm as tl
from typedlm.training import TrainConfig, train
from typedlm.training.fused_head import HiddenStates, has_fused_head


def _plain_loss(model: nn.Module, windows: Tensor) -> Tensor:
    """Next-token cross-entropy on the model's ordinary logits (what the trainer did before)."""
    return tl.losses.next_token_cross_entropy(model(windows[:, :-1]), windows)


@pytest.mark.parametrize("tied", [True, False])
def test_fused_training_matches_training_on_logits_and_never_calls_the_head(tied: bool) -> None:
    torch.manual_seed(0)
    cfg = tl.CausalConfig(
        batch=4, seq_len=16, vocab=97, heads=2, head_dim=8, ffn_hidden=32, layers=2, tie_embeddings=tied
    )
    tokens = np.random.default_rng(0).integers(0, cfg.vocab, 4000).astype(np.int64)
    fused, plain = tl.models.GPT2(cfg, seed=1), tl.models.GPT2(cfg, seed=1)
    head_calls: list[int] = []
    fused.transformer.head.register_forward_hook(lambda *_: head_calls.append(1))
    tc = TrainConfig(steps=6, eval_every=3, eval_batches=2, log_every=1, progress=False, device="cpu")
    log_fused = train(fused, cfg, tokens[:3000], tokens[3000:], tc)
    log_plain = train(plain, cfg, tokens[:3000], tokens[3000:], tc, loss=_plain_loss)
    assert head_calls == []  # training and evaluation went through the fused loss
    losses_fused = [r.loss for r in log_fused.steps]
    losses_plain = [r.loss for r in log_plain.steps]
    assert len(losses_fused) == 6 and losses_fused == pytest.approx(losses_plain, abs=1e-5)
    assert log_fused.final_val_loss == pytest.approx(log_plain.final_val_loss, abs=1e-5)
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    ids = torch.from_numpy(tokens[:10])[None]
    fused.eval()
    assert fused(ids).shape == (1, 10, cfg.vocab)  # the model itself still gives ordinary logits


def test_only_models_with_hidden_states_and_a_head_table_take_the_fused_path() -> None:
    cfg = tl.CausalConfig(batch=2, seq_len=8, vocab=11, heads=1, head_dim=4, ffn_hidden=8, layers=1)
    gpt2 = tl.models.GPT2(cfg)
    chain = tl.models.causal_transformer_indexed(cfg)
    assert has_fused_head(gpt2) and not has_fused_head(chain) and not has_fused_head(copy.deepcopy(nn.Linear(2, 2)))
    ids = torch.randint(0, cfg.vocab, (2, 5))
    torch.testing.assert_close(
        torch.nn.functional.linear(HiddenStates(gpt2)(ids), gpt2.head_weight), gpt2(ids), atol=1e-6, rtol=1e-6
    )


def test_a_subclass_that_overrides_forward_alone_trains_on_its_own_logits() -> None:
    class SoftCapped(tl.models.GPT2):
        def forward(
            self, ids: Int[Tensor, "batch seq"], start_pos: int = 0, pad: Int[Tensor, " batch"] | None = None
        ) -> Float[Tensor, "batch seq vocab"]:
            return 30 * torch.tanh(super().forward(ids, start_pos, pad) / 30)

    cfg = tl.CausalConfig(batch=2, seq_len=8, vocab=11, heads=1, head_dim=4, ffn_hidden=8, layers=1)
    assert has_fused_head(tl.models.GPT2(cfg)) and not has_fused_head(SoftCapped(cfg))
