"""Damaged checkpoints and training logs are refused with one line naming the file and the field or tensor.

One real checkpoint (a tiny GPT-2 and AdamW after one step) is written per module; each case copies it,
damages it one way, and loads it as a resume does. The load must raise `CheckpointError` (nothing else),
name the file and the field or tensor on a single line, leave the files untouched and the model unchanged.
Hypothesis then fuzzes state.json and trainlog.json: only `CheckpointError` / `DataFileError` may escape.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import typedlm as tl
from typedlm.errors import DataFileError
from typedlm.training.checkpoint import (
    CHECKPOINT_FORMAT,
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    TRAINER_FIELDS,
    CheckpointError,
    file_checksum,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    read_state,
    restore_optimizer,
    save_checkpoint,
)
from typedlm.training.trainer import TrainConfig, configure_optimizer, train
from typedlm.training.trainlog import EvalRecord, StepRecord, ThroughputRecord, TrainLog

CFG = tl.CausalConfig(batch=2, seq_len=8, vocab=16, heads=2, head_dim=4, ffn_hidden=16, layers=1, seed_stride=1)
TC = TrainConfig(steps=5, warmup_steps=1, eval_batches=1, device="cpu", progress=False)
Damage = Callable[[Path], object]


def _model(seed: int = 0) -> tl.models.GPT2:
    return tl.models.GPT2(CFG, seed=seed)


def _optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-2)


def _trained() -> tuple[tl.models.GPT2, torch.optim.AdamW]:
    """The model and optimizer of the module's checkpoint, after one step."""
    model = _model()
    opt = _optimizer(model)
    model(torch.arange(8).view(1, 8)).logsumexp(-1).mean().backward()
    opt.step()
    return model, opt


def _log() -> TrainLog:
    log = TrainLog(config=CFG.to_dict(), train=TC.to_dict(), device="cpu", dtype="float32", world_size=1, data={})
    log.steps.append(StepRecord(0, 2.77, 1e-3, 0.5))
    log.evals.append(EvalRecord(1, 2.7))
    log.throughput.append(ThroughputRecord(1, 1000.0))
    return log


def _state(step: int) -> dict[str, Any]:
    """What the trainer's checkpoints hold besides the optimizer and the checksums."""
    return {
        "step": step,
        "config": CFG.to_dict(),
        "train": TC.to_dict(),
        "world_size": 1,
        "tokenizer_hash": "",
        "data_hash": "ab" * 32,
        "rng": {"seed": TC.seed, "scheme": "SeedSequence([seed, rank, step])"},
        "log": _log().to_dict(),
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, opt = _trained()
    return save_checkpoint(tmp_path_factory.mktemp("pristine"), model, opt, _state(1))


def _load_all(path: Path, model: tl.models.GPT2) -> None:
    """What a resume does: the state and optimizer tensors, the optimizer's state (into an optimizer over
    another model of the same shape: only `load_weights` may change ``model``), then the weights."""
    ckpt = load_checkpoint(path, require=TRAINER_FIELDS)
    restore_optimizer(_optimizer(_model()), ckpt)
    load_weights(model, path)


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and every entry's mtime under ``root``."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in [root, *sorted(root.rglob("*"))]
    }


# --- ways to damage a checkpoint ---------------------------------------------------------------------


