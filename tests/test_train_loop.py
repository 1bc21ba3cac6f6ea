"""The trainer: schedule, optimizer groups, determinism, accumulation, resume, divergence, vocab checks."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import typedlm as tl
from typedlm.training import plots
from typedlm.training.batches import split_tokens
from typedlm.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, load_weights
from typedlm.training.corpus import default_corpus_text
from typedlm.training.run_dir import check_run_dir, run_lock
from typedlm.training.trainer import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    configure_optimizer,
    lr_at,
    train,
)
from typedlm.training.trainlog import TrainLog

CFG = tl.CausalConfig(batch=4, seq_len=16, vocab=128, heads=2, head_dim=8, ffn_hidden=32, layers=1)
TC = TrainConfig(
    steps=6,
    lr=3e-3,
    min_lr=3e-4,
    warmup_steps=2,
    eval_every=3,
    eval_batches=2,
    log_every=1,
    device="cpu",
    progress=False,
)
TOKENS = np.frombuffer(default_corpus_text()[:20_000].encode(), dtype=np.uint8)
TRAIN, VAL = split_tokens(TOKENS, 0.1)


def _run(tc: TrainConfig = TC, cfg: tl.CausalConfig = CFG, **kwargs: Any) -> tuple[TrainLog, tl.models.GPT2]:
    model = tl.models.GPT2(cfg, seed=tc.seed)
    log = train(model, cfg, TRAIN, VAL, tc, **kwargs)
    return log, model


def _losses(log: TrainLog) -> list[float]:
    return [s.loss for s in log.steps]


def test_schedule_warms_up_then_decays_to_min_lr() -> None:
    tc = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, tc) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[99] == pytest.approx(0.1) and lrs[55] == pytest.approx(0.55, abs=0.02)


def test_weight_decay_only_on_matrices() -> None:
    model = tl.models.GPT2(CFG)
    opt = configure_optimizer(model, TC, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == TC.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied counted once


def test_bad_train_settings_name_the_field() -> None:
    with pytest.raises(tl.ConfigError, match=r"TrainConfig.steps=0"):
        TrainConfig(steps=0)
    with pytest.raises(tl.ConfigError, match=r"TrainConfig.min_lr=0.1: must be <= lr=0.01"):
        TrainConfig(lr=0.01, min_lr=0.1)


def test_loss_falls_and_runs_are_deterministic(tmp_path: Path) -> None:
    tc = dataclasses.replace(TC, steps=30, eval_every=15, log_every=5)
    log, _ = _run(tc, out_dir=tmp_path)
    again, _ = _run(tc)
    other, _ = _run(dataclasses.replace(tc, seed=7, steps=3, eval_every=3))
    assert _losses(log) == _losses(again)  # same seed: bit-identical
    assert _losses(other)[0] != _losses(log)[0]  # another seed: other weights and batches
    assert log.first_loss is not None and abs(log.first_loss - math.log(CFG.vocab)) < 0.3
    assert log.final_loss is not None and log.final_loss < log.first_loss - 0.7
    assert [e.step for e in log.evals] == [15, 30] and log.status == "completed"
    assert log.tokens_per_s is not None and log.tokens_per_s > 0
    # the TrainLog JSON carries what the issue asks for
    log.save(tmp_path / "log.json")
    d = json.loads((tmp_path / "log.json").read_text())
    for key in ("config", "train", "steps", "evals", "device", "data", "first_loss", "final_loss", "tokens_per_s"):
        assert key in d
    assert TrainLog.load(tmp_path / "log.json").steps == log.steps
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert find_checkpoint(tmp_path) is not None


def test_grad_accumulation_equals_the_bigger_batch() -> None:
    tc = dataclasses.replace(TC, steps=3)
    big, big_model = _run(tc, cfg=CFG.replace(batch=8))
    accum, accum_model = _run(dataclasses.replace(tc, grad_accum=2), cfg=CFG.replace(batch=4))
    assert _losses(big) == pytest.approx(_losses(accum), abs=1e-5)
    for a, b in zip(big_model.parameters(), accum_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


class Killed(Exception):
    """Stands in for SIGKILL: the process's memory is gone; only what was on disk survives."""


def test_resume_after_kill_gives_the_same_losses(tmp_path: Path) -> None:
    cfg = CFG.replace(dropout=0.1)  # dropout: the RNG must come back too
    tc = dataclasses.replace(TC, steps=8, eval_every=4, checkpoint_every=3)
    whole, whole_model = _run(tc, cfg=cfg)

    def kill_at_5(done: int) -> None:
        if done == 5:
            raise Killed

    with pytest.raises(Killed):
        _run(tc, cfg=cfg, out_dir=tmp_path, on_step=kill_at_5)
    ckpt = find_checkpoint(tmp_path)
    assert ckpt is not None and load_checkpoint(ckpt).step == 3
    resumed, resumed_model = _run(tc, cfg=cfg, out_dir=tmp_path, resume=True)
    assert _losses(resumed) == _losses(whole)  # exactly, steps 0-2 from the checkpoint's log, 3-7 recomputed
    assert [e.val_loss for e in resumed.evals] == [e.val_loss for e in whole.evals]
    for a, b in zip(whole_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"train.lr was 0.003, this run has 0.001"):
        _run(dataclasses.replace(TC, steps=3, lr=1e-3), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="tokenizer_hash"):
        _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path, resume=True, tokenizer_hash="other")
    with pytest.raises(CheckpointError, match="model config differs"):
        _run(dataclasses.replace(TC, steps=3), cfg=CFG.replace(ffn_hidden=64), out_dir=tmp_path, resume=True)


