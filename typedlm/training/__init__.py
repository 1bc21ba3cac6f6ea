"""Training infrastructure around the typed core: the loop, its data, checkpoints, logs and run folders.

``from typedlm.training import train, TrainConfig`` is all a training script needs besides a model and
a token array (or a `BatchSource` of its own batches and a ``loss(model, batch)``); the modules behind
it are `trainer` (the loop), `batches` (train/val split, batch sources, deterministic batches), `corpus`
(training text), `checkpoint` (safetensors + checked JSON state), `trainlog` (the run's JSON log),
`plots` (the loss curve), `device`, `distributed` (``torchrun``), `presets` (named sizes),
`run_dir` (one run per ``--out`` folder) and `preflight` (checks before any long work).

The typed core (`typedlm.models`, `typedlm.nn`, `typedlm.losses`, ...) never imports this package, and
``import typedlm`` does not load it.
"""

from typedlm.training.batches import (
    BatchSlot,
    BatchSource,
    TokenWindows,
    next_token_loss,
    sample_batch,
    split_tokens,
)
from typedlm.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_gpt2_checkpoint,
    load_weights,
    save_checkpoint,
)
from typedlm.training.corpus import Corpus, CorpusError, default_corpus_text, load_corpus
from typedlm.training.device import DeviceError, resolve_device
from typedlm.training.presets import PRESETS, Preset, get_preset
from typedlm.training.run_dir import check_run_dir, run_lock
from typedlm.training.token_arrays import Tokens
from typedlm.training.trainer import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    configure_optimizer,
    lr_at,
    train,
)
from typedlm.training.trainlog import EvalRecord, StepRecord, ThroughputRecord, TrainLog

__all__ = [
    "PRESETS",
    "BatchSlot",
    "BatchSource",
    "Checkpoint",
    "CheckpointError",
    "Corpus",
    "CorpusError",
    "DeviceError",
    "EvalRecord",
    "Preset",
    "StepRecord",
    "ThroughputRecord",
    "TokenWindows",
    "Tokens",
    "TrainConfig",
    "TrainLog",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_run_dir",
    "configure_optimizer",
    "default_corpus_text",
    "find_checkpoint",
    "get_preset",
    "load_checkpoint",
    "load_corpus",
    "load_gpt2_checkpoint",
    "load_weights",
    "lr_at",
    "next_token_loss",
    "resolve_device",
    "run_lock",
    "sample_batch",
    "save_checkpoint",
    "split_tokens",
    "train",
]
