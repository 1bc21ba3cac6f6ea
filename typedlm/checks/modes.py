"""The checking mode: ``full``, ``boundary`` or ``off``, from ``TYPEDLM_CHECKS``, `set_mode` or `mode`.

A malformed ``TYPEDLM_CHECKS`` is not raised at import: `check_mode_variable` raises it when a layer is
built (and the command lines call it before any work).
"""

import contextlib
import os
from collections.abc import Iterator
from typing import Literal, Protocol

from typedlm.errors import ConfigError

Mode = Literal["full", "boundary", "off"]
MODES: tuple[Mode, ...] = ("full", "boundary", "off")


class Switch(Protocol):
    """Something that follows the mode (a layer class's forward): `apply` puts the current mode in force."""

    def apply(self) -> None: ...


def _parse_mode(value: str, source: str) -> Mode:
    cleaned = value.strip().lower()
    for known in MODES:
        if cleaned == known:
            return known
    raise ConfigError(f"{source}={value!r}: must be one of {', '.join(MODES)}")


def _mode_from_environment() -> tuple[Mode, ConfigError | None]:
    """``TYPEDLM_CHECKS`` (default full); a malformed value gives full mode plus the error to raise."""
    try:
        return _parse_mode(os.environ.get("TYPEDLM_CHECKS", "full") or "full", "TYPEDLM_CHECKS"), None
    except ConfigError as error:
        return "full", error


_mode, _variable_error = _mode_from_environment()
_switches: list[Switch] = []


def check_mode_variable() -> None:
    """Raise the ConfigError for a malformed ``TYPEDLM_CHECKS``. Not raised at import (a command line
    could not report it in one line then): every `typedlm.Layer` raises it when built, and the
    command lines before any work."""
    if _variable_error is not None:
        raise _variable_error


def current_mode() -> Mode:
    """The checking mode in force now."""
    return _mode


def follow_mode(switch: Switch) -> None:
    """Put the current mode in force on ``switch`` now and after every `set_mode`."""
    _switches.append(switch)
    switch.apply()


def set_mode(new_mode: Mode) -> None:
    """Switch checking mode for every layer class and checked function, from now on."""
    global _mode
    _mode = _parse_mode(new_mode, "checks.set_mode(mode)")
    for switch in _switches:
        switch.apply()


@contextlib.contextmanager
def mode(new_mode: Mode) -> Iterator[None]:
    """``with checks.mode("off"): ...`` runs the block in ``new_mode`` and restores the previous mode."""
    previous = _mode
    set_mode(new_mode)
    try:
        yield
    finally:
        set_mode(previous)
