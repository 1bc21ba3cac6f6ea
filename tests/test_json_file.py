"""The one JSON-document reader behind state.json, TrainLog files and Hugging Face config.json: each
caller keeps its own wording, and a path that is no regular file is refused without blocking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from typedlm.errors import DataFileError
from typedlm.hf import HFCheckpointError, load_gpt2
from typedlm.json_file import UnreadableJSON, read_json
from typedlm.training.checkpoint import CheckpointError, read_state
from typedlm.training.trainlog import TrainLog


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ('{"a": [1, 2]}', None, None),
        ("{\n  oops", "not json", 2),
        (b"\xff{}", "not utf-8", None),
        ("[" * 100_000, "not json", None),
    ],
    ids=["valid", "syntax", "not-utf8", "too-deep"],
)
def test_read_json_says_which_step_failed(
    tmp_path: Path, text: str | bytes, problem: str | None, line: int | None
) -> None:
    file = tmp_path / "doc.json"
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    if problem is None:
        assert read_json(file) == {"a": [1, 2]}
        return
    with pytest.raises(UnreadableJSON) as info:
        read_json(file)
    assert (info.value.problem, info.value.line) == (problem, line)
    assert info.value.where(file) == (f"{file}:{line}" if line else str(file))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_at_once_in_each_callers_words(tmp_path: Path) -> None:
    """Reading a FIFO with no writer would wait forever; each caller refuses it in one line instead."""
    checkpoint, hf = tmp_path / "checkpoint", tmp_path / "hf"
    for directory, name in ((checkpoint, "state.json"), (hf, "config.json"), (tmp_path, "log.json")):
        directory.mkdir(exist_ok=True)
        os.mkfifo(directory / name)
    with pytest.raises(CheckpointError, match=r"state\.json: cannot read the checkpoint state \(a FIFO, not a regular"):
        read_state(checkpoint)
    with pytest.raises(DataFileError, match=r"log\.json: cannot read the TrainLog file \(a FIFO, not a regular file\)"):
        TrainLog.load(tmp_path / "log.json")
    with pytest.raises(HFCheckpointError, match=r"config\.json: cannot read \(a FIFO, not a regular file\)"):
        load_gpt2(hf)
