"""The sorting example: data and masks, the held-out split, attention weights, the YAML config, a run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import typedlm as tl
from examples import sort_gpt2
from examples.sort_gpt2 import SortBatches, SortConfig, Task, draw, is_held_out, make_batch
from typedlm.attention_maps import attention_weights, capture_attention
from typedlm.training import TrainLog, train
from typedlm.training.batches import BatchSlot

ROOT = Path(__file__).resolve().parents[1]


def test_batch_is_sequence_then_sorted_with_the_prefix_masked() -> None:
    x, y, mask = make_batch(torch.tensor([[2, 0, 1, 1]]))
    assert x.tolist() == [[2, 0, 1, 1, 0, 1, 1]] and y.tolist() == [[0, 1, 1, 0, 1, 1, 2]]
    assert mask.tolist() == [[False, False, False, True, True, True, True]]  # targets from the sorted half only


def test_masked_positions_do_not_change_the_loss() -> None:
    _, y, mask = make_batch(torch.tensor([[2, 0, 1], [1, 1, 0]]))
    logits = torch.randn(2, 5, 3)
    scrambled = logits.clone()
    scrambled[:, :2] = torch.randn(2, 2, 3)  # positions whose targets are in the unsorted prefix
    loss = tl.losses.masked_cross_entropy(logits, y, mask)
    assert torch.equal(loss, tl.losses.masked_cross_entropy(scrambled, y, mask))


def test_held_out_sequences_are_never_drawn_for_training() -> None:
    task = Task(length=6, digits=3, held_out_every=4)
    generator = torch.Generator().manual_seed(0)
    train, test = (
        draw(500, task, held_out=False, generator=generator),
        draw(500, task, held_out=True, generator=generator),
    )
    assert train.shape == test.shape == (500, 6) and int(train.max()) <= 2
    assert not is_held_out(train, task).any() and is_held_out(test, task).all()
    assert not {tuple(r) for r in train.tolist()} & {tuple(r) for r in test.tolist()}


def test_the_batch_source_is_a_function_of_the_slot_and_shards_one_global_batch() -> None:
    task = Task(length=4, digits=3, held_out_every=4)
    source = SortBatches(task, batch=3, seed=11)
    first = source.train_batch(BatchSlot(5))
    assert all(torch.equal(a, b) for a, b in zip(first, source.train_batch(BatchSlot(5)), strict=True))
    assert not torch.equal(first[0], source.train_batch(BatchSlot(6))[0])
    whole = SortBatches(task, batch=12, seed=11).train_batch(BatchSlot(5))  # one process, 2 ranks x 2 micro-steps
    blocks = [source.train_batch(BatchSlot(5, micro, 2, rank, 2)) for micro in range(2) for rank in range(2)]
    for part, joined in zip(zip(*blocks, strict=True), whole, strict=True):
        assert torch.equal(torch.cat(part), joined)
    train_rows, val_rows = (batch[0][:, : task.length] for batch in (first, source.val_batch(BatchSlot(0))))
    assert not is_held_out(train_rows, task).any() and is_held_out(val_rows, task).all()


CFG = tl.CausalConfig(batch=2, seq_len=12, vocab=5, heads=3, head_dim=4, ffn_hidden=24, layers=2)


def test_attention_weights_reproduce_the_layer_output() -> None:
    attn = tl.nn.CausalSelfAttention(CFG, seed=1).eval()
    x = torch.randn(2, 7, CFG.d_model)
    weights = attention_weights(attn, x)
    assert weights.shape == (2, 3, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))
    assert torch.all(weights.triu(1) == 0)  # causal: no weight on later positions
    v = attn.qkv(x)[..., 2 * CFG.d_model :].view(2, 7, 3, 4).transpose(1, 2)
    y = (weights @ v).transpose(1, 2).reshape(2, 7, CFG.d_model)
    torch.testing.assert_close(attn.proj(y), attn(x))


def test_capture_attention_reads_the_last_blocks_normalised_input() -> None:
    model = tl.models.GPT2(CFG, seed=2).train()
    ids = torch.randint(5, (2, 9))
    weights = capture_attention(model, ids)
    assert model.training  # restored
    with torch.no_grad():
        h = model.transformer.pos(model.embed(ids))
        h = model.transformer.blocks[0](h)
        last = model.transformer.blocks[1]
        assert isinstance(last, tl.nn.TransformerBlock)
        expected = attention_weights(last.attn, last.ln_1(h))
    torch.testing.assert_close(weights, expected)
    first = model.transformer.blocks[0]
    assert isinstance(first, tl.nn.TransformerBlock)
    assert not torch.allclose(capture_attention(model, ids, block=0), weights)


def test_config_file_and_its_errors(tmp_path: Path) -> None:
    config = SortConfig.load(ROOT / "examples" / "sort_gpt2.yaml")
    assert (config.task.length, config.task.digits, config.eval.sequences) == (6, 3, 1000)
    assert config.model_config().seq_len == 11 and config.model_config().vocab == 3
    with pytest.raises(tl.ConfigError, match=r"unknown key.*lenght.*'task'"):
        SortConfig.from_dict({"task": {"lenght": 6}})
    with pytest.raises(tl.ConfigError, match=r"unknown section.*optim"):
        SortConfig.from_dict({"optim": {}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    assert sort_gpt2.main(["-c", str(bad)]) == 2


def test_a_small_run_trains_evaluates_and_draws_one_map_per_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SortConfig.from_dict({
        "task": {"length": 3, "digits": 3},
        "model": {"layers": 1, "heads": 2, "head_dim": 8, "ffn_hidden": 32, "dropout": 0.0},
        "train": {"steps": 60, "batch": 32, "lr": 3e-3},
        "eval": {"sequences": 50},
        "output": {"dir": str(tmp_path)},
    })  # fmt: skip
    logs: list[TrainLog] = []

    def typedlm_train(*args: Any, **kwargs: Any) -> TrainLog:
        assert isinstance(kwargs["batches"], SortBatches) and kwargs["loss"] is sort_gpt2.masked_loss
        logs.append(train(*args, **kwargs))
        return logs[-1]

    monkeypatch.setattr(sort_gpt2, "train", typedlm_train)
    accuracy = sort_gpt2.run(config)
    out = capsys.readouterr().out
    assert 0.0 <= accuracy <= 1.0 and "held-out accuracy:" in out and "/50 " in out
    first, last = (float(v) for v in out.split("masked loss ")[1].split(" in ")[0].split(" → "))
    assert last < first < math.log(3) + 0.5
    assert (
        len(logs) == 1
        and len(logs[0].steps) == 60
        and (first, last) == pytest.approx((logs[0].first_loss, logs[0].final_loss), abs=1e-4)
    )  # trained by typedlm.training.train, whose log the example reports
    maps = sorted(p.name for p in tmp_path.glob("*.png"))
    assert maps == ["attention_block0_head0.png", "attention_block0_head1.png"]
    assert (tmp_path / maps[0]).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_full_size_sorts_every_held_out_sequence(tmp_path: Path) -> None:
    """minGPT's demo: length 6, digits 0-2; minGPT sorts 5000/5000."""
    config = SortConfig.load(ROOT / "examples" / "sort_gpt2.yaml")
    config = SortConfig.from_dict({**_as_dict(config), "output": {"dir": str(tmp_path)}})
    assert sort_gpt2.run(config) == 1.0


def _as_dict(config: SortConfig) -> dict[str, dict[str, object]]:
    return {f.name: dataclasses.asdict(getattr(config, f.name)) for f in dataclasses.fields(config)}
