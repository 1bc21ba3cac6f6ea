"""`typedlm check`: each kind of planted bug is reported at its line with its code; valid programs pass."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import typedlm as tl
from typedlm.check import check
from typedlm.check.cli import main
from typedlm.check.probe import free_sizes, probe_config
from typedlm.dims import DimEnv

HEADER = """
import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits, TokenIds

cfg = tl.CausalConfig(batch=4, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=64, layers=1)
"""


CFG = tl.CausalConfig(batch=4, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=64, layers=1)


def write(folder: Path, name: str, body: str) -> tuple[Path, int]:
    """A user module ``name.py`` in ``folder``; the line marked ``# BUG`` (0 if none)."""
    source = HEADER + textwrap.dedent(body)
    path = folder / f"{name}.py"
    path.write_text(source)
    marked = [n for n, line in enumerate(source.splitlines(), 1) if "# BUG" in line]
    return path, (marked[0] if marked else 0)


def errors_of(path: Path) -> list[tuple[str, int, str, str]]:
    report = check([str(path)])
    return [(Path(p.path).name, p.line, p.code, p.message) for p in report.errors]


def test_a_torch_error_inside_a_forward_is_reported_at_its_line(tmp_path: Path) -> None:
    path, line = write(
        tmp_path,
        "trace_bug",
        """
        class Readout(Layer[Embedded, Logits]):
            def __init__(self, config: tl.CausalConfig) -> None:
                super().__init__(config)
                self.proj = torch.nn.Linear(config.ffn_hidden, config.vocab)

            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq vocab"]:
                return self.proj(x)  # BUG
    """,
    )
    [(name, reported, code, message)] = errors_of(path)
    assert (name, reported, code) == ("trace_bug.py", line, "shape")
    assert message.startswith("Readout: torch RuntimeError at") and "d_model=18" in message and "ffn=28" in message


def test_a_hard_coded_batch_size_is_told_from_a_hard_coded_seq(tmp_path: Path) -> None:
    path, line = write(
        tmp_path,
        "hard_coded",
        """
        class Flatten(Layer[Embedded, Embedded]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x.reshape(2, x.shape[1], -1)  # BUG
    """,
    )
    [(name, reported, code, message)] = errors_of(path)
    assert (name, reported, code) == ("hard_coded.py", line - 1, "hard-coded-size")  # no torch error: at the forward
    assert "works with batch=2 but not batch=4" in message and "seq=" not in message.split(":")[0]


def test_a_hard_coded_seq_is_named(tmp_path: Path) -> None:
    first, second = free_sizes(DimEnv.from_config(probe_config()))  # a layer class is built at the probe config
    path, line = write(
        tmp_path,
        "hard_seq",
        f"""
        class Window(Layer[Embedded, Embedded]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x.view(x.shape[0], {first.seq}, -1)  # BUG
    """,
    )
    [(_, reported, code, message)] = errors_of(path)
    assert (reported, code) == (line, "hard-coded-size")
    assert f"works with seq={first.seq} but not seq={second.seq}" in message and "batch=" not in message


def test_a_causal_leak_is_reported_at_the_forward(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "leak",
        """
        class Smooth(Layer[Embedded, Embedded]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return (x + x.roll(-1, dims=1)) / 2
    """,
    )
    [(name, reported, code, message)] = errors_of(path)
    forward_line = (
        path.read_text()
        .splitlines()
        .index('    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:')
        + 1
    )
    assert (name, reported, code) == ("leak.py", forward_line, "causal")
    assert "Smooth: the output at position 0 changes when the input at position 1 changes" in message


def test_batch_mixing_is_reported(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "mixing",
        """
        class Center(Layer[Embedded, Embedded]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x - x.mean(dim=0)
    """,
    )
    [(_, _, code, message)] = errors_of(path)
    assert code == "batch-mixing" and "Center: the output of sample 1 changes when sample 0 changes" in message


