"""Teach a GPT-2 to sort digits, then look at where its last block attends.

    python -m examples.sort_gpt2 -c examples/sort_gpt2.yaml

A training example is a sequence and its sorted copy, concatenated: ``2 0 1 1 0 2 | 0 0 1 1 2 2``. The
model reads it autoregressively and is scored only on the sorted half (`typedlm.losses.masked_cross_entropy`
with the prefix masked). Sequences whose hash falls in the held-out bucket are never trained on; after
training the model sorts held-out sequences greedily, and the accuracy (all digits right) is printed.
Training is `typedlm.training.train` with this task's batch source (`SortBatches`) and loss (`masked_loss`).
The last block's attention weights on one held-out example are saved as one PNG heatmap per head.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn

import typedlm as tl
from typedlm.atomic import write_atomic
from typedlm.attention_maps import capture_attention
from typedlm.cli import ArgumentParser, renamed_field, run_main
from typedlm.training import TrainConfig, TrainLog, train
from typedlm.training.batches import TRAIN_STREAM, VAL_STREAM, BatchSlot
from typedlm.training.preflight import check_environment, check_input_file, check_memory, check_output_dir


@dataclass(frozen=True)
class Task:
    length: int = 6
    digits: int = 3
    held_out_every: int = 4


@dataclass(frozen=True)
class ModelSize:
    layers: int = 3
    heads: int = 3
    head_dim: int = 16
    ffn_hidden: int = 192
    dropout: float = 0.1


@dataclass(frozen=True)
class Training:
    steps: int = 2000
    batch: int = 64
    lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 3407


@dataclass(frozen=True)
class Evaluation:
    sequences: int = 1000


@dataclass(frozen=True)
class Output:
    dir: str = "out/sort_gpt2"


@dataclass(frozen=True)
class SortConfig:
    """The YAML file's sections; every key is optional and has the default above."""

    task: Task = field(default_factory=Task)
    model: ModelSize = field(default_factory=ModelSize)
    train: Training = field(default_factory=Training)
    eval: Evaluation = field(default_factory=Evaluation)
    output: Output = field(default_factory=Output)

    @classmethod
    def from_dict(cls, data: object, source: str = "config") -> SortConfig:
        """Build from parsed YAML. An unknown section or key, a value of the wrong type, or one that the
        model or training config refuses is a ConfigError naming ``source`` and ``section.key``."""
        if not isinstance(data, dict):
            raise tl.ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
        extra = sorted(map(str, set(data) - set(SECTIONS)))
        if extra:
            raise tl.ConfigError(f"{source}: unknown section(s) {', '.join(extra)}")
        sections = {name: _section(source, name, data.get(name), kind) for name, kind in SECTIONS.items()}
        config = cls(**sections)
        config.check(source)
        return config

    @classmethod
    def load(cls, path: Path) -> SortConfig:
        """Read the YAML file at ``path``; every problem is a ConfigError naming the file (and line or key)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise tl.ConfigError(f"{path}: cannot read the config ({reason})") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise tl.ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
        return cls.from_dict({} if data is None else data, str(path))

    def check(self, source: str) -> None:
        """Rules across keys: the task's ranges, and the model and training configs they make."""
        for key, value, low in (("task.length", self.task.length, 1), ("task.digits", self.task.digits, 2),
                                ("task.held_out_every", self.task.held_out_every, 2),
                                ("eval.sequences", self.eval.sequences, 1)):  # fmt: skip
            if value < low:
                raise tl.ConfigError(f"{source}: {key}={value}: must be >= {low}")
        try:
            self.model_config()
            self.train_config()
        except tl.ConfigError as e:  # "CausalConfig.heads=0: ..." is "model.heads=0: ..." in this file
            keys = {name: f"{source}: {key}" for name, key in _KEY_OF_FIELD.items()}
            renamed = renamed_field(e, keys, joiner="=")
            raise (renamed if renamed is not e else tl.ConfigError(f"{source}: {e}")) from None
        check_output_dir(f"{source}: output.dir", Path(self.output.dir))

    def train_config(self) -> TrainConfig:
        t = self.train
        return TrainConfig(steps=t.steps, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps,
                           weight_decay=t.weight_decay, beta2=t.beta2, grad_clip=t.grad_clip, seed=t.seed,
                           device="cpu", eval_every=max(1, t.steps // 4), eval_batches=4)  # fmt: skip

    def model_config(self) -> tl.CausalConfig:
        """Tokens are the digits; a training row is ``2 * length - 1`` long (the last digit is only a target)."""
        m = self.model
        return tl.CausalConfig(batch=self.train.batch, seq_len=2 * self.task.length - 1, vocab=self.task.digits,
                               heads=m.heads, head_dim=m.head_dim, ffn_hidden=m.ffn_hidden, layers=m.layers,
                               dropout=m.dropout)  # fmt: skip


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (YAML lets the last one win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (YAML would keep only the last one)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


SECTIONS: dict[str, type] = {"task": Task, "model": ModelSize, "train": Training, "eval": Evaluation, "output": Output}
_KEY_OF_FIELD = {f.name: f"{section}.{f.name}" for section, kind in SECTIONS.items() for f in dataclasses.fields(kind)}
_KEY_OF_FIELD |= {"batch": "train.batch", "seq_len": "task.length", "vocab": "task.digits"}


def _section(source: str, name: str, values: object, kind: type) -> Any:
    """The section ``name`` as a ``kind``; every key must be one of its fields, with a value of its type."""
    if values is None:
        return kind()
    if not isinstance(values, dict):
        raise tl.ConfigError(f"{source}: section {name!r} must be a mapping of keys, got {values!r}")
    types = {f.name: f.type for f in dataclasses.fields(kind)}
    unknown = sorted(map(str, set(values) - set(types)))
    if unknown:
        raise tl.ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} in section {name!r}")
    for key, value in values.items():
        wanted = types[key]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
            "str": isinstance(value, str) and value != "",
        }[str(wanted)]
        if not ok:
            what = {"int": "an integer", "float": "a finite number", "str": "a non-empty string"}[str(wanted)]
            hint = ""
            if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
                hint = f" (YAML reads {value} as text: write it with a dot, e.g. {float(value):.1e})"
            raise tl.ConfigError(f"{source}: {name}.{key}={value!r}: must be {what}{hint}")
    return kind(**values)


# --- data ------------------------------------------------------------------------------------------


def is_held_out(sequences: Int64[Tensor, "n length"], task: Task) -> Bool[Tensor, " n"]:
    """Whether each sequence belongs to the held-out bucket (a fixed function of its digits)."""
    return torch.tensor([zlib.crc32(bytes(row)) % task.held_out_every == 0 for row in sequences.tolist()])


def draw(n: int, task: Task, *, held_out: bool, generator: torch.Generator) -> Int64[Tensor, "n length"]:
    """``n`` random sequences from the training bucket, or from the held-out one."""
    rows: list[Tensor] = []
    while sum(len(r) for r in rows) < n:
        candidates = torch.randint(task.digits, (2 * n + 16, task.length), generator=generator)
        rows.append(candidates[is_held_out(candidates, task) == held_out])
    return torch.cat(rows)[:n]


@tl.checked
def make_batch(
    sequences: Int64[Tensor, "batch length"],
) -> tuple[Int64[Tensor, "batch seq"], Int64[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]:
    """Inputs, next-token targets and the loss mask for ``sequence ++ sorted(sequence)``, seq = 2*length-1.

    Only targets in the sorted half are scored: position ``t`` is masked in for ``t >= length - 1``.
    """
    length = sequences.shape[1]
    full = torch.cat([sequences, sequences.sort(dim=1).values], dim=1)
    mask = torch.arange(2 * length - 1) >= length - 1
    return full[:, :-1], full[:, 1:], mask.expand(len(sequences), -1)


# --- training and evaluation -----------------------------------------------------------------------

SortBatch = tuple[Int64[Tensor, "batch seq"], Int64[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]
"""Inputs, next-token targets and the loss mask (`make_batch`)."""


@dataclass(frozen=True)
class SortBatches:
    """The trainer's batch source: sequences from the training bucket for training, from the held-out
    bucket for the validation loss. Each step's rows are drawn from a generator seeded by the step."""

    task: Task
    batch: int
    seed: int

    def train_batch(self, slot: BatchSlot) -> SortBatch:
        return self._batch(slot, held_out=False, stream=TRAIN_STREAM)

    def val_batch(self, slot: BatchSlot) -> SortBatch:
        return self._batch(slot, held_out=True, stream=VAL_STREAM)

    def fingerprint(self) -> str:
        return f"sort_gpt2 {self}"

    def _batch(self, slot: BatchSlot, *, held_out: bool, stream: int) -> SortBatch:
        generator = torch.Generator().manual_seed(slot.seed(self.seed, stream))
        rows = draw(slot.blocks * self.batch, self.task, held_out=held_out, generator=generator)
        return make_batch(slot.block(rows))


def masked_loss(model: nn.Module, batch: SortBatch) -> Tensor:
    """Cross-entropy on the sorted half only (`make_batch`'s mask)."""
    inputs, targets, mask = batch
    return tl.losses.masked_cross_entropy(model(inputs), targets, mask)


@tl.checked
def sort_greedily(model: tl.models.GPT2, sequences: Int64[Tensor, "n length"]) -> Int64[Tensor, "n length"]:
    """The model's sorted copy of each sequence: ``length`` argmax tokens after the sequence."""
    length = sequences.shape[1]
    return model.generate(sequences, length, tl.Sampling(greedy=True))[:, length:]


def accuracy(model: tl.models.GPT2, sequences: Int64[Tensor, "n length"]) -> tuple[int, int]:
    """(sequences sorted exactly right, sequences)."""
    right = (sort_greedily(model, sequences) == sequences.sort(dim=1).values).all(dim=1)
    return int(right.sum()), len(sequences)


# --- attention maps --------------------------------------------------------------------------------


def save_attention_maps(
    weights: Float[Tensor, "heads seq seq"], tokens: Sequence[str], out_dir: Path, block: int, split: int
) -> list[Path]:
    """One heatmap per head: query tokens down, key tokens across, a line where the sorted half starts.

    Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for head, grid in enumerate(weights.cpu()):
        fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=110)
        image = ax.imshow(grid.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(tokens)), tokens)
        ax.set_yticks(range(len(tokens)), tokens)
        ax.axvline(split - 0.5, color="white", lw=0.8)
        ax.axhline(split - 1.5, color="white", lw=0.8)  # from this row on, each query predicts a sorted digit
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
        ax.set_title(f"block {block}, head {head}")
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = out_dir / f"attention_block{block}_head{head}.png"
        write_atomic(path, functools.partial(fig.savefig, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def run(config: SortConfig) -> float:
    """Train, evaluate and plot; returns the held-out accuracy."""
    cfg = config.model_config()
    model = tl.models.GPT2(cfg, seed=config.train.seed)
    task = config.task
    print(f"sorting {task.length} digits in 0..{task.digits - 1}; model {model.param_count():,} parameters "
          f"({cfg.layers} layers × {cfg.heads} heads, d_model {cfg.d_model}), {config.train.steps} steps")  # fmt: skip
    start = time.perf_counter()
    batches = SortBatches(task, config.train.batch, config.train.seed)
    log: TrainLog = train(model, cfg, tc=config.train_config(), batches=batches, loss=masked_loss)
    seconds = time.perf_counter() - start
    print(f"masked loss {log.first_loss:.4f} → {log.final_loss:.4f} in {seconds:.1f} s")

    test = draw(config.eval.sequences, task, held_out=True, generator=torch.Generator().manual_seed(0))
    right, total = accuracy(model, test)
    print(f"held-out accuracy: {right}/{total} = {right / total:.2%} sorted exactly")

    example = test[:1]
    answer = sort_greedily(model, example)
    print(f"example: {example[0].tolist()} → {answer[0].tolist()}")
    full = torch.cat([example, answer], dim=1)[:, :-1]
    weights = capture_attention(model, full)[0]
    tokens = [str(d) for d in full[0].tolist()]
    paths = save_attention_maps(weights, tokens, Path(config.output.dir), cfg.layers - 1, split=task.length)
    print(f"attention maps: {', '.join(str(p) for p in paths)}")
    return right / total


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m examples.sort_gpt2", description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", type=Path, required=True, help="YAML config (see examples/sort_gpt2.yaml)")
    args = parser.parse_args(argv)

    def body() -> int:
        check_environment()
        check_input_file("--config", args.config)
        config = SortConfig.load(args.config)
        hint = f"use a smaller train.batch or model in {args.config}"
        check_memory(config.model_config(), torch.device("cpu"), hint=hint)
        run(config)
        return 0

    return run_main("sort_gpt2", body)


if __name__ == "__main__":
    sys.exit(main())
