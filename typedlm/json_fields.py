"""Checking the fields of a parsed JSON document: each problem names its path, e.g. ``steps[3].loss``.

Every check raises `FieldError` (field path + problem); the caller adds the file and turns it into its
own error (the training log a `DataFileError`, a checkpoint a ``CheckpointError``). Values in messages
are shown by `describe`: one short line, never a deep repr.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
"""The strings that stand for the floats JSON cannot hold (TrainLog writes them), and what they read as."""
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]+")


class FieldError(Exception):
    """A JSON field is missing or has the wrong type or value; ``field`` is its path (``steps[3].loss``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (ending ``...``), so a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    """A short, one-line description of a JSON value for an error message (never a deep repr)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float | str):
        try:
            return short_repr(value, 40)
        except ValueError:  # an integer of more digits than Python converts to text
            return "an integer of thousands of digits"
    return type(value).__name__


def field_path(prefix: str, key: str | int) -> str:
    """The path of ``key`` inside the field ``prefix``: ``steps[3]``, ``steps[3].loss``, ``loss``,
    ``config['odd key']``."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if not _PLAIN_KEY.fullmatch(key):  # a key with spaces, quotes or newlines: quoted, on one line
        return f"{prefix}[{describe(key)}]"
    return f"{prefix}.{key}" if prefix else key


def field_of(d: dict[str, Any], key: str, prefix: str) -> Any:
    """``d[key]``, or a FieldError naming the missing field."""
    if key not in d:
        raise FieldError(field_path(prefix, key), "missing")
    return d[key]


def expect_dict(value: object, where: str) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise FieldError(where, f"expected an object, found {describe(value)}")
    return value


def expect_list(value: object, where: str) -> list[Any]:
    """A JSON list."""
    if not isinstance(value, list):
        raise FieldError(where, f"expected a list, found {describe(value)}")
    return value


def expect_str(value: object, where: str) -> str:
    """A JSON string."""
    if not isinstance(value, str):
        raise FieldError(where, f"expected a string, found {describe(value)}")
    return value


def expect_int(value: object, where: str, minimum: int | None = None) -> int:
    """An integer (not a bool, not a float such as ``3.0``), at least ``minimum`` when given."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(where, f"expected an integer, found {describe(value)}")
    if minimum is not None and value < minimum:
        raise FieldError(where, f"expected an integer >= {minimum}, found {describe(value)}")
    return value


def expect_json_number(value: object, where: str) -> int | float:
    """A JSON number as such (not a bool; any size of integer; no ``"nan"`` strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(where, f"expected a number, found {describe(value)}")
    return value


def expect_number(value: object, where: str) -> float:
    """A number (not a bool), or one of the strings ``"nan"``, ``"inf"``, ``"-inf"``; as a float."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    number = expect_json_number(value, where)
    try:
        return float(number)
    except OverflowError:  # an integer too large for a float
        raise FieldError(where, "expected a number, found an integer too large for a float") from None


def dict_field(d: dict[str, Any], key: str, prefix: str) -> dict[str, Any]:
    """``d[key]``, which must be present and an object; ``prefix`` is the path of ``d``."""
    return expect_dict(field_of(d, key, prefix), field_path(prefix, key))


def list_field(d: dict[str, Any], key: str, prefix: str) -> list[Any]:
    """``d[key]``, which must be present and a list."""
    return expect_list(field_of(d, key, prefix), field_path(prefix, key))


def str_field(d: dict[str, Any], key: str, prefix: str) -> str:
    """``d[key]``, which must be present and a string."""
    return expect_str(field_of(d, key, prefix), field_path(prefix, key))


def int_field(d: dict[str, Any], key: str, prefix: str, minimum: int | None = None) -> int:
    """``d[key]``, which must be present and an integer (at least ``minimum`` when given)."""
    return expect_int(field_of(d, key, prefix), field_path(prefix, key), minimum=minimum)


def number_field(d: dict[str, Any], key: str, prefix: str) -> float:
    """``d[key]``, which must be present and a number (see `expect_number`); as a float."""
    return expect_number(field_of(d, key, prefix), field_path(prefix, key))
