"""Library entry points refuse bad arguments with typedlm's own error, naming the field, id or value,
before any work: `CausalConfig` / `from_dict`, `TrainConfig`, `train`, the model, the losses, sampling
and generation, and the preflight checks (memory, paths). Files typedlm writes honour the umask."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import typedlm as tl
from typedlm.atomic import write_text_atomic
from typedlm.errors import NonFiniteError, TypedLMError
from typedlm.sampling import sample_next
from typedlm.token_ids import check_token_ids, ids_validated
from typedlm.training import preflight
from typedlm.training.checkpoint import save_checkpoint
from typedlm.training.trainer import TrainConfig, train
from typedlm.training.trainlog import StepRecord, TrainLog

CFG = tl.CausalConfig(batch=2, seq_len=8, vocab=16, heads=2, head_dim=4, ffn_hidden=16, layers=1)
TC = TrainConfig(steps=2, warmup_steps=0, eval_every=0, eval_batches=1, progress=False)
TOKENS = np.arange(64, dtype=np.int64) % 16
MODEL = tl.models.GPT2(CFG)
LOGITS = torch.randn(2, 4, 16)
GOOD_IDS = torch.zeros(2, 4, dtype=torch.long)


def _ids(value: int, at: tuple[int, int] = (1, 2)) -> torch.Tensor:
    ids = GOOD_IDS.clone()
    ids[at] = value
    return ids


def _cfg(**changes: Any) -> Callable[[], object]:
    return lambda: tl.CausalConfig(**(CFG.to_dict() | changes))


def _tc(**changes: Any) -> Callable[[], object]:
    return lambda: TrainConfig(**(TC.to_dict() | changes))


def _train(train_tokens: Any, val_tokens: Any = TOKENS) -> Callable[[], object]:
    return lambda: train(tl.models.GPT2(CFG), CFG, train_tokens, val_tokens, TC)


def _nan_logits() -> torch.Tensor:
    logits = torch.randn(2, 16)
    logits[1, 3] = math.nan
    return logits


# (id, call, error class, fragments of its message)
CASES: list[tuple[str, Callable[[], object], type[TypedLMError], list[str]]] = [
    ("config heads 0", _cfg(heads=0), tl.ConfigError, ["CausalConfig.heads=0", ">= 1"]),
    ("config seq_len str", _cfg(seq_len="8"), tl.ConfigError, ["CausalConfig.seq_len='8'", "int"]),
    ("config vocab bool", _cfg(vocab=True), tl.ConfigError, ["CausalConfig.vocab=True"]),
    ("config heads float", _cfg(heads=2.0), tl.ConfigError, ["CausalConfig.heads=2.0"]),
    ("config dropout 1", _cfg(dropout=1.0), tl.ConfigError, ["CausalConfig.dropout=1.0", "[0, 1)"]),
    ("config eps nan", _cfg(layer_norm_eps=math.nan), tl.ConfigError, ["CausalConfig.layer_norm_eps=nan"]),
    ("config tie str", _cfg(tie_embeddings="yes"), tl.ConfigError, ["CausalConfig.tie_embeddings='yes'", "bool"]),
    ("from_dict list", lambda: tl.CausalConfig.from_dict([1, 2]), tl.ConfigError, ["from_dict", "list"]),  # type: ignore[arg-type]  # the wrong type is the point
    ("from_dict int keys", lambda: tl.CausalConfig.from_dict({1: 2}), tl.ConfigError, ["from_dict"]),  # type: ignore[dict-item]  # the wrong type is the point
    ("from_dict unknown", lambda: tl.CausalConfig.from_dict(CFG.to_dict() | {"d_ff": 3}), tl.ConfigError,
     ["unknown field(s) d_ff"]),
    ("from_dict missing", lambda: tl.CausalConfig.from_dict({"batch": 1}), tl.ConfigError, ["missing field(s)"]),
    ("train lr 0", _tc(lr=0.0), tl.ConfigError, ["TrainConfig.lr=0.0", "> 0"]),
    ("train lr nan", _tc(lr=math.nan), tl.ConfigError, ["TrainConfig.lr=nan", "finite"]),
    ("train lr inf", _tc(lr=math.inf), tl.ConfigError, ["TrainConfig.lr=inf"]),
    ("train lr str", _tc(lr="1e-3"), tl.ConfigError, ["TrainConfig.lr='1e-3'"]),
    ("train min_lr above lr", _tc(min_lr=1.0), tl.ConfigError, ["TrainConfig.min_lr=1.0", "<= lr"]),
    ("train steps bool", _tc(steps=True), tl.ConfigError, ["TrainConfig.steps=True", "int"]),
    ("train steps str", _tc(steps="2"), tl.ConfigError, ["TrainConfig.steps='2'"]),
    ("train steps 0", _tc(steps=0), tl.ConfigError, ["TrainConfig.steps=0", ">= 1"]),
    ("train beta2 1", _tc(beta2=1.0), tl.ConfigError, ["TrainConfig.beta2=1.0", "[0, 1)"]),
    ("train device", _tc(device="tpu"), tl.ConfigError, ["TrainConfig.device='tpu'", "auto, cpu, cuda"]),
    ("train dtype", _tc(dtype="fp8"), tl.ConfigError, ["TrainConfig.dtype='fp8'"]),
    ("train compile str", _tc(compile="yes"), tl.ConfigError, ["TrainConfig.compile='yes'", "bool"]),
    ("train() float tokens", _train(TOKENS.astype(np.float32)), tl.ShapeError, ["train_tokens", "float32"]),
    ("train() 2-D tokens", _train(TOKENS.reshape(8, 8)), tl.ShapeError, ["train_tokens", "1-D", "(8, 8)"]),
    ("train() a list", _train(list(TOKENS)), tl.ShapeError, ["train_tokens", "list"]),
    ("train() id past vocab", _train(np.where(np.arange(64) == 7, 16, TOKENS)), tl.ShapeError,
     ["train_tokens[7] is token id 16", "0..15", "vocab=16"]),
    ("train() negative val id", _train(TOKENS, np.where(np.arange(64) == 3, -2, TOKENS)), tl.ShapeError,
     ["val_tokens[3] is token id -2"]),
    ("model float ids", lambda: MODEL(GOOD_IDS.float()), tl.ShapeError, ["GPT2", "integer", "float32"]),
    ("model id past vocab", lambda: MODEL(_ids(16)), tl.ShapeError,
     ["token id 16 at position (1, 2)", "0..15", "cfg.vocab=16"]),
    ("model negative id", lambda: MODEL(_ids(-1)), tl.ShapeError, ["token id -1 at position (1, 2)"]),
    ("loss target past vocab", lambda: tl.losses.cross_entropy_indexed(LOGITS, _ids(99)), tl.ShapeError,
     ["cross_entropy_indexed: targets", "token id 99", "0..15"]),
    ("next-token loss id", lambda: tl.losses.next_token_cross_entropy(LOGITS, _ids(16)), tl.ShapeError,
     ["next_token_cross_entropy: ids", "token id 16 at position (1, 2)"]),
    ("masked loss id", lambda: tl.losses.masked_cross_entropy(LOGITS, _ids(-5), GOOD_IDS.bool()), tl.ShapeError,
     ["masked_cross_entropy: targets", "token id -5"]),
    ("loss float targets", lambda: tl.losses.cross_entropy_indexed(LOGITS, GOOD_IDS.float()), tl.ShapeError,
     ["cross_entropy_indexed", "targets"]),
    ("generate prompt id", lambda: MODEL.generate(_ids(16), 2), tl.ShapeError, ["prompt holds token id 16"]),
    ("sampling temperature nan", lambda: tl.Sampling(temperature=math.nan), tl.ConfigError,
     ["temperature=nan"]),
    ("sampling temperature -1", lambda: tl.Sampling(temperature=-1.0), tl.ConfigError,
     ["temperature=-1.0"]),
    ("sampling top_k 0", lambda: tl.Sampling(top_k=0), tl.ConfigError, ["top_k=0"]),
    ("sampling top_k bool", lambda: tl.Sampling(top_k=True), tl.ConfigError, ["top_k=True"]),
    ("sampling top_p 0", lambda: tl.Sampling(top_p=0.0), tl.ConfigError, ["top_p=0.0"]),
    ("sampling top_p nan", lambda: tl.Sampling(top_p=math.nan), tl.ConfigError, ["top_p=nan"]),
    ("generate max tokens", lambda: MODEL.generate(GOOD_IDS, -1), tl.ConfigError, ["max_new_tokens=-1"]),
    ("sample nan logits", lambda: sample_next(_nan_logits()), NonFiniteError, ["logits[1, 3] is nan"]),
    ("sample greedy nan", lambda: sample_next(_nan_logits(), temperature=0.0), NonFiniteError, ["logits[1, 3]"]),
    ("sample +inf logits", lambda: sample_next(torch.full((1, 4), math.inf)), NonFiniteError, ["logits[0, 0] is inf"]),
    ("sample all -inf row", lambda: sample_next(torch.full((1, 4), -math.inf)), NonFiniteError, ["logits[0, 0]"]),
    ("memory estimate", lambda: preflight.check_memory(tl.CausalConfig.gpt2_xl(batch=64), torch.device("cpu"),
     available=8 * 2**30), tl.ConfigError, ["need at least", "but the cpu has 8.0 GiB", "48 layers"]),
    ("output dir is a file", lambda: preflight.check_output_dir("--out", Path(__file__)), tl.ConfigError,
     ["--out", "is a file"]),
    ("output file is a dir", lambda: preflight.check_output_file("--log", Path(__file__).parent), tl.ConfigError,
     ["--log", "is a directory"]),
    ("input file missing", lambda: preflight.check_input_file("--data-file", Path("no/such/file.txt")),
     tl.ConfigError, ["--data-file no/such/file.txt", "no such file"]),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_call_is_refused_with_typedlms_error_naming_the_fault(
    call: Callable[[], object],
    error: type[TypedLMError],
    fragments: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert list(tmp_path.iterdir()) == [], "a refused call wrote files"


def test_a_refused_train_call_leaves_its_out_dir_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bad = np.where(np.arange(64) == 7, 16, TOKENS)
    with pytest.raises(tl.ShapeError):
        train(tl.models.GPT2(CFG), CFG, bad, TOKENS, TC, out_dir=out)
    assert not out.exists()


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
def test_the_memory_estimate_is_below_what_torch_allocates_for_a_real_step(amp: torch.dtype | None) -> None:
    """The estimate is a lower bound: a real training step of a small model needs more."""
    cfg = tl.CausalConfig(batch=4, seq_len=64, vocab=512, heads=4, head_dim=16, ffn_hidden=256, layers=2)
    model = tl.models.GPT2(cfg)
    optimizer = torch.optim.AdamW(model.parameters())
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len + 1))
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        logits = model(ids[:, :-1])
        saved = sum(t.numel() * t.element_size() for t in _saved_tensors(logits))
        loss = tl.losses.next_token_cross_entropy(logits, ids)
    loss.backward()
    optimizer.step()
    state = sum(p.numel() * 4 * 4 for p in model.parameters())  # weights, grads, two moments
    activation_bytes = 4 if amp is None else 2
    need = preflight.training_memory_bytes(cfg, activation_bytes)
    assert need <= state + saved + logits.numel() * logits.element_size()  # + the logits' gradient


def _saved_tensors(out: torch.Tensor) -> list[torch.Tensor]:
    """The distinct tensors autograd keeps for the backward pass of ``out`` (an independent count)."""
    seen: dict[int, torch.Tensor] = {}
    stack = [out.grad_fn]
    visited = set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in visited:
            continue
        visited.add(id(fn))
        for name in dir(fn):
            if name.startswith("_saved_"):
                value = getattr(fn, name, None)
                if isinstance(value, torch.Tensor):
                    seen.setdefault(value.data_ptr(), value)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return list(seen.values())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_typedlm_writes_honour_the_umask(umask: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "note.txt", "x")
        model = tl.models.GPT2(CFG)
        optimizer = torch.optim.AdamW(model.parameters())
        save_checkpoint(tmp_path / "run", model, optimizer, {"step": 0, "config": CFG.to_dict()})
        log = TrainLog(config={}, train={}, device="cpu", dtype="fp32", world_size=1, data={})
        log.steps.append(StepRecord(0, 1.0, 1e-3, 1.0))
        log.save(tmp_path / "trainlog.json")
    finally:
        os.umask(previous)
    written = [tmp_path / "note.txt", tmp_path / "trainlog.json", *(tmp_path / "run" / "checkpoint").iterdir()]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((tmp_path / "run" / "checkpoint").stat().st_mode) == 0o777 & ~umask


def test_an_atomic_write_through_a_symbolic_link_replaces_the_file_it_names(tmp_path: Path) -> None:
    target = tmp_path / "precious.json"
    target.write_text("old\n")
    link = tmp_path / "log.json"
    link.symlink_to(target)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_token_id_checks_are_skipped_with_checks_off_and_for_validated_ids() -> None:
    with tl.checks.mode("off"), pytest.raises(IndexError) as raised:  # torch's own error: nothing checked
        MODEL(_ids(16))
    assert not isinstance(raised.value, TypedLMError)
    with ids_validated(), pytest.raises(tl.ShapeError, match="token id 16"):
        MODEL(_ids(16))  # on the CPU the check is free and stays on
    check_token_ids(torch.tensor([[-100, 3]]), 4, where="loss", source="vocab", ignore_index=-100)
    with pytest.raises(tl.ShapeError, match=r"token id -100 at position \(0, 0\)"):
        check_token_ids(torch.tensor([[-100, 3]]), 4, where="loss", source="vocab")
