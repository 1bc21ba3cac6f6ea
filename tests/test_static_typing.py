"""mypy must reject each shape bug in tests/typing_cases/reject_*.py on the marked line, and accept the rest.

A line marked ``# E: code`` must get exactly that mypy error code; no other line may get an error.
"""

import re
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted((ROOT / "tests" / "typing_cases").glob("*.py"))
_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def _expected(path: Path) -> set[tuple[int, str]]:
    marks = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = re.search(r"#\s*E:\s*([a-z-]+)", line)
        if found:
            marks.add((number, found.group(1)))
    return marks


@pytest.fixture(scope="module")
def mypy_errors() -> dict[str, set[tuple[int, str]]]:
    """One mypy run over every case (strict, the project's mypy.ini): errors by file name.

    Its own cache directory keeps it from invalidating the cache of `nox -s typecheck`, whose
    environment holds another copy of torch.
    """
    cache = ROOT / ".mypy_cache" / "typing-cases"
    stdout, stderr, _status = api.run(
        ["--config-file", str(ROOT / "mypy.ini"), "--cache-dir", str(cache), *map(str, CASES)]
    )
    assert not stderr, stderr
    errors: dict[str, set[tuple[int, str]]] = {path.name: set() for path in CASES}
    for line in stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            errors[Path(match["path"]).name].add((int(match["line"]), match["code"]))
    return errors


def test_cases_exist() -> None:
    assert any(p.name.startswith("reject_") for p in CASES) and any(p.name.startswith("accept_") for p in CASES)


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_mypy_reports_exactly_the_marked_errors(case: Path, mypy_errors: dict[str, set[tuple[int, str]]]) -> None:
    expected = _expected(case)
    if case.name.startswith("reject_"):
        assert expected, f"{case.name} marks no expected error"
    assert mypy_errors[case.name] == expected
