"""``python -m typedlm check [PATH | MODULE ...]``: the command line of the analysis-time checker."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from pathlib import Path

from typedlm.check.report import CODES
from typedlm.check.run import DEFAULT_MAX_PARAMS, check
from typedlm.checks import check_mode_variable
from typedlm.cli import ArgumentParser, run_main
from typedlm.errors import ConfigError


def _configured_exclude() -> list[str]:
    """``[tool.typedlm.check] exclude = [regex, ...]`` from ./pyproject.toml, as mypy's ``exclude``."""
    pyproject = Path("pyproject.toml")
    if not pyproject.is_file():
        return []
    try:
        table = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SystemExit(f"typedlm check: error: pyproject.toml: {error}") from None
    value = table.get("tool", {}).get("typedlm", {}).get("check", {}).get("exclude", [])
    if isinstance(value, str):
        return [value]
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise SystemExit("typedlm check: error: pyproject.toml: [tool.typedlm.check] exclude must be a list of regexes")
    return value


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  [{code}] {meaning}" for code, meaning in CODES.items())
    parser = ArgumentParser(
        prog="typedlm check",
        description=(
            "Find shape bugs before the run: import the given files, directories or modules, build every "
            "typedlm Layer subclass at a probe config whose sizes are pairwise distinct, trace each forward on "
            "the meta device with two batch/seq sizes, check causality, batch independence and KV-cache "
            "decoding on tiny tensors, and call every @typedlm.checked function with probe tensors."
        ),
        epilog=f"error codes:\n{codes}\n\nexit status: 1 if any error was found, else 0.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="*", default=["."], metavar="PATH | MODULE", help="what to check (default: .)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="skip files whose path matches (repeatable; added to [tool.typedlm.check] exclude in pyproject.toml)",
    )
    parser.add_argument(
        "--max-params",
        type=int,
        default=DEFAULT_MAX_PARAMS,
        metavar="N",
        help=f"run invariants only on models with at most N parameters (default {DEFAULT_MAX_PARAMS:,})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_mode_variable()
        if args.max_params < 0:
            raise ConfigError(f"--max-params {args.max_params}: must be >= 0")
        report = check(args.targets, exclude=[*_configured_exclude(), *args.exclude], max_params=args.max_params)
        print(report.to_json() if args.json else report.format())
        return report.exit_code

    return run_main("typedlm check", body)