def test_cached_decoding_that_differs_from_a_full_forward_is_reported(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "cache_bug",
        '''
        class Forgetful(Layer[TokenIds, Logits]):
            """Claims to decode with a cache, but keeps none: each step sees one token."""

            def __init__(self, config: tl.CausalConfig) -> None:
                super().__init__(config)
                self.gpt = tl.models.GPT2(config)

            def forward(self, ids: Int[Tensor, "batch seq"], start_pos: int = 0) -> Float[Tensor, "batch seq vocab"]:
                return self.gpt(ids, start_pos)

            @contextlib.contextmanager
            def kv_cache(self, batch: int) -> Iterator[None]:
                yield
    ''',
    )
    [(_, _, code, message)] = errors_of(path)
    assert code == "cache" and "differs from one full forward at position 1" in message


def test_a_checked_function_is_traced_with_probe_tensors(tmp_path: Path) -> None:
    path, line = write(
        tmp_path,
        "function_bug",
        """
        @tl.checked
        def pooled(
            x: Float[Tensor, "batch seq d_model"], w: Float[Tensor, "vocab d_model"]
        ) -> Float[Tensor, "batch vocab"]:
            return x.mean(dim=1) @ w  # BUG: the (vocab, d_model) table needs .T

        @tl.checked
        def lm_loss(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
            return tl.losses.cross_entropy_indexed(model(ids), ids)  # the copy task

        @tl.checked
        def good_loss(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
            return tl.losses.next_token_cross_entropy(model(ids), ids)
    """,
    )
    found = errors_of(path)
    decorator = (
        path.read_text()
        .splitlines()
        .index('def lm_loss(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:')
    )
    assert [(n, ln, c) for n, ln, c, _ in found] == [
        ("function_bug.py", line, "shape"),
        ("function_bug.py", decorator, "target-leak"),
    ]
    assert found[0][3].startswith("pooled: torch RuntimeError")
    assert "lm_loss: the loss is" in found[1][3] and "targets are not shifted" in found[1][3]


VALID = '''
class DropoutMLP(Layer[Embedded, Embedded]):
    """Dropout in training, deterministic in eval: no false alarm."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.fc = torch.nn.Linear(config.d_model, config.ffn_hidden)
        self.proj = torch.nn.Linear(config.ffn_hidden, config.d_model)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        hidden: Tensor = self.fc(x)
        out: Tensor = self.proj(self.drop(F.gelu(hidden)))
        return out


class Masked(Layer[Embedded, Embedded]):
    """An extra keyword argument with a default."""

    def forward(self, x: Float[Tensor, "batch seq d_model"], scale: float = 1.0) -> Float[Tensor, "batch seq d_model"]:
        return x * scale


class Encoder(Layer[Embedded, Embedded]):
    """Bidirectional on purpose: opts out of the causality check."""

    causal = False

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x + x.mean(dim=1, keepdim=True)


class Blocks(Layer[Embedded, Embedded]):
    """Real attention (variable batch and any seq up to seq_len)."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        self.blocks = tl.nn.Stack([tl.nn.TransformerBlock(config, index=i) for i in range(config.layers)])

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return self.blocks(x)


class NeedsTwo(Layer[Embedded, Embedded]):
    """Needs more than a config: listed as skipped."""

    def __init__(self, config: tl.CausalConfig, width: int) -> None:
        super().__init__(config)
        self.width = width

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x


def build() -> tl.models.GPT2:
    return tl.models.GPT2(cfg.replace(dropout=0.1))


model = tl.nn.TokenEmbedding(cfg) >> DropoutMLP(cfg) >> tl.models.causal_transformer_from_embeddings(cfg)


@tl.checked
def loss(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
    return tl.losses.next_token_cross_entropy(model(ids), ids)
'''


def test_a_valid_program_passes_and_skipped_layers_are_listed(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "valid", VALID)
    report = check([str(path)])
    assert report.errors == []
    assert (report.layers, report.models, report.functions) == (5, 2, 1)
    [skipped] = [p for p in report.problems if p.code == "skipped"]
    assert skipped.severity == "note" and "NeedsTwo" in skipped.message and "width" in skipped.message