def test_a_finished_run_extends_with_a_larger_steps_and_records_the_new_schedule(tmp_path: Path) -> None:
    short = dataclasses.replace(TC, steps=4, eval_every=0, warmup_steps=1)
    first, _ = _run(short, out_dir=tmp_path)
    longer = dataclasses.replace(short, steps=7)
    extended, _ = _run(longer, out_dir=tmp_path, resume=True)
    assert [s.step for s in extended.steps] == list(range(7))
    assert _losses(extended)[:4] == _losses(first)  # the first four steps are the finished run's
    assert [s.lr for s in extended.steps[4:]] == [lr_at(step, longer) for step in range(4, 7)]  # the new total
    assert [(e.step, e.was, e.steps) for e in extended.extensions] == [(4, 4, 7)]
    assert extended.train["steps"] == 7 and TrainLog.from_dict(extended.to_dict()).extensions == extended.extensions
    with pytest.raises(CheckpointError, match=r"after step 7; to extend the run, --steps must be more than 7"):
        _run(dataclasses.replace(short, steps=6), out_dir=tmp_path, resume=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint_and_resumes_exactly(
    signum: signal.Signals, tmp_path: Path
) -> None:
    tc = dataclasses.replace(TC, steps=8, eval_every=0, checkpoint_every=0)
    whole, _ = _run(tc, out_dir=tmp_path / "whole")
    before = signal.getsignal(signum)

    def press_ctrl_c(done: int) -> None:
        if done == 3:
            signal.raise_signal(signum)  # the handler asks the loop to stop after the running step

    with pytest.raises(
        TrainingInterrupted, match=r"interrupted after step 4; checkpoint in .*: continue with --resume"
    ) as stopped:
        _run(tc, out_dir=tmp_path / "cut", on_step=press_ctrl_c)
    assert stopped.value.exit_status == 128 + signum  # 130 after Ctrl-C, 143 after SIGTERM, as a shell says
    found = find_checkpoint(tmp_path / "cut")
    assert found is not None and load_checkpoint(found).step == 4
    assert signal.getsignal(signum) is before  # restored
    resumed, _ = _run(tc, out_dir=tmp_path / "cut", resume=True)
    assert _losses(resumed) == _losses(whole)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    tc = dataclasses.replace(TC, steps=8, eval_every=0, checkpoint_every=2, log_every=4)
    model = tl.models.GPT2(CFG, seed=tc.seed)

    def poison_after_5(done: int) -> None:
        if done == 5:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged) as e:
        train(model, CFG, TRAIN, VAL, tc, out_dir=tmp_path, on_step=poison_after_5)
    msg = str(e.value)
    assert "loss became nan at step 5" in msg and "after step 4" in msg and str(tmp_path) in msg
    assert e.value.log.status == "diverged" and math.isnan(e.value.log.steps[-1].loss)
    ckpt = find_checkpoint(tmp_path)
    assert ckpt is not None and load_checkpoint(ckpt).step == 4
    fresh = tl.models.GPT2(CFG)
    load_weights(fresh, ckpt)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_vocab_larger_than_the_model_is_refused_before_the_first_step(tmp_path: Path) -> None:
    steps: list[int] = []
    with pytest.raises(tl.ConfigError, match=r"tokenizer has 50257 token ids but the model's vocab is 128"):
        _run(out_dir=tmp_path, vocab_size=50257, on_step=steps.append)
    with pytest.raises(tl.ShapeError, match=r"train_tokens\[5\] is token id 200, outside the model's vocabulary"):
        model = tl.models.GPT2(CFG)
        bad = TRAIN.copy()
        bad[5] = 200
        train(model, CFG, bad, VAL, TC, on_step=steps.append)
    assert steps == [] and not any(tmp_path.iterdir())


def test_loss_curve_degrades_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log, _ = _run(dataclasses.replace(TC, steps=2))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name))
    message = plots.save_loss_curve(log, tmp_path / "loss.png")
    assert message is not None and "pip install 'typedlm[plots]'" in message
    assert not (tmp_path / "loss.png").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_in_a_directory_holding_one_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(tl.ConfigError, match=r"already holds a run \(checkpoint after step 3\).*--resume.*--overwrite"):
        _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_the_run_and_contradicting_flags_are_refused(tmp_path: Path) -> None:
    _run(dataclasses.replace(TC, steps=3), out_dir=tmp_path)
    _run(dataclasses.replace(TC, steps=2), out_dir=tmp_path, overwrite=True)
    found = find_checkpoint(tmp_path)
    assert found is not None and load_checkpoint(found).step == 2
    with pytest.raises(tl.ConfigError, match="--resume and --overwrite contradict"):
        check_run_dir(tmp_path, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(tl.ConfigError, match="is a file, not a directory"):
        check_run_dir(tmp_path / "file", resume=False, overwrite=False)


def test_a_second_run_on_a_locked_directory_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with pytest.raises(tl.ConfigError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            _run(dataclasses.replace(TC, steps=2), out_dir=tmp_path)
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from typedlm.training.run_dir import run_lock\nwith run_lock({str(tmp_path)!r}): pass",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    with run_lock(tmp_path):  # released with the block (and by the OS when a holder dies)
        pass
