"""The typed core stands apart from the training infrastructure (``typedlm.training``)."""

from __future__ import annotations

import subprocess
import sys

import typedlm.training

CORE = ["shapes", "dims", "checks", "layer", "nn", "models", "losses", "token_ids", "errors", "config", "check"]

_IN_A_FRESH_PROCESS = f"""
import importlib, sys
import typedlm
for name in {CORE!r}:
    importlib.import_module("typedlm." + name)
for name in ("typedlm.check.run", "typedlm.check.cli", "typedlm.check.discover"):
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.startswith("typedlm.training"))
assert not loaded, f"the typed core loaded {{loaded}}"
"""


def test_import_typedlm_and_the_core_do_not_load_training() -> None:
    result = subprocess.run([sys.executable, "-c", _IN_A_FRESH_PROCESS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_training_reexports_its_public_names() -> None:
    from typedlm.training import TrainConfig, train, trainer

    assert train is trainer.train and TrainConfig is trainer.TrainConfig
    missing = [name for name in typedlm.training.__all__ if not hasattr(typedlm.training, name)]
    assert not missing
