"""Reading one JSON document from a file: a regular file (`typedlm.regular_file`), UTF-8, valid JSON.

`read_json` raises `UnreadableJSON` saying which step failed and why; each caller words it for what the
file is (a checkpoint's state.json, a TrainLog, a Hugging Face config.json) and checks the document's
fields itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from typedlm.errors import error_reason
from typedlm.regular_file import UnreadableFile, read_regular_file


class UnreadableJSON(Exception):
    """Why a JSON file cannot be read: ``problem`` is "missing", "unreadable" (not a readable regular
    file), "not utf-8" or "not json"; ``reason`` says why in words, and ``line`` is where the JSON
    decoder stopped (None where it did not stop at a syntax error: nesting too deep, an integer too long)."""

    def __init__(self, problem: str, reason: str, line: int | None = None) -> None:
        super().__init__(problem, reason, line)
        self.problem, self.reason, self.line = problem, reason, line

    def where(self, path: str | Path) -> str:
        """``path``, followed by ``:LINE`` when the problem has a line."""
        return f"{path}:{self.line}" if self.line is not None else str(path)


def read_json(path: str | Path) -> object:
    """The JSON document in the file ``path`` (any JSON value); `UnreadableJSON` otherwise."""
    try:
        data = read_regular_file(Path(path))
    except UnreadableFile as e:
        raise UnreadableJSON("missing" if e.problem == "missing" else "unreadable", e.reason) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableJSON("not utf-8", f"not UTF-8 text: {error_reason(e)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableJSON("not json", e.msg, e.lineno) from None
    except RecursionError:
        raise UnreadableJSON("not json", "nested too deeply") from None
    except ValueError as e:  # an integer of too many digits
        raise UnreadableJSON("not json", error_reason(e)) from None
