"""The memory of call signatures that passed: a check is skipped for a call like one that passed.

A key holds the training mode, the shapes and dtypes of the tensor arguments and the plain values
(int, float, str, None) of the others; a call with any other argument is not remembered.
"""

from typing import Any

from torch import Tensor

from typedlm.checks.dynamo import run_outside_dynamo

PASSED_LIMIT = 4096
"""Signatures remembered per layer or function before the memory is cleared (generation varies seq)."""
_PLAIN = (int, float, str)


def call_key(training: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """Training mode, shapes, dtypes and plain values of a call; None if an argument cannot be remembered safely.

    Training mode is part of the key because a forward may take another branch (and give another
    shape) in eval mode.
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], Tensor):  # the common call: one tensor
        return (args[0].shape, args[0].dtype, training)
    key: list[Any] = [training]
    for value in args:
        if not _add_to_key(key, value):
            return None
    for name, value in kwargs.items():
        key.append(name)
        if not _add_to_key(key, value):
            return None
    return tuple(key)


def _add_to_key(key: list[Any], value: object) -> bool:
    if isinstance(value, Tensor):
        key.append(value.shape)
        key.append(value.dtype)
    elif value is None or isinstance(value, _PLAIN):
        key.append(value)
    else:
        return False
    return True


def remember(passed: set[tuple[Any, ...]], key: tuple[Any, ...] | None) -> None:
    """Add ``key`` to ``passed`` (cleared first when it holds `PASSED_LIMIT` keys)."""
    if key is not None:
        if len(passed) >= PASSED_LIMIT:
            passed.clear()
        passed.add(key)


run_outside_dynamo(call_key)
run_outside_dynamo(_add_to_key)
