"""Project tasks: ``nox -s typecheck tests check`` (what CI runs), ``nox -s lint``, ``nox -s bench``,
``nox -s text_gpt2``.

Environments are reused between runs, and reinstalled only when ``pyproject.toml`` or the torch choice
changes, so a second run starts in seconds.

torch: on a machine without an NVIDIA driver the CPU wheel ``torch==2.13.0`` is installed first (a
small download, already on disk on the project's CI image); with ``nvidia-smi`` present the range in
``pyproject.toml`` is used, which resolves to PyPI's CUDA build. ``TYPEDLM_TORCH="torch==X.Y"``
overrides both.
"""

import hashlib
import os
import shutil
from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["typecheck", "tests", "check"]

ROOT = Path(__file__).parent
CPU_TORCH = "torch==2.13.0"


def torch_requirement() -> str:
    """The torch to install before the project: the CPU wheel unless this machine has an NVIDIA GPU."""
    override = os.environ.get("TYPEDLM_TORCH")
    if override:
        return override
    return "torch>=2.4" if shutil.which("nvidia-smi") else CPU_TORCH


def install(session: nox.Session, extras: str) -> None:
    """Install torch and ``.[extras]`` into the session's environment unless an identical install is there."""
    torch = torch_requirement()
    recipe = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + f"|{torch}|{extras}".encode()).hexdigest()
    stamp = Path(session.virtualenv.location) / ".typedlm-install"
    if stamp.exists() and stamp.read_text() == recipe:
        session.log("environment is up to date: nothing to install")
        return
    session.install(torch)
    session.install("-e", f".[{extras}]")
    stamp.write_text(recipe)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over typedlm/, examples/, tests/ and benchmarks/ (see mypy.ini)."""
    install(session, "dev")
    session.run("mypy", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite without slow tests (``nox -s tests -- -m slow`` runs those)."""
    install(session, "dev")
    session.run("pytest", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """``typedlm check`` (shape traces and model invariants before any run) on examples/, or on the given paths."""
    install(session, "examples")
    session.run("typedlm", "check", *(session.posargs or ["examples/"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff==0.17.6")  # the formatter version pinned: formatting must not drift between machines
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark in benchmarks/, each printing one table with its peers side by side
    (``nox -s bench -- corpus`` runs one: the token cache at 100 MB against nanoGPT's prepare.py)."""
    install(session, "dev")
    names = session.posargs or sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
    for name in names:
        session.run("python", "-m", f"benchmarks.{name}")


@nox.session
def text_gpt2(session: nox.Session) -> None:
    """The main job: train a GPT-2 on the embedded corpus and sample from it (extra flags after ``--``)."""
    install(session, "examples")
    session.run("python", "-m", "examples.text_gpt2", *session.posargs)
