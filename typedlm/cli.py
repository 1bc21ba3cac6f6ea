"""What every typedlm command line shares: an error is one line and an exit status, never a traceback.

`ArgumentParser` reports a bad option as ``PROG: error: MESSAGE`` plus a hint to ``--help`` (not the
whole usage block); `run_main` turns typedlm's own errors, file-system errors and Ctrl-C into one line
and an exit status. Anything else is a bug in typedlm: it is reported on one line too, and
``TYPEDLM_TRACEBACK=1`` shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn

from typedlm.errors import ConfigError, TypedLMError

USAGE_ERROR = 2
"""Exit status of a refused input (argparse's convention)."""
FAILED = 1
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as a shell reports it."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line plus a hint, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {one_line(message)}\n  (see: {self.prog} --help)\n")


def one_line(message: str) -> str:
    """``message`` with its lines joined, so an error is always a single line."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


_CONFIG_FIELD = re.compile(r"(?:CausalConfig|TrainConfig)\.(\w+)=(.*)")


def renamed_field(error: ConfigError, names: Mapping[str, str], joiner: str = " ") -> ConfigError:
    """``error`` about a config field told under the name the user wrote it with: with
    ``names={"lr": "--lr"}``, ``TrainConfig.lr=0.0: must be > 0`` becomes ``--lr 0.0: must be > 0``
    (``joiner="="`` for ``train.lr=0.0``). An error about no named field is returned as it is."""
    found = _CONFIG_FIELD.match(str(error))
    if found is None or found[1] not in names:
        return error
    return ConfigError(f"{names[found[1]]}{joiner}{found[2]}")


def run_main(prog: str, body: Callable[[], int]) -> int:
    """``body()``'s exit status; errors are printed as ``PROG: error: ...`` on stderr with a status:
    2 for a refused input (a `TypedLMError`), 1 for a file-system or other failure, 130 for Ctrl-C."""
    try:
        return body()
    except TypedLMError as error:
        return _fail(prog, str(error), USAGE_ERROR)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", INTERRUPTED)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return _fail(prog, f"{where}{error.strerror or error}", FAILED)
    except MemoryError:
        return _fail(prog, "out of memory: use a smaller --batch, --seq-len or model", FAILED)
    except Exception as error:
        if os.environ.get("TYPEDLM_TRACEBACK"):
            raise
        message = f"internal error {type(error).__name__}: {error} (a bug: TYPEDLM_TRACEBACK=1 shows where)"
        return _fail(prog, message, FAILED)


def _fail(prog: str, message: str, status: int) -> int:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return status
