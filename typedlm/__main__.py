"""``python -m typedlm check ...`` (and the ``typedlm`` console script)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = {"check": "find shape bugs before the run (see `typedlm check --help`)"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        usage = "usage: typedlm COMMAND [ARGS]\n\ncommands:\n" + "\n".join(f"  {c}  {h}" for c, h in COMMANDS.items())
        wrong = bool(args) and args[0] not in ("-h", "--help")
        print(
            f"typedlm: error: unknown command {args[0]!r}\n{usage}" if wrong else usage,
            file=sys.stderr if wrong else sys.stdout,
        )
        return 2 if wrong or not args else 0
    from typedlm.check.cli import main as check_main

    return check_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
