"""Checkpoints: round trip without pickle, atomic swap, checksums, clear errors for damaged files
(tests/test_bad_checkpoints.py goes through every kind of damage)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from typedlm.errors import ConfigError
from typedlm.training.checkpoint import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    partial_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from typedlm.training.run_dir import check_run_dir


class Tied(nn.Module):
    """Embedding and output head sharing one matrix, like GPT-2."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.norm(self.emb(ids)))
        return out


def _trained(seed: int) -> tuple[Tied, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        model(torch.arange(11)).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_round_trip_restores_weights_and_optimizer(tmp_path: Path) -> None:
    model, opt = _trained(0)
    path = save_checkpoint(tmp_path, model, opt, {"step": 3, "config": {"vocab": 11}})
    assert sorted(p.name for p in path.iterdir()) == sorted([MODEL_FILE, OPTIMIZER_FILE, STATE_FILE])

    fresh, fresh_opt = _trained(1)  # different weights and moments
    ckpt = load_checkpoint(find_checkpoint(tmp_path) or tmp_path)
    load_weights(fresh, ckpt.path)
    restore_optimizer(fresh_opt, ckpt)
    assert ckpt.step == 3 and ckpt.state["config"] == {"vocab": 11}
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh.head.weight is fresh.emb.weight  # still tied after loading
    assert fresh_opt.param_groups[0]["betas"] == (0.9, 0.95)
    # one more identical step on both gives identical weights: the moments came back exactly
    for m, o in ((model, opt), (fresh, fresh_opt)):
        m(torch.arange(11)).logsumexp(-1).mean().backward()
        o.step()
    assert torch.equal(model.emb.weight, fresh.emb.weight)


def test_checkpoint_files_are_not_pickles(tmp_path: Path) -> None:
    model, opt = _trained(0)
    path = save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    json.loads((path / STATE_FILE).read_text())
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        assert not (path / name).read_bytes().startswith(b"\x80")  # pickle protocol marker


def test_swap_leaves_one_complete_checkpoint(tmp_path: Path) -> None:
    model, opt = _trained(0)
    save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    save_checkpoint(tmp_path, model, opt, {"step": 2, "config": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    # a crash between the two renames leaves only checkpoint.prev: it is still found
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.prev")
    found = find_checkpoint(tmp_path)
    assert found is not None and load_checkpoint(found).step == 2
    assert find_checkpoint(tmp_path / "nowhere") is None


def test_damaged_files_are_named(tmp_path: Path) -> None:
    model, opt = _trained(0)
    path = save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    (path / STATE_FILE).write_text('{"format": "typedlm.checkpoint/1",\n "step": }')
    with pytest.raises(CheckpointError, match=r"state\.json:2: not valid JSON"):
        load_checkpoint(path)
    (path / STATE_FILE).write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="format is 'other'"):
        load_checkpoint(path)

    path = save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    (path / OPTIMIZER_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors: checksum mismatch"):
        load_checkpoint(path)
    _drop_checksums(path)  # as written before checksums were recorded: the parser still refuses it
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors: not a readable safetensors file"):
        load_checkpoint(path)
    (path / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: model weights not found"):
        load_weights(model, path)


def _drop_checksums(path: Path) -> None:
    state = json.loads((path / STATE_FILE).read_text())
    del state["checksums"]
    (path / STATE_FILE).write_text(json.dumps(state))


def test_checksums_are_the_sha256_of_the_files_and_old_checkpoints_without_them_load(tmp_path: Path) -> None:
    model, opt = _trained(0)
    path = save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    checksums = json.loads((path / STATE_FILE).read_text())["checksums"]
    for name in (MODEL_FILE, OPTIMIZER_FILE):  # what `sha256sum FILE` prints
        assert checksums[name] == "sha256:" + hashlib.sha256((path / name).read_bytes()).hexdigest()
    _drop_checksums(path)
    fresh, fresh_opt = _trained(1)
    load_weights(fresh, path)
    restore_optimizer(fresh_opt, load_checkpoint(path))
    assert torch.equal(fresh.emb.weight, model.emb.weight)


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    model, opt = _trained(0)
    path = save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_weights(nn.Linear(4, 4), path)


class _Crash(Exception):
    """A simulated kill in the middle of a checkpoint write."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, step: int) -> list[int]:
    """Make the ``step``-th file-system change of the next writes (a rename, a file write or a tree
    removal) die; a removal dies half-way, with the tree's weights gone and its state.json still there."""
    import os
    import shutil

    count = [0]
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def tick() -> bool:
        count[0] += 1
        return count[0] == step

    def replace(src: object, dst: object) -> None:
        if tick():
            raise _Crash
        real_replace(src, dst)  # type: ignore[arg-type]  # the paths os.replace was given

    def rmtree(path: object, ignore_errors: bool = False) -> None:
        if tick():
            weights = Path(str(path)) / MODEL_FILE
            weights.unlink(missing_ok=True)
            raise _Crash
        real_rmtree(str(path), ignore_errors=ignore_errors)

    monkeypatch.setattr(os, "replace", replace)  # the one os module that checkpoint and atomic call
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    return count


def _complete_step(out: Path) -> int:
    """The step of the checkpoint --resume would find; it must load whole."""
    found = find_checkpoint(out)
    assert found is not None, "no complete checkpoint left"
    ckpt = load_checkpoint(found)
    load_weights(_trained(5)[0], ckpt.path)
    return ckpt.step


def test_two_crashes_in_a_row_at_any_point_of_the_write_leave_a_complete_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt = _trained(0)
    save_checkpoint(tmp_path / "probe", model, opt, {"step": 1, "config": {}})
    with monkeypatch.context() as probe:  # how many file-system changes a save over a checkpoint makes
        steps = _crash_at(probe, 0)
        save_checkpoint(tmp_path / "probe", model, opt, {"step": 2, "config": {}})
        per_save = steps[0]
    crashes = 0
    for first in range(1, per_save + 1):
        for second in range(1, per_save + 1):
            out = tmp_path / f"run-{first}-{second}"
            save_checkpoint(out, model, opt, {"step": 1, "config": {}})
            for step_no, crash in ((2, first), (3, second)):
                with monkeypatch.context() as patch:
                    _crash_at(patch, crash)
                    try:  # after a first crash a save may have fewer steps than ``crash``: it then completes
                        save_checkpoint(out, model, opt, {"step": step_no, "config": {}})
                    except _Crash:
                        crashes += 1
                assert _complete_step(out) in range(1, step_no + 1)  # one that was written, loading whole
                assert partial_checkpoint(out) is None  # a crash never looks like a damaged checkpoint
            save_checkpoint(out, model, opt, {"step": 4, "config": {}})  # and a clean save after both
            assert _complete_step(out) == 4
    assert per_save >= 6 and crashes >= per_save * per_save


def test_a_damaged_checkpoint_beside_a_complete_prev_is_reported_and_a_save_keeps_prev_until_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt = _trained(0)
    save_checkpoint(tmp_path, model, opt, {"step": 1, "config": {}})
    shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.prev")  # a complete prev
    (tmp_path / "checkpoint" / OPTIMIZER_FILE).unlink()  # and a damaged current
    assert partial_checkpoint(tmp_path) == (tmp_path / "checkpoint", OPTIMIZER_FILE)
    with pytest.raises(ConfigError, match=r"checkpoint lacks optimizer.safetensors, so it cannot be resumed"):
        check_run_dir(tmp_path, resume=True, overwrite=False)
    # the next save must not remove prev (the only complete one) before its own checkpoint is in place
    with monkeypatch.context() as patch:
        _crash_at(patch, 6)  # 1 clears tmp, 2-4 write its files, 5 clears the damaged checkpoint/, 6 renames
        with pytest.raises(_Crash):
            save_checkpoint(tmp_path, model, opt, {"step": 3, "config": {}})
    assert _complete_step(tmp_path) == 1
    save_checkpoint(tmp_path, model, opt, {"step": 3, "config": {}})
    assert _complete_step(tmp_path) == 3 and partial_checkpoint(tmp_path) is None
