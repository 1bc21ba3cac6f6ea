"""``python -m examples.shape_bugs``: run every bug program and show where typedlm stops it."""

from __future__ import annotations

import sys
import textwrap

from examples.shape_bugs import BUGS, ROOT, catch, marked_lines, mypy_errors, path_of, title_of


def main() -> int:
    print("Checking the bug programs with mypy --strict ...\n")
    try:
        static = mypy_errors()
    except ImportError:
        print("mypy is not installed (pip install mypy): showing the run-time checks only.\n")
        static = {name: [] for name in BUGS}
    for number, name in enumerate(BUGS, 1):
        path = path_of(name).relative_to(ROOT)
        print(f"{number}. {title_of(name)}  ({path})")
        lines = path_of(name).read_text().splitlines()
        for line, code, text in static[name]:
            print(f"   caught by mypy, line {line}: {lines[line - 1].split('#')[0].strip()}")
            print(textwrap.fill(f"error: {text} [{code}]", 110, initial_indent="     ", subsequent_indent="       "))
        caught = catch(name)
        where = "without mypy, caught" if marked_lines(name) else "caught"
        if caught is None:
            print(f"   NOT CAUGHT at run time: {name} ran to the end")
        else:
            print(f"   {where} at {caught.stage}:")
            print(textwrap.fill(caught.message, 110, initial_indent="     ", subsequent_indent="       "))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