def test_the_command_line_prints_like_mypy_and_exits_1_on_errors(tmp_path: Path) -> None:
    bug, line = write(
        tmp_path,
        "cli_bug",
        """
        class Half(Layer[Embedded, Embedded]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x[..., ::2]  # BUG
    """,
    )
    run = subprocess.run(
        [sys.executable, "-m", "typedlm", "check", str(bug)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    first, summary = run.stdout.strip().splitlines()
    assert first.startswith(f"cli_bug.py:{line - 1}: error: Half:") and first.endswith("[shape]")  # the forward
    assert summary.startswith("checked 1 layer, 0 models, 0 functions in") and summary.endswith("found 1 error")


def test_json_output_and_exit_0_when_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = write(tmp_path, "clean", VALID)
    assert main([str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["errors"] == 0 and data["layers"] == 5 and data["problems"][0]["code"] == "skipped"


def test_an_import_failure_and_a_missing_target_are_errors_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, _ = write(
        tmp_path,
        "broken",
        """
        class Wrong(Layer[Embedded, Logits]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x
    """,
    )
    assert main([str(broken), str(tmp_path / "missing.py")]) == 1
    out = capsys.readouterr().out
    assert "broken.py:" in out and "cannot import broken: ShapeError" in out and "[import]" in out
    assert "no such file, directory or module" in out


def test_a_module_that_ends_the_process_at_import_or_a_path_that_is_not_python_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "quits.py").write_text("import os\nos._exit(0)\n")
    (tmp_path / "notes.txt").write_text("not Python\n")
    (tmp_path / "zero.py").symlink_to("/dev/zero")
    targets = [str(tmp_path / name) for name in ("quits.py", "notes.txt", "zero.py")]
    assert main(targets) == 1  # the check itself goes on and reports (os._exit did not end it)
    out = capsys.readouterr().out
    assert "cannot import quits: SystemExit: os._exit(0) called at import  [import]" in out
    assert "notes.txt is not a Python file (*.py)" in out
    assert "zero.py is not a regular file or directory" in out
    assert "found 3 errors" in out


def test_the_projects_examples_pass() -> None:
    report = check(["examples"], exclude=[r"^examples/shape_bugs/(?!_)\w+\.py$"])
    assert report.errors == [], report.format()


def test_the_typedlm_command_and_its_usage(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "typedlm"  # the console script pyproject installs
    assert script.exists(), "pip install -e . installs the typedlm command"
    ok = subprocess.run([str(script), "check", "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "[causal]" in ok.stdout and "exit status" in ok.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "typedlm", "chek"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert wrong.returncode == 2 and "unknown command 'chek'" in wrong.stderr and "Traceback" not in wrong.stderr


ODD_BUT_VALID = '''
import abc


class Base(Layer[Embedded, Embedded], abc.ABC):
    """An abstract base: skipped, not an error."""

    @abc.abstractmethod
    def scale(self) -> float: ...

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x * self.scale()


class EvenHeads(Layer[Embedded, Embedded]):
    """Refuses the probe config (3 heads): skipped with the reason, the run goes on."""

    def __init__(self, config: tl.CausalConfig) -> None:
        super().__init__(config)
        if config.heads % 2:
            raise ValueError("needs an even number of heads")

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x


class WithMask(Layer[Embedded, Embedded]):
    """The caller passes the attention mask (keyword-only): traced, invariants skipped."""

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], *, mask: Float[Tensor, "seq seq"]
    ) -> Float[Tensor, "batch seq d_model"]:
        return mask @ x


@tl.checked
def z_loss(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
    """Ignores its targets: no target leak."""
    return torch.logsumexp(model(ids), dim=-1).pow(2).mean()


@tl.checked
def decode(model: tl.models.GPT2, prompt: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq+2"]:
    """Two greedy tokens with the cache: the probe leaves room for them."""
    return model.generate(prompt, 2, tl.Sampling(greedy=True))


half = tl.models.GPT2(cfg).to(torch.bfloat16)


def sys_exit_is_not_called_at_import() -> None: ...
'''


def test_odd_but_valid_code_is_skipped_or_passes_never_a_false_alarm(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "odd", ODD_BUT_VALID)
    report = check([str(path)])
    assert report.errors == [], report.format()
    notes = {p.message.split(":")[0]: p.message for p in report.problems if p.code == "skipped"}
    assert "abstract" in notes["skipped Base"] and "needs an even number of heads" in notes["skipped EvenHeads"]
    assert "needs more tensors than its input" in notes["skipped WithMask"]


def test_training_mode_mixing_and_a_prefill_only_cache_bug_are_found(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "train_mode",
        '''
        class BatchNormed(Layer[Embedded, Embedded]):
            """BatchNorm over the features: in training it uses the batch's statistics."""

            def __init__(self, config: tl.CausalConfig) -> None:
                super().__init__(config)
                self.norm = torch.nn.BatchNorm1d(config.d_model)

            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                out: Tensor = self.norm(x.transpose(1, 2)).transpose(1, 2)
                return out


        class LastOnly(Layer[TokenIds, Logits]):
            """Keeps only the newest position of each call in its cache: right one token at a time only."""

            def __init__(self, config: tl.CausalConfig) -> None:
                super().__init__(config)
                self.gpt = tl.models.GPT2(config)
                self.cached = False

            def forward(self, ids: Int[Tensor, "batch seq"], start_pos: int = 0) -> Float[Tensor, "batch seq vocab"]:
                if self.cached and ids.shape[1] > 1:
                    return torch.cat([self.gpt(ids[:, :-1]), self.gpt(ids)[:, -1:]], dim=1) * 0.5
                return self.gpt(ids, start_pos) if not self.cached else self.gpt(ids)

            @contextlib.contextmanager
            def kv_cache(self, batch: int) -> Iterator[None]:
                self.cached = True
                try:
                    yield
                finally:
                    self.cached = False
    ''',
    )
    found = {code: message for _, _, code, message in errors_of(path)}
    assert "BatchNormed in training mode: the output at position" in found["causal"]  # it mixes positions too
    assert "decoding with the KV cache" in found["cache"] and "LastOnly" in found["cache"]


def test_modules_of_the_same_name_in_two_folders_are_both_checked(tmp_path: Path) -> None:
    for folder, body in (("one", "return x"), ("two", "return x.flip(1)")):
        (tmp_path / folder).mkdir()
        write(
            tmp_path / folder,
            "model",
            f"""
            class Layer_{folder}(Layer[Embedded, Embedded]):
                def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                    {body}
        """,
        )
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(4)\n")
    report = check([str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "exits.py")])
    assert report.layers == 2
    found = sorted((Path(p.path).parent.name, p.code, p.message) for p in report.errors)
    assert [(folder, code) for folder, code, _ in found] == [(tmp_path.name, "import"), ("two", "causal")]
    assert "SystemExit: 4" in found[0][2]


def test_a_loss_shifted_the_wrong_way_nan_outputs_and_two_invariants_at_once(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "more",
        '''
        @tl.checked
        def backwards(model: Layer[TokenIds, Logits], ids: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
            logits = model(ids)
            return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), ids[:, :-1].reshape(-1))


        class LogFeatures(Layer[Embedded, Embedded]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x.log()


        class Everything(Layer[Embedded, Embedded]):
            """Averages over batch and positions: both invariants fail, both are told."""

            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x - x.mean(dim=(0, 1))
    ''',
    )
    found = {(message.split(":")[0], code): message for _, _, code, message in errors_of(path)}
    assert "shifted the wrong way" in found[("backwards", "target-leak")]
    assert "gives NaN or infinite outputs" in found[("LogFeatures", "non-finite")]
    assert ("LogFeatures", "causal") not in found
    assert ("Everything", "causal") in found and ("Everything", "batch-mixing") in found
