"""The training loop: a model, a batch source and a loss.

One optimizer step: set the learning rate (linear warmup, then cosine decay to ``min_lr``), reseed the
dropout RNG from ``(seed, rank, step)``, run ``grad_accum`` micro-batches forward/backward (bf16 autocast
on CUDA when asked), clip the gradient norm, step AdamW. Batches (`BatchSource`) and the RNG are pure
functions of the step, so a run resumed from a checkpoint reproduces the uninterrupted run's losses
exactly. The data is a token array by default (windows scored by next-token cross-entropy), or any
batch source with its own loss, ``loss(model, batch)``. A model that gives its hidden states and head
table (`typedlm.models.GPT2`) trains on token arrays through the fused head loss
(`typedlm.training.fused_head`): the ``(batch, seq, vocab)`` logits never exist.

Under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on the CPU, nccl on CUDA); each
rank trains on its slice of every global batch, and only rank 0 prints, logs and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from typedlm.config import CausalConfig
from typedlm.errors import ConfigError
from typedlm.token_ids import ids_validated
from typedlm.training.batches import BatchSlot, BatchSource, TokenWindows, next_token_loss
from typedlm.training.checkpoint import (
    TRAINER_FIELDS,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    restore_optimizer,
    save_checkpoint,
)
from typedlm.training.device import DEVICES, DTYPES, autocast_dtype, resolve_device
from typedlm.training.distributed import DistInfo, dist_info_from_env, init_process_group, mean_across_ranks
from typedlm.training.fused_head import HiddenStates, fused_next_token_loss, has_fused_head
from typedlm.training.plots import save_loss_curve
from typedlm.training.run_dir import check_run_dir, run_lock
from typedlm.training.token_arrays import Tokens, check_token_array
from typedlm.training.trainlog import EvalRecord, ExtensionRecord, StepRecord, ThroughputRecord, TrainLog

Batch = TypeVar("Batch")

RESUME_FIELDS = (
    "steps",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "grad_accum",
    "seed",
)
"""Settings that shape the run's losses: a resumed run must use the checkpoint's values, except that
``steps`` may grow (the run is extended, and the learning-rate schedule follows the new total)."""


_INT_MINIMA = {
    "steps": 1,
    "warmup_steps": 0,
    "grad_accum": 1,
    "eval_every": 0,
    "eval_batches": 1,
    "log_every": 1,
    "checkpoint_every": 0,
    "seed": 0,
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model's sizes live in `CausalConfig`). Defaults are nanoGPT's
    Shakespeare-on-a-CPU settings."""

    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off (the norm is still logged)
    grad_accum: int = 1
    eval_every: int = 250  # 0: evaluate only at the end
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int = 0  # 0: at every evaluation and at the end
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        def rule(name: str, text: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name}={getattr(self, name)!r}: must be {text}")

        for name, minimum in _INT_MINIMA.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise rule(name, f"an int >= {minimum}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise rule(name, "a finite number >= 0")
        if self.lr == 0:
            raise rule("lr", "> 0 (a learning rate of 0 trains nothing)")
        if self.min_lr > self.lr:
            raise rule("min_lr", f"<= lr={self.lr!r}")
        for name in ("beta1", "beta2"):
            if not getattr(self, name) < 1.0:
                raise rule(name, "in [0, 1)")
        if self.device not in DEVICES:
            raise rule("device", f"one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise rule("dtype", f"one of {', '.join(DTYPES)}")
        for name in ("compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise rule(name, "a bool")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite; ``log`` is the run's TrainLog up to that step."""

    def __init__(self, message: str, log: TrainLog) -> None:
        super().__init__(message)
        self.log = log


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, ``signum``) stopped the run at a step boundary, after writing the log and
    (with ``out_dir``) a checkpoint of ``step`` completed steps; ``--resume`` continues it. A command
    line exits with ``exit_status`` (128 + the signal's number, as a shell reports it)."""

    def __init__(self, step: int, log: TrainLog, out_dir: str | Path | None, signum: int = signal.SIGINT) -> None:
        saved = f"; checkpoint in {Path(out_dir) / 'checkpoint'}: continue with --resume" if out_dir else ""
        super().__init__(f"interrupted after step {step}{saved}")
        self.step, self.log, self.exit_status = step, log, 128 + signum


@contextlib.contextmanager
def _stop_requests(enabled: bool) -> Iterator[list[int]]:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a request to stop at the next step boundary (a
    second one stops at once). Off under DDP, where every rank would have to agree on the step, and
    off-main-thread."""
    requested = [0]  # the signal's number once one came
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield requested
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in stops}

    def request(signum: int, frame: object) -> None:
        requested[0] = signum
        for stop in stops:
            signal.signal(stop, previous[stop])

    for signum in stops:
        signal.signal(signum, request)
    try:
        yield requested
    finally:
        for signum in stops:
            signal.signal(signum, previous[signum])


def lr_at(step: int, tc: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup over ``warmup_steps``, then a
    half cosine from ``lr`` down to ``min_lr`` at the last step."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    decay_steps = tc.steps - tc.warmup_steps
    if decay_steps <= 1:
        return tc.lr
    progress = min(1.0, (step - tc.warmup_steps) / (decay_steps - 1))
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (tc.lr - tc.min_lr)


def configure_optimizer(model: nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (parameters with >= 2 dims) only; biases and
    LayerNorm gains are not decayed. Fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=fused)


def check_vocab_fits(vocab_size: int, cfg: CausalConfig, what: str = "tokenizer") -> None:
    """Refuse a tokenizer (or data) with more ids than the model's output layer has rows."""
    if vocab_size > cfg.vocab:
        raise ConfigError(
            f"{what} has {vocab_size} token ids but the model's vocab is {cfg.vocab} (CausalConfig.vocab): "
            "ids past the vocabulary have no embedding. Build the model with vocab >= "
            f"{vocab_size}, or project the tokens onto a smaller local vocabulary (--local-vocab)."
        )


def _seed_dropout(seed: int, rank: int, step: int, device: torch.device) -> None:
    """Seed the global RNG (dropout) from ``(seed, rank, step)``: cheap, unlike ``torch.manual_seed``."""
    step_seed = int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])
    torch.default_generator.manual_seed(step_seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(step_seed)  # the current device, set to this rank's GPU


def _to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (nested in tuples, lists and dicts) moved to ``device``."""
    if isinstance(batch, Tensor):
        if device.type == "cuda" and batch.device.type == "cpu":  # pinned: the copy overlaps the step
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_to_device(item, device) for item in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(item, device) for key, item in batch.items()}
    return batch


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    batches: BatchSource[Batch],
    loss: Callable[[nn.Module, Batch], Tensor],
    eval_batches: int,
    *,
    info: DistInfo = DistInfo(),  # noqa: B008  (a frozen dataclass: immutable)
    device: torch.device = torch.device("cpu"),  # noqa: B008
    amp: torch.dtype | None = None,
) -> float:
    """Mean loss over the ``eval_batches`` fixed validation batches of ``batches`` (the same at every call)."""
    total = torch.zeros((), device=device)
    for i in range(eval_batches):
        batch = _to_device(batches.val_batch(BatchSlot(i, rank=info.rank, world=info.world_size)), device)
        with _autocast(device, amp):
            total += loss(model, batch).float()
    return float(mean_across_ranks(total / eval_batches, info).item())


@contextlib.contextmanager
def _no_sync_unless(sync: bool, model: nn.Module) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if sync or not isinstance(model, DistributedDataParallel):
        yield
    else:
        with model.no_sync():
            yield


def train(
    model: nn.Module,
    cfg: CausalConfig,
    train_tokens: Tokens | None = None,
    val_tokens: Tokens | None = None,
    tc: TrainConfig | None = None,
    *,
    batches: BatchSource[Batch] | None = None,
    loss: Callable[[nn.Module, Batch], Tensor] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    vocab_size: int | None = None,
    tokenizer_hash: str = "",
    data_info: dict[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainLog:
    """Train ``model`` (sized by ``cfg``) in place with the settings ``tc`` (default: ``TrainConfig()``).

    The data is either two 1-D token id arrays, ``train_tokens`` and ``val_tokens``, drawn from as
    windows of ``cfg.seq_len + 1`` ids (`TokenWindows`), or any ``batches`` (a `BatchSource`).
    ``loss(model, batch)`` gives a micro-batch's scalar loss; the default, for token windows, is
    next-token cross-entropy (`next_token_loss`). ``vocab_size`` is the tokenizer's, checked against
    ``cfg.vocab`` before the first step. With ``out_dir``, checkpoints and ``loss.png`` are written
    there (rank 0 only), and ``resume=True`` continues from its checkpoint; a new run in an ``out_dir``
    that holds one is refused unless ``overwrite=True``, and the directory is locked while the run uses
    it. ``on_step(n)`` is called after the n-th completed step. Returns the TrainLog; raises
    TrainingDiverged on a NaN/inf loss, leaving the last good checkpoint in place.
    """
    tc = TrainConfig() if tc is None else tc
    if not isinstance(tc, TrainConfig):
        raise ConfigError(f"train(): tc must be a TrainConfig, got {type(tc).__name__}")
    if vocab_size is not None:
        check_vocab_fits(vocab_size, cfg)
    source: BatchSource[Any]
    if train_tokens is not None or val_tokens is not None or batches is None:
        windows = _token_windows(cfg, tc, train_tokens, val_tokens, batches)
        data_info = {"train_tokens": len(windows.train), "val_tokens": len(windows.val), **(data_info or {})}
        source = windows
        ids_checked = True  # every id was checked: no per-step device sync for the check
    else:
        source, ids_checked = _checked_source(batches), False
    step_loss = _checked_loss(loss, source)
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out_dir, where the checkpoint is")
    run_dir = out_dir if dist_info_from_env().is_main else None  # only rank 0 writes there
    if run_dir is not None:
        check_run_dir(run_dir, resume=resume, overwrite=overwrite)

    lock = run_lock(run_dir) if run_dir is not None else contextlib.nullcontext()
    with lock, ids_validated() if ids_checked else contextlib.nullcontext():
        run = _Run.start(model, cfg, tc, source, step_loss, out_dir, resume, tokenizer_hash, data_info)
        model.train()
        with _stop_requests(not run.info.enabled) as stop:
            for step in range(run.start_step, tc.steps):
                run.optimizer_step(step)
                done = step + 1
                stopping = bool(stop[0]) and done < tc.steps  # Ctrl-C: log and checkpoint this step, then stop
                at_eval = (tc.eval_every > 0 and done % tc.eval_every == 0) or done == tc.steps
                at_ckpt = out_dir is not None and (run.checkpoint_due(done) or stopping)
                if done % tc.log_every == 0 or at_eval or at_ckpt or stopping:
                    run.flush(done)
                    if at_eval:
                        run.evaluate(done)
                    run.clock()
                    if at_ckpt:
                        run.save_checkpoint(done)
                    run.start_interval()
                run.bar.update(1)
                if stopping:
                    run.finish("interrupted")
                    raise TrainingInterrupted(done, run.log, out_dir, stop[0])
                if on_step is not None:
                    on_step(done)
        return run.finish("completed")


def _token_windows(
    cfg: CausalConfig,
    tc: TrainConfig,
    train_tokens: Tokens | None,
    val_tokens: Tokens | None,
    batches: object,
) -> TokenWindows:
    """The default batch source over both token arrays, each checked (1-D ids in the vocabulary, long
    enough for one window)."""
    if batches is not None:
        raise ConfigError("train(): give either train_tokens and val_tokens, or batches, not both")
    if train_tokens is None or val_tokens is None:
        raise ConfigError(
            "train(): no data: give train_tokens and val_tokens (1-D token id arrays), or batches (a BatchSource)"
        )
    for name, tokens in (("train_tokens", train_tokens), ("val_tokens", val_tokens)):
        check_token_array(tokens, cfg.vocab, name)
    return TokenWindows(train_tokens, val_tokens, batch=cfg.batch, seq_len=cfg.seq_len, seed=tc.seed)


def _checked_source(batches: BatchSource[Batch]) -> BatchSource[Batch]:
    """``batches``, once it has `BatchSource`'s methods."""
    for name in ("train_batch", "val_batch", "fingerprint"):
        if not callable(getattr(batches, name, None)):
            raise ConfigError(
                f"train(): batches must be a BatchSource (train_batch, val_batch and fingerprint methods); "
                f"{type(batches).__name__} has no {name}()"
            )
    return batches


def _checked_loss(
    loss: Callable[[nn.Module, Batch], Tensor] | None, batches: BatchSource[Any]
) -> Callable[[nn.Module, Any], Tensor]:
    """``loss``, or for token windows by default `next_token_loss`."""
    if loss is None:
        if isinstance(batches, TokenWindows):
            return next_token_loss
        raise ConfigError("train(): batches needs a loss: loss(model, batch) -> the batch's scalar loss")
    if not callable(loss):
        raise ConfigError(f"train(): loss must be callable as loss(model, batch), got {type(loss).__name__}")
    return loss


@dataclass
class _Run:
    """What one run carries from step to step: the model and its wrappers, the optimizer, the batch
    source and the loss, the log, and the timers and progress bar of the current log interval."""

    model: nn.Module
    runner: nn.Module  # what trains: the model (or its HiddenStates), compiled and/or wrapped in DDP
    evaluator: nn.Module  # what evaluates: the same, compiled, without DDP
    optimizer: torch.optim.Optimizer
    batches: BatchSource[Any]
    loss: Callable[[nn.Module, Any], Tensor]
    cfg: CausalConfig
    tc: TrainConfig
    info: DistInfo
    device: torch.device
    amp: torch.dtype | None
    out_dir: str | Path | None
    tokenizer_hash: str
    data_hash: str
    log: TrainLog
    bar: tqdm[Any]
    start_step: int = 0
    last_checkpoint: int | None = None  # steps done at the last checkpoint written or resumed
    pending: list[tuple[int, float, Tensor, Tensor]] = dataclasses.field(default_factory=list)
    t0: float = dataclasses.field(default_factory=time.perf_counter)  # wall_s counts from here
    t_interval: float = dataclasses.field(default_factory=time.perf_counter)  # the log interval's start
    steps_in_interval: int = 0

    @classmethod
    def start(
        cls,
        model: nn.Module,
        cfg: CausalConfig,
        tc: TrainConfig,
        batches: BatchSource[Any],
        loss: Callable[[nn.Module, Any], Tensor],
        out_dir: str | Path | None,
        resume: bool,
        tokenizer_hash: str,
        data_info: dict[str, Any] | None,
    ) -> _Run:
        """Place the model on its device, build the optimizer and the log, resume, compile, wrap in DDP."""
        info = dist_info_from_env()
        device = resolve_device(tc.device, info.local_rank)
        init_process_group(info, device)
        amp = autocast_dtype(tc.dtype, device)
        model.to(device)
        optimizer = configure_optimizer(model, tc, device)
        data_hash = batches.fingerprint()
        log = TrainLog(
            config=cfg.to_dict(),
            train=tc.to_dict(),
            device=str(device),
            dtype=str(amp or torch.float32).removeprefix("torch."),
            world_size=info.world_size,
            data={"tokenizer_hash": tokenizer_hash, "data_hash": data_hash, **(data_info or {})},
        )
        start = 0
        if resume:
            assert out_dir is not None
            start, log = _resume(model, optimizer, out_dir, cfg, tc, info, tokenizer_hash, data_hash, batches)
            log.status = "running"

        trained: nn.Module = model  # the default loss of a model with a fused head skips the logits
        if loss is next_token_loss and has_fused_head(model):
            trained, loss = HiddenStates(model), fused_next_token_loss(model)
        runner: nn.Module = trained
        if tc.compile:
            runner = torch.compile(trained)  # type: ignore[assignment]  # compile returns a callable wrapper module
        evaluator = runner
        if info.enabled:
            runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None)
        show = tc.progress and info.is_main
        bar = tqdm(total=tc.steps, initial=start, disable=not show, unit="step", dynamic_ncols=True, desc="train")
        return cls(
            model, runner, evaluator, optimizer, batches, loss, cfg, tc, info, device, amp, out_dir,
            tokenizer_hash, data_hash, log, bar, start_step=start, last_checkpoint=start if resume else None,
        )  # fmt: skip

    def optimizer_step(self, step: int) -> None:
        """Step ``step`` (0-based): set the learning rate, reseed dropout, accumulate the gradients of
        ``grad_accum`` micro-batches, clip, step AdamW. Its loss and gradient norm wait in ``pending``."""
        tc, info = self.tc, self.info
        lr = lr_at(step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        _seed_dropout(tc.seed, info.rank, step, self.device)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(tc.grad_accum):
            slot = BatchSlot(step, micro, tc.grad_accum, info.rank, info.world_size)
            batch = _to_device(self.batches.train_batch(slot), self.device)
            with _no_sync_unless(micro == tc.grad_accum - 1, self.runner), _autocast(self.device, self.amp):
                loss = self.loss(self.runner, batch)
            (loss / tc.grad_accum).backward()
            loss_sum += loss.detach().float()
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pending.append((step, lr, loss_sum / tc.grad_accum, grad_norm.detach().float()))
        self.steps_in_interval += 1

    def checkpoint_due(self, done: int) -> bool:
        """Whether a checkpoint is written after ``done`` steps: every ``checkpoint_every`` steps (else
        at every evaluation), and at the end."""
        every = self.tc.checkpoint_every or self.tc.eval_every
        return (every > 0 and done % every == 0) or done == self.tc.steps

    def flush(self, done: int) -> None:
        """Turn the pending step losses into log records (averaged across ranks); stop on a non-finite one."""
        if not self.pending:
            return
        pairs = torch.stack([torch.stack([loss, norm]) for _, _, loss, norm in self.pending])
        for (step, lr, _, _), (loss, norm) in zip(
            self.pending, mean_across_ranks(pairs, self.info).tolist(), strict=True
        ):
            self.log.steps.append(StepRecord(step, loss, lr, norm))
            if not (math.isfinite(loss) and math.isfinite(norm)):
                self.diverged(step, loss, norm)
        self.pending.clear()
        elapsed = time.perf_counter() - self.t_interval
        tokens_per_step = self.cfg.batch * self.cfg.seq_len * self.tc.grad_accum * self.info.world_size
        rate = tokens_per_step * self.steps_in_interval / max(elapsed, 1e-9)
        self.log.throughput.append(ThroughputRecord(done, rate))
        self.bar.set_postfix(loss=f"{self.log.steps[-1].loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)

    def evaluate(self, done: int) -> None:
        """Log (and print) the mean validation loss after ``done`` steps."""
        self.model.eval()
        val = estimate_loss(
            self.evaluator,
            self.batches,
            self.loss,
            self.tc.eval_batches,
            info=self.info,
            device=self.device,
            amp=self.amp,
        )
        self.model.train()
        self.log.evals.append(EvalRecord(done, val))
        self.bar.write(f"step {done}: train loss {self.log.steps[-1].loss:.4f}, val loss {val:.4f}")

    def clock(self) -> None:
        """Add the time since the last call to the log's ``wall_s``."""
        now = time.perf_counter()
        self.log.wall_s += now - self.t0
        self.t0 = now

    def save_checkpoint(self, done: int) -> None:
        """Write the checkpoint of ``done`` steps (rank 0; every rank remembers it as the last good one)."""
        if self.info.is_main:
            assert self.out_dir is not None
            state = _state(done, self.cfg, self.tc, self.info, self.tokenizer_hash, self.data_hash, self.log)
            save_checkpoint(self.out_dir, self.model, self.optimizer, state)
        self.last_checkpoint = done

    def start_interval(self) -> None:
        """Start a new throughput interval."""
        self.t_interval, self.steps_in_interval = time.perf_counter(), 0

    def finish(self, status: str) -> TrainLog:
        """Close the progress bar, set the log's ``status`` and draw the loss curve (rank 0, with ``out_dir``)."""
        self.bar.close()
        self.log.status = status
        if self.out_dir is not None and self.info.is_main:
            _plot(self.log, Path(self.out_dir))
        return self.log

    def diverged(self, step: int, loss: float, norm: float) -> None:
        """Stop the run on a non-finite loss or gradient norm at ``step``: TrainingDiverged, saying which
        checkpoint is the last good one."""
        out_dir, last = self.out_dir, self.last_checkpoint
        if out_dir is not None and last is not None:
            kept = f"The last good checkpoint, after step {last}, is kept in {Path(out_dir) / 'checkpoint'}"
            kept += "; nothing after it was saved"
            again = "then start again (or --resume from that checkpoint)"
        else:
            kept, again = "No checkpoint of this run had been written", "then start again"
        message = (
            f"training stopped: the loss became {loss} at step {step} (gradient norm {norm}, lr "
            f"{self.log.steps[-1].lr:.3g}). {kept}. Lower the learning rate or lengthen the warmup, {again}."
        )
        self.log.message = message
        self.clock()
        self.finish("diverged")
        raise TrainingDiverged(message, self.log)


def _state(
    done: int, cfg: CausalConfig, tc: TrainConfig, info: DistInfo, tokenizer_hash: str, data_hash: str, log: TrainLog
) -> dict[str, Any]:
    return {
        "step": done,
        "config": cfg.to_dict(),
        "train": tc.to_dict(),
        "world_size": info.world_size,
        "tokenizer_hash": tokenizer_hash,
        "data_hash": data_hash,
        "rng": {"seed": tc.seed, "scheme": "global RNG seeded from SeedSequence([seed, rank, step]) before each step"},
        "log": log.to_dict(),
    }


def _resume(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    out_dir: str | Path,
    cfg: CausalConfig,
    tc: TrainConfig,
    info: DistInfo,
    tokenizer_hash: str,
    data_hash: str,
    batches: BatchSource[Any],
) -> tuple[int, TrainLog]:
    path = find_checkpoint(out_dir)
    if path is None:
        raise CheckpointError(f"{Path(out_dir) / 'checkpoint'}: no checkpoint to resume from")
    ckpt = load_checkpoint(path, require=TRAINER_FIELDS)
    state = ckpt.state
    where = path / "state.json"
    if state["config"] != cfg.to_dict():
        diff = {k: (v, state["config"].get(k)) for k, v in cfg.to_dict().items() if state["config"].get(k) != v}
        raise CheckpointError(f"{where}: model config differs from this run's (this run, checkpoint): {diff}")
    if tc.steps != state["train"].get("steps") and tc.steps <= ckpt.step:
        raise CheckpointError(
            f"{where}: the checkpoint is after step {ckpt.step}; to extend the run, --steps must be more than "
            f"{ckpt.step} (this run has {tc.steps})"
        )
    for name in RESUME_FIELDS:
        if name != "steps" and state["train"].get(name) != getattr(tc, name):
            raise CheckpointError(
                f"{where}: train.{name} was {state['train'].get(name)!r}, this run has {getattr(tc, name)!r}; "
                "resume with the same settings (or start a new --out)"
            )
    written_as = _data_hash_as_written(state.get("data_hash"), data_hash, batches)
    checks = (("world_size", info.world_size), ("tokenizer_hash", tokenizer_hash), ("data_hash", written_as))
    for name, value in checks:
        if state.get(name) != value:
            raise CheckpointError(f"{where}: {name} was {state.get(name)!r}, this run has {value!r}")
    load_weights(model, path)
    restore_optimizer(optimizer, ckpt)
    log = TrainLog.from_dict(state["log"], f"{path / 'state.json'}: log")
    log.data["data_hash"] = data_hash  # as the checkpoints from now on record it
    if tc.steps != state["train"].get("steps"):  # extended (or shortened, above the step reached)
        log.extensions.append(ExtensionRecord(ckpt.step, state["train"].get("steps"), tc.steps))
        log.train = tc.to_dict()
    return ckpt.step, log


def _data_hash_as_written(written: object, data_hash: str, batches: BatchSource[Any]) -> str:
    """``data_hash``, or the sha256 of every id when that is what the checkpoint has: token windows
    above `typedlm.training.token_arrays.FULL_HASH_BYTES` were hashed whole before sampled fingerprints
    (so the ids are read once, to resume such a checkpoint)."""
    whole = isinstance(written, str) and re.fullmatch(r"[0-9a-f]{64}", written) is not None
    if whole and written != data_hash and data_hash.startswith("sampled:") and isinstance(batches, TokenWindows):
        full = batches.full_fingerprint()  # only for such a checkpoint: different data is refused without it
        if full == written:
            return full
    return data_hash


def _plot(log: TrainLog, out_dir: Path) -> None:
    problem = save_loss_curve(log, out_dir / "loss.png")
    if problem:
        print(problem)