def _edit_state(path: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    state = json.loads((path / STATE_FILE).read_text())
    edit(state)
    (path / STATE_FILE).write_text(json.dumps(state, indent=1))


def _parent(doc: Any, keys: tuple[str | int, ...]) -> Any:
    for key in keys[:-1]:
        doc = doc[key]
    return doc


def set_field(*keys: str | int, value: object) -> Damage:
    return lambda path: _edit_state(path, lambda s: _parent(s, keys).__setitem__(keys[-1], value))


def drop_field(*keys: str | int) -> Damage:
    return lambda path: _edit_state(path, lambda s: _parent(s, keys).__delitem__(keys[-1]))


def write_state(content: str | bytes) -> Damage:
    data = content.encode() if isinstance(content, str) else content
    return lambda path: (path / STATE_FILE).write_bytes(data)


def _rehash(path: Path) -> None:
    """Record the tensor files' current checksums: the damage is then consistent, not bit rot."""
    _edit_state(path, lambda s: s.update(checksums={n: file_checksum(path / n) for n in (MODEL_FILE, OPTIMIZER_FILE)}))


def flip_data_byte(name: str) -> Damage:
    """XOR one bit of a byte in the middle of the tensor data (past the header)."""

    def damage(path: Path) -> None:
        raw = bytearray((path / name).read_bytes())
        start = 8 + int.from_bytes(raw[:8], "little")
        raw[start + (len(raw) - start) // 2] ^= 0x01
        (path / name).write_bytes(bytes(raw))

    return damage


def truncate(name: str) -> Damage:
    return lambda path: (path / name).write_bytes((path / name).read_bytes()[:-40])


def remove(name: str) -> Damage:
    return lambda path: (path / name).unlink()


def without_checksums(damage: Damage) -> Damage:
    """The damage on a checkpoint written before checksums were recorded."""

    def both(path: Path) -> None:
        drop_field("checksums")(path)
        damage(path)

    return both


def edit_tensors(name: str, edit: Callable[[dict[str, torch.Tensor]], object]) -> Damage:
    def damage(path: Path) -> None:
        tensors = {k: v.clone() for k, v in safetensors.torch.load_file(str(path / name)).items()}
        edit(tensors)
        safetensors.torch.save_file(tensors, str(path / name))
        _rehash(path)

    return damage


def poison(tensor: str, value: float, count: int) -> Damage:
    return edit_tensors(MODEL_FILE, lambda t: t[tensor].view(-1)[:count].fill_(value))


def rename_tensor(name: str, old: str, new: str) -> Damage:
    return edit_tensors(name, lambda t: t.__setitem__(new, t.pop(old)))


def other_model(cfg: tl.CausalConfig) -> Damage:
    def damage(path: Path) -> None:
        safetensors.torch.save_model(tl.models.GPT2(cfg), str(path / MODEL_FILE))
        _rehash(path)

    return damage


def _reshape_moment(t: dict[str, torch.Tensor]) -> None:
    t["0.exp_avg"] = t["0.exp_avg"].reshape(-1)


S, M, OPT = STATE_FILE, MODEL_FILE, OPTIMIZER_FILE
GROUP = ("optimizer", "param_groups", 0)
CASES = [
    # state.json as a whole
    pytest.param(write_state("{not json"), S, [":1: not valid JSON"], id="state-not-json"),
    pytest.param(write_state(""), S, ["not valid JSON"], id="state-empty"),
    pytest.param(write_state(b"\xff\xfe{}"), S, ["cannot read the checkpoint state"], id="state-not-utf8"),
    pytest.param(write_state("[" * 100_000), S, ["not valid JSON"], id="state-nested-too-deep"),
    pytest.param(write_state('{"step": ' + "1" * 5000 + "}"), S, ["not valid JSON", "digits"], id="state-huge-int"),
    pytest.param(write_state("[1, 2]"), S, ["expected a JSON object, found a list"], id="state-a-list"),
    pytest.param(set_field("format", value="typedlm.checkpoint/9"), S, ["format is 'typedlm.checkpoint/9'"], id="fmt"),
    pytest.param(drop_field("format"), S, ["format is missing"], id="format-missing"),
    pytest.param(remove(S), S, ["checkpoint state file not found"], id="state-missing"),
    # step
    pytest.param(drop_field("step"), S, ["step: missing"], id="step-missing"),
    pytest.param(set_field("step", value="1"), S, ["step: expected an integer, found '1'"], id="step-str"),
    pytest.param(set_field("step", value=True), S, ["step: expected an integer, found true"], id="step-bool"),
    pytest.param(set_field("step", value=1.0), S, ["step: expected an integer, found 1.0"], id="step-float"),
    pytest.param(set_field("step", value=-1), S, ["step: expected an integer >= 0, found -1"], id="step-negative"),
    pytest.param(set_field("step", value=6), S, ["step: 6 is beyond the run's total, train.steps=5"], id="step-past"),
    # config, train and the trainer's other fields
    pytest.param(drop_field("config"), S, ["config: missing"], id="config-missing"),
    pytest.param(set_field("config", value=[1]), S, ["config: expected an object, found a list"], id="config-list"),
    pytest.param(drop_field("train"), S, ["train: missing"], id="train-missing"),
    pytest.param(set_field("train", value="fast"), S, ["train: expected an object, found 'fast'"], id="train-str"),
    pytest.param(drop_field("train", "steps"), S, ["train.steps: missing"], id="train-steps-missing"),
    pytest.param(
        set_field("train", "steps", value=0), S, ["train.steps: expected an integer >= 1"], id="train-steps-0"
    ),
    pytest.param(set_field("train", "lr", value="0.1"), S, ["train.lr: expected a number, found '0.1'"], id="lr-str"),
    pytest.param(set_field("train", "seed", value=1.5), S, ["train.seed: expected an integer, found 1.5"], id="seed"),
    pytest.param(set_field("world_size", value=0), S, ["world_size: expected an integer >= 1, found 0"], id="world-0"),
    pytest.param(set_field("world_size", value=False), S, ["world_size: expected an integer, found false"], id="ws"),
    pytest.param(drop_field("world_size"), S, ["world_size: missing"], id="world-size-missing"),
    pytest.param(set_field("tokenizer_hash", value=5), S, ["tokenizer_hash: expected a string, found 5"], id="tok"),
    pytest.param(set_field("data_hash", value=None), S, ["data_hash: expected a string, found null"], id="data-hash"),
    pytest.param(set_field("rng", value=[]), S, ["rng: expected an object, found a list"], id="rng-list"),
    pytest.param(drop_field("log"), S, ["log: missing"], id="log-missing"),
    pytest.param(set_field("log", "steps", value={}), S, ["log.steps: expected a list, found an object"], id="logs"),
    pytest.param(
        set_field("log", "steps", 0, "loss", value="abc"),
        S,
        ["log.steps[0].loss: expected a number, found 'abc'"],
        id="log-loss-str",
    ),
    pytest.param(drop_field("log", "evals", 0, "val_loss"), S, ["log.evals[0].val_loss: missing"], id="log-val"),
    pytest.param(set_field("log", "format", value="x"), S, ["log.format: expected 'typedlm.trainlog/1'"], id="logf"),
    # optimizer
    pytest.param(drop_field("optimizer"), S, ["optimizer: missing"], id="optimizer-missing"),
    pytest.param(set_field("optimizer", value="adam"), S, ["optimizer: expected an object, found 'adam'"], id="opt"),
    pytest.param(
        drop_field("optimizer", "param_groups"), S, ["optimizer.param_groups: missing"], id="param-groups-missing"
    ),
    pytest.param(
        set_field("optimizer", "param_groups", value={}),
        S,
        ["optimizer.param_groups: expected a list, found an object"],
        id="param-groups-object",
    ),
    pytest.param(
        set_field(*GROUP, "params", 0, value="w"),
        S,
        ["optimizer.param_groups[0].params[0]: expected an integer, found 'w'"],
        id="param-index-str",
    ),
    pytest.param(
        set_field(*GROUP, "params", 1, value=0),
        S,
        ["optimizer.param_groups[0].params[1]: parameter 0 is listed twice"],
        id="param-index-twice",
    ),
    pytest.param(
        set_field(*GROUP, "betas", value=[0.9, 0.99, 0.5]),
        S,
        ["optimizer.param_groups[0].betas: expected 2 numbers, found 3 values"],
        id="betas-three",
    ),
    pytest.param(
        set_field(*GROUP, "lr", value="fast"),
        S,
        ["optimizer.param_groups[0].lr: expected a number, found 'fast'"],
        id="group-lr-str",
    ),
    pytest.param(
        set_field(*GROUP, "amsgrad", value="no"),
        S,
        ["optimizer.param_groups[0].amsgrad: expected true or false, found 'no'"],
        id="group-flag-str",
    ),
    pytest.param(drop_field("optimizer", "scalars"), S, ["optimizer.scalars: missing"], id="scalars-missing"),
    pytest.param(
        set_field("optimizer", "scalars", value={"x": {}}),
        S,
        ["optimizer.scalars.x: expected a parameter index"],
        id="scalars-bad-key",
    ),
    pytest.param(
        set_field("optimizer", "scalars", value={"a\nb": {}}),
        S,
        ["optimizer.scalars['a\\nb']: expected a parameter index"],
        id="scalars-key-with-newline",
    ),
    pytest.param(
        set_field("optimizer", "scalars", value={"99": {"step": 1}}),
        S,
        ["optimizer.scalars.99: parameter 99 is in no param_group"],
        id="scalars-unlisted",
    ),
    # checksums
    pytest.param(set_field("checksums", value=[]), S, ["checksums: expected an object, found a list"], id="sums-list"),
    pytest.param(drop_field("checksums", M), S, ["checksums.model.safetensors: missing"], id="checksum-missing"),
    pytest.param(
        set_field("checksums", OPT, value="md5:00"),
        S,
        ["checksums.optimizer.safetensors: expected 'sha256:' and 64 hex digits, found 'md5:00'"],
        id="checksum-malformed",
    ),
    # the tensor files' bytes
    pytest.param(flip_data_byte(M), M, ["checksum mismatch", "bit rot or an edit"], id="model-flipped-byte"),
    pytest.param(flip_data_byte(OPT), OPT, ["checksum mismatch", "bit rot or an edit"], id="optimizer-flipped-byte"),
    pytest.param(truncate(M), M, ["checksum mismatch"], id="model-truncated"),
    pytest.param(truncate(OPT), OPT, ["checksum mismatch"], id="optimizer-truncated"),
    pytest.param(without_checksums(truncate(M)), M, ["not a readable safetensors file"], id="old-model-truncated"),
    pytest.param(without_checksums(truncate(OPT)), OPT, ["not a readable safetensors file"], id="old-optim-truncated"),
    pytest.param(remove(M), M, ["model weights not found"], id="model-missing"),
    pytest.param(remove(OPT), OPT, ["checkpoint file not found"], id="optimizer-missing-file"),
    # weights that parse but cannot be used
    pytest.param(
        poison("embed.weight", math.nan, 3), M, ["tensor 'embed.weight' holds 3 NaN or infinite values"], id="nan"
    ),
    pytest.param(
        poison("transformer.ln_f.bias", math.inf, 1),
        M,
        ["tensor 'transformer.ln_f.bias' holds 1 NaN or infinite value (of 8)"],
        id="inf",
    ),
    pytest.param(
        poison("transformer.pos.weight", -math.inf, 2), M, ["'transformer.pos.weight' holds 2 NaN"], id="minus-inf"
    ),
    pytest.param(
        edit_tensors(OPT, lambda t: t["0.exp_avg_sq"].view(-1)[:4].fill_(math.nan)),
        OPT,
        ["tensor '0.exp_avg_sq' holds 4 NaN or infinite values"],
        id="optimizer-nan",
    ),
    pytest.param(
        other_model(dataclasses.replace(CFG, head_dim=8)),
        M,
        ["tensor 'embed.weight' has shape (16, 16), but GPT2 has (16, 8)", "tensors differ"],
        id="weights-of-another-shape",
    ),
    pytest.param(
        rename_tensor(M, "transformer.ln_f.bias", "transformer.ln_f.beta"),
        M,
        ["weights do not match GPT2", "missing ['transformer.ln_f.bias']", "unexpected ['transformer.ln_f.beta']"],
        id="weights-renamed",
    ),
    # optimizer tensors
    pytest.param(
        rename_tensor(OPT, "0.exp_avg", "x.exp_avg"), OPT, ["tensor 'x.exp_avg' is not named"], id="opt-name-x"
    ),
    pytest.param(rename_tensor(OPT, "0.exp_avg", "exp_avg"), OPT, ["tensor 'exp_avg' is not named"], id="opt-no-index"),
    pytest.param(rename_tensor(OPT, "0.exp_avg", "00.exp_avg"), OPT, ["tensor '00.exp_avg' is not named"], id="opt-00"),
    pytest.param(
        rename_tensor(OPT, "0.exp_avg", "99.exp_avg"),
        OPT,
        ["tensor '99.exp_avg' is for parameter 99, which no param_group lists"],
        id="opt-unlisted-param",
    ),
    pytest.param(
        edit_tensors(OPT, _reshape_moment),
        OPT,
        ["tensor '0.exp_avg' has shape (128,), but parameter 0 of this optimizer has (16, 8)"],
        id="opt-moment-shape",
    ),
]


@pytest.mark.parametrize(("damage", "file", "fragments"), CASES)
def test_damaged_checkpoint_is_refused_naming_file_and_field(
    pristine: Path, tmp_path: Path, damage: Damage, file: str, fragments: list[str]
) -> None:
    path = tmp_path / "checkpoint"
    shutil.copytree(pristine, path)
    damage(path)
    before = _snapshot(tmp_path)
    model = _model(seed=7)
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(CheckpointError) as info:
        _load_all(path, model)

    message = str(info.value)
    assert type(info.value) is CheckpointError
    assert message.startswith(str(path / file)), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    assert _snapshot(tmp_path) == before, "the failed load changed files"
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items()), "the model was changed"


def test_the_undamaged_checkpoint_loads_whole(pristine: Path) -> None:
    """The control for the table: every failure above comes from its damage."""
    model = _model(seed=7)
    _load_all(pristine, model)
    saved = safetensors.torch.load_file(str(pristine / MODEL_FILE))
    assert all(torch.equal(saved[name], model.state_dict()[name]) for name in saved)
    assert read_state(pristine, require=TRAINER_FIELDS)["step"] == 1


def test_an_overflowing_sum_is_not_mistaken_for_infinite_weights(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    shutil.copytree(pristine, path)
    edit_tensors(MODEL_FILE, lambda t: t["transformer.ln_f.bias"].fill_(3e38))(path)  # finite; the sum is inf
    model = _model()
    load_weights(model, path)
    assert bool((model.state_dict()["transformer.ln_f.bias"] == 3e38).all())


def test_the_trainer_writes_every_trainer_field(tmp_path: Path) -> None:
    """TRAINER_FIELDS is what the trainer (typedlm/training/trainer.py) writes, and its checkpoints pass every check."""
    tokens = (np.arange(400) % CFG.vocab).astype(np.uint16)
    tc = dataclasses.replace(TC, steps=1)
    train(_model(), CFG, tokens[:300], tokens[300:], tc, out_dir=tmp_path)
    found = find_checkpoint(tmp_path)
    assert found is not None
    state = read_state(found, require=TRAINER_FIELDS)
    assert set(TRAINER_FIELDS) | {"format", "step", "config", "blocks", "optimizer", "checksums"} == set(state)
    model = _model()
    load_weights(model, found)
    restore_optimizer(configure_optimizer(model, tc, torch.device("cpu")), load_checkpoint(found))


# --- trainlog.json -------------------------------------------------------------------------------------


def _log_case(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def write(file: Path) -> None:
        d = _log().to_dict()
        d["steps"] = [dataclasses.asdict(StepRecord(i, 2.5, 1e-3, 0.5)) for i in range(4)]
        edit(d)
        file.write_text(json.dumps(d))

    return write


LOG_CASES = [
    pytest.param(
        _log_case(lambda d: d["steps"][3].update(loss="abc")),
        "steps[3].loss: expected a number, found 'abc'",
        id="loss-str",
    ),
    pytest.param(_log_case(lambda d: d["steps"][1].pop("lr")), "steps[1].lr: missing", id="lr-missing"),
    pytest.param(
        _log_case(lambda d: d["steps"].append(7)), "steps[4]: expected an object, found 7", id="record-not-object"
    ),
    pytest.param(
        _log_case(lambda d: d["evals"][0].update(step=-2)),
        "evals[0].step: expected an integer >= 0",
        id="negative-step",
    ),
    pytest.param(
        _log_case(lambda d: d.update(throughput=None)), "throughput: expected a list, found null", id="throughput-null"
    ),
    pytest.param(
        _log_case(lambda d: d.update(world_size=True)),
        "world_size: expected an integer, found true",
        id="world-size-bool",
    ),
    pytest.param(
        _log_case(lambda d: d.update(wall_s="slow")), "wall_s: expected a number, found 'slow'", id="wall-str"
    ),
    pytest.param(_log_case(lambda d: d.update(status=3)), "status: expected a string, found 3", id="status-int"),
    pytest.param(_log_case(lambda d: d.pop("config")), "config: missing", id="config-missing"),
    pytest.param(
        _log_case(lambda d: d.update(message=[])), "message: expected a string, found a list", id="message-list"
    ),
    pytest.param(
        _log_case(lambda d: d.update(extensions=[{"step": 3, "was": 0, "steps": 9}])),
        "extensions[0].was: expected an integer >= 1, found 0",
        id="extension-was-0",
    ),
    pytest.param(
        _log_case(lambda d: d.update(format="x")), "format: expected 'typedlm.trainlog/1', found 'x'", id="format-wrong"
    ),
    pytest.param(lambda f: f.write_text("[]"), "format: expected 'typedlm.trainlog/1', found a list", id="a-list"),
    pytest.param(lambda f: f.write_text('{"format": '), ":1: not a valid TrainLog JSON file", id="not-json"),
    pytest.param(lambda f: f.write_bytes(b"\xff"), "cannot read the TrainLog file", id="not-utf8"),
    pytest.param(lambda f: f.write_text("[" * 100_000), "not a valid TrainLog JSON file", id="too-deep"),
    pytest.param(lambda f: None, "TrainLog file not found", id="missing-file"),
]


@pytest.mark.parametrize(("write", "problem"), LOG_CASES)
def test_damaged_trainlog_is_refused_naming_file_and_field(
    tmp_path: Path, write: Callable[[Path], None], problem: str
) -> None:
    file = tmp_path / "trainlog.json"
    write(file)
    with pytest.raises(DataFileError) as info:
        TrainLog.load(file)
    message = str(info.value)
    assert message.startswith(f"{file}"), message
    assert problem in message and "\n" not in message, message


def test_non_finite_numbers_round_trip_through_the_trainlog(tmp_path: Path) -> None:
    log = _log()
    log.steps.append(StepRecord(1, math.nan, 1e-3, math.inf))
    log.evals.append(EvalRecord(2, -math.inf))
    log.save(tmp_path / "trainlog.json")
    assert '"nan"' in (tmp_path / "trainlog.json").read_text()
    back = TrainLog.load(tmp_path / "trainlog.json")
    assert math.isnan(back.steps[1].loss) and back.steps[1].grad_norm == math.inf
    assert back.evals[1].val_loss == -math.inf
    assert back.steps[0] == log.steps[0] and back.throughput == log.throughput and back.config == log.config


# --- fuzzing: nothing but CheckpointError / DataFileError escapes --------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
wrong_values = st.sampled_from([None, True, False, -1, 0, 2, 1.5, "x", "nan", [], {}, [1], {"a": 1}]) | json_values
DELETE = object()


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path into a JSON document (``("log", "steps", 0, "loss")``)."""
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        found += _paths(inner, (*prefix, key))
    return found


def _mutated(doc: Any, edits: list[tuple[tuple[str | int, ...], object]]) -> Any:
    """``doc`` with each path set to a value, or deleted; paths that an earlier edit removed are skipped."""
    doc = json.loads(json.dumps(doc))
    for keys, value in edits:
        try:
            parent = _parent(doc, keys)
            if value is DELETE:
                del parent[keys[-1]]
            else:
                parent[keys[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def _edits(doc: Any) -> st.SearchStrategy[list[tuple[tuple[str | int, ...], object]]]:
    return st.lists(st.tuples(st.sampled_from(_paths(doc)), st.just(DELETE) | wrong_values), min_size=1, max_size=3)


STATE_SHAPE = {  # the keys of the checkpoint's state.json, for the fuzzer to aim at
    "format": CHECKPOINT_FORMAT,
    **_state(1),
    "blocks": {"heads": [CFG.heads] * CFG.layers, "ffn": [CFG.ffn_hidden] * CFG.layers},
    "optimizer": {"param_groups": _trained()[1].state_dict()["param_groups"], "scalars": {}},
    "checksums": dict.fromkeys([MODEL_FILE, OPTIMIZER_FILE], ""),
}
STATE_SHAPE = json.loads(json.dumps(STATE_SHAPE))  # tuples become lists, as in the file
FUZZ = settings(max_examples=150, deadline=None)


def test_the_fuzzer_aims_at_every_key_of_the_real_state(pristine: Path) -> None:
    assert _paths(json.loads((pristine / STATE_FILE).read_text())) == _paths(STATE_SHAPE)


@pytest.fixture(scope="module")
def fuzz_dir(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "checkpoint"
    shutil.copytree(pristine, path)
    return path


def _only_checkpoint_errors(path: Path, content: bytes) -> str:
    """Load a checkpoint whose state.json is ``content``: "loaded", or "refused" with a one-line
    CheckpointError naming the checkpoint; any other exception escapes and fails the test."""
    (path / STATE_FILE).write_bytes(content)
    try:
        _load_all(path, _model())
    except CheckpointError as e:
        assert type(e) is CheckpointError and "\n" not in str(e) and str(e).startswith(str(path)), str(e)
        return "refused"
    return "loaded"


@FUZZ
@given(
    st.binary(max_size=64) | st.text(max_size=64).map(str.encode) | json_values.map(lambda v: json.dumps(v).encode())
)
def test_fuzzed_state_text_raises_only_checkpoint_error(fuzz_dir: Path, content: bytes) -> None:
    assert _only_checkpoint_errors(fuzz_dir, content) in ("loaded", "refused")


@FUZZ
@given(
    st.fixed_dictionaries(
        {"format": st.just(CHECKPOINT_FORMAT)}, optional=dict.fromkeys(set(STATE_SHAPE) - {"format"}, wrong_values)
    )
)
def test_fuzzed_state_fields_raise_only_checkpoint_error(fuzz_dir: Path, state: dict[str, Any]) -> None:
    assert _only_checkpoint_errors(fuzz_dir, json.dumps(state).encode()) in ("loaded", "refused")


@FUZZ
@given(_edits(STATE_SHAPE))
def test_fuzzed_state_values_deep_inside_raise_only_checkpoint_error(
    pristine: Path, fuzz_dir: Path, edits: list[tuple[tuple[str | int, ...], object]]
) -> None:
    state = _mutated(json.loads((pristine / STATE_FILE).read_text()), edits)
    assert _only_checkpoint_errors(fuzz_dir, json.dumps(state).encode()) in ("loaded", "refused")


LOG_DICT = _log().to_dict()


LOG_EDITS = _edits(LOG_DICT) | st.fixed_dictionaries({}, optional=dict.fromkeys(LOG_DICT, wrong_values)).map(
    lambda fields: [((key,), value) for key, value in fields.items()]
)


@FUZZ
@given(LOG_EDITS)
def test_fuzzed_trainlog_raises_only_data_file_error(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[tuple[str | int, ...], object]]
) -> None:
    file = tmp_path_factory.getbasetemp() / "fuzzed-trainlog.json"
    file.write_text(json.dumps(_mutated(LOG_DICT, edits)))
    for source in ("load", "from_dict"):
        try:
            if source == "load":
                TrainLog.load(file)
            else:
                TrainLog.from_dict(_mutated(LOG_DICT, edits), str(file))
        except DataFileError as e:
            assert "\n" not in str(e) and str(e).startswith(str(file)), str(e)


@FUZZ
@given(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_trainlog_text_raises_only_data_file_error(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    file = tmp_path_factory.getbasetemp() / "fuzzed-trainlog-text.json"
    file.write_bytes(content)
    try:
        TrainLog.load(file)
    except DataFileError as e:
        assert "\n" not in str(e) and str(e).startswith(str(file)), str(e)
