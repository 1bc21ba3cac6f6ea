"""train() with a batch source and a loss of the user's own: the same run as a loop written out in plain
PyTorch, resumed exactly, and refused clearly when the source or the loss is missing or malformed."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import typedlm as tl
from typedlm.training import TrainConfig, train
from typedlm.training.batches import BatchSlot
from typedlm.training.checkpoint import CheckpointError

VOCAB, SEQ, BATCH = 11, 8, 4
CFG = tl.CausalConfig(batch=BATCH, seq_len=SEQ, vocab=VOCAB, heads=1, head_dim=4, ffn_hidden=8, layers=1)
TC = TrainConfig(
    steps=5,
    lr=1e-2,
    min_lr=1e-3,
    warmup_steps=2,
    weight_decay=0.1,
    grad_clip=0.5,
    eval_every=0,
    eval_batches=2,
    device="cpu",
    progress=False,
)
Batch = tuple[Tensor, Tensor]


class Tagger(nn.Module):
    """A user's model that is no GPT-2: each position's next id from its own id alone."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.drop, self.out = nn.Embedding(VOCAB, 16), nn.Dropout(dropout), nn.Linear(16, VOCAB)

    def forward(self, ids: Tensor) -> Tensor:
        logits: Tensor = self.out(self.drop(self.embed(ids)))
        return logits


class Successors:
    """Random ids and their successors mod VOCAB; each batch drawn from a generator seeded by its slot."""

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed

    def train_batch(self, slot: BatchSlot) -> Batch:
        return self._draw(slot.step, stream=0)

    def val_batch(self, slot: BatchSlot) -> Batch:
        return self._draw(slot.step, stream=1)

    def fingerprint(self) -> str:
        return f"successors seed {self.seed}"

    def _draw(self, step: int, stream: int) -> Batch:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + stream * 10_007 + step)
        ids = torch.randint(VOCAB, (BATCH, SEQ), generator=generator)
        return ids, (ids + 1) % VOCAB


def successor_loss(model: nn.Module, batch: Batch) -> Tensor:
    ids, targets = batch
    return F.cross_entropy(model(ids).flatten(0, 1), targets.flatten())


def _by_hand(model: nn.Module, tc: TrainConfig) -> tuple[list[float], float]:
    """nanoGPT's loop written out: AdamW (decay on matrices only), warmup then cosine, clipping.
    Returns every step's loss and the validation loss after the last step."""
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=tc.lr,
        betas=(tc.beta1, tc.beta2),
    )
    source, losses = Successors(), []
    for step in range(tc.steps):
        if step < tc.warmup_steps:
            lr = tc.lr * (step + 1) / tc.warmup_steps
        else:
            progress = (step - tc.warmup_steps) / (tc.steps - tc.warmup_steps - 1)
            lr = tc.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (tc.lr - tc.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, targets = source._draw(step, stream=0)
        loss = F.cross_entropy(model(ids).flatten(0, 1), targets.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        val = [F.cross_entropy(model(i).flatten(0, 1), t.flatten()) for i, t in (source._draw(k, 1) for k in range(2))]
    return losses, float(torch.stack(val).mean())


def test_a_custom_source_and_loss_train_like_the_loop_written_out_in_plain_pytorch() -> None:
    model = Tagger()
    reference = copy.deepcopy(model)
    log = train(model, CFG, tc=TC, batches=Successors(), loss=successor_loss)
    losses, val = _by_hand(reference, TC)
    assert [s.step for s in log.steps] == list(range(TC.steps))
    assert [s.loss for s in log.steps] == pytest.approx(losses, abs=1e-6)
    assert losses[-1] < losses[0]  # it learns: the comparison is not between two runs that did nothing
    assert log.final_val_loss == pytest.approx(val, abs=1e-6)
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)
    assert log.data["data_hash"] == "successors seed 7"


class Killed(Exception):
    """Stands in for SIGKILL: only what was on disk survives."""


def test_a_custom_source_resumes_exactly(tmp_path: Path) -> None:
    tc = dataclasses.replace(TC, steps=7, eval_every=3, checkpoint_every=2)
    whole_model = Tagger(dropout=0.2)  # dropout: the RNG must come back too
    whole = train(whole_model, CFG, tc=tc, batches=Successors(), loss=successor_loss)

    def kill_at_5(done: int) -> None:
        if done == 5:
            raise Killed

    with pytest.raises(Killed):
        train(
            Tagger(dropout=0.2),
            CFG,
            tc=tc,
            batches=Successors(),
            loss=successor_loss,
            out_dir=tmp_path,
            on_step=kill_at_5,
        )
    resumed_model = Tagger(dropout=0.2)
    resumed = train(resumed_model, CFG, tc=tc, batches=Successors(), loss=successor_loss, out_dir=tmp_path, resume=True)
    assert [s.loss for s in resumed.steps] == [s.loss for s in whole.steps]  # steps 0-3 from the checkpoint's log
    assert [e.val_loss for e in resumed.evals] == [e.val_loss for e in whole.evals]
    for a, b in zip(whole_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match=r"data_hash was 'successors seed 7', this run has 'successors seed 8'"):
        train(Tagger(), CFG, tc=tc, batches=Successors(seed=8), loss=successor_loss, out_dir=tmp_path, resume=True)


def test_grad_accumulation_over_a_custom_source_sees_each_slot_once() -> None:
    slots: list[BatchSlot] = []

    class Recording(Successors):
        def train_batch(self, slot: BatchSlot) -> Batch:
            slots.append(slot)
            return super().train_batch(slot)

    train(Tagger(), CFG, tc=dataclasses.replace(TC, steps=2, grad_accum=3), batches=Recording(), loss=successor_loss)
    assert [(s.step, s.micro_step, s.micro_steps, s.rank, s.world) for s in slots] == [
        (step, micro, 3, 0, 1) for step in range(2) for micro in range(3)
    ]


class NoFingerprint:
    def train_batch(self, slot: BatchSlot) -> Batch:
        return Successors().train_batch(slot)

    def val_batch(self, slot: BatchSlot) -> Batch:
        return Successors().val_batch(slot)


TOKENS = torch.arange(64).numpy() % VOCAB


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: train(Tagger(), CFG, tc=TC), "no data: give train_tokens and val_tokens"),
        (lambda: train(Tagger(), CFG, TOKENS, tc=TC), "no data"),
        (
            lambda: train(Tagger(), CFG, TOKENS, TOKENS, TC, batches=Successors()),
            "either train_tokens and val_tokens, or",
        ),
        (lambda: train(Tagger(), CFG, tc=TC, batches=Successors()), "batches needs a loss: loss(model, batch)"),
        (lambda: train(Tagger(), CFG, tc=TC, batches=Successors(), loss=3), "loss must be callable"),  # type: ignore[arg-type]  # the point
        (
            lambda: train(Tagger(), CFG, tc=TC, batches=NoFingerprint(), loss=successor_loss),  # type: ignore[arg-type]  # the point
            "NoFingerprint has no fingerprint()",
        ),
        (lambda: train(Tagger(), CFG, TOKENS, TOKENS, tc={"steps": 3}), "tc must be a TrainConfig, got dict"),  # type: ignore[arg-type]  # the point
    ],
    ids=["no-data", "val-missing", "both", "no-loss", "loss-not-callable", "not-a-source", "tc-a-dict"],
)
def test_bad_data_or_loss_arguments_are_one_line_config_errors(call: object, words: str) -> None:
    assert callable(call)
    with pytest.raises(tl.ConfigError) as info:
        call()
    assert words in str(info.value) and "\n" not in str(info.value)
