"""The shape-bug gallery: each bug is caught where the gallery says, with the message it shows."""

from __future__ import annotations

import pytest

from examples import shape_bugs
from examples.shape_bugs import BUGS, catch, claims, marked_lines, mypy_errors
from examples.shape_bugs import __main__ as gallery


@pytest.fixture(scope="module")
def static() -> dict[str, list[tuple[int, str, str]]]:
    return mypy_errors()


@pytest.mark.parametrize("name", BUGS)
def test_mypy_reports_exactly_the_marked_lines(name: str, static: dict[str, list[tuple[int, str, str]]]) -> None:
    assert {(line, code) for line, code, _ in static[name]} == marked_lines(name)


def test_helpers_type_check_and_some_bugs_need_mypy(static: dict[str, list[tuple[int, str, str]]]) -> None:
    assert static.get("_common", []) == []
    assert {name for name in BUGS if marked_lines(name)} == {"wrong_order", "forgotten_embedding"}


@pytest.mark.parametrize("name", BUGS)
def test_caught_at_the_claimed_stage_with_the_message(name: str) -> None:
    stage, message = claims(name)
    caught = catch(name)
    assert caught is not None, f"{name} ran without an error"
    assert caught.stage == stage
    assert caught.message.startswith(("ShapeError: ", "ConfigError: ", "examples/shape_bugs/"))
    assert message in caught.message


def test_gallery_shows_every_bug(capsys: pytest.CaptureFixture[str]) -> None:
    assert gallery.main() == 0
    out = capsys.readouterr().out
    for number, name in enumerate(BUGS, 1):
        assert f"{number}. {shape_bugs.title_of(name)}" in out
    assert "NOT CAUGHT" not in out
    assert out.count("caught by mypy, line") == 2 and "[operator]" in out and "[assignment]" in out
