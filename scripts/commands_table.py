"""The command table of docs/commands.md, made from bertrt's own parser (so it cannot drift from `--help`):
`python scripts/commands_table.py > /tmp/t.md`; `--check docs/commands.md` fails when the page's table is stale
(tests/test_cli_global.py runs the check)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertrt.cli import build_parser

BEGIN, END = "<!-- commands-table:begin (scripts/commands_table.py) -->", "<!-- commands-table:end -->"
GLOBAL = {"help", "config", "debug", "verbose"}


def _flag(action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    text = action.option_strings[0] if action.option_strings[0].startswith("--") else action.option_strings[-1]
    default = action.default
    if action.required:
        return f"`{text}` (required)"
    if default not in (None, False, [], argparse.SUPPRESS) and not isinstance(default, bool):
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"`{text}` ({shown})"
    return f"`{text}`"


def table() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 (argparse has no public walk)
    helps = {c.dest: c.help for c in sub._choices_actions}  # noqa: SLF001
    rows = ["| command | what it does | flags (default) |", "| --- | --- | --- |"]
    for name, command in sub.choices.items():
        flags = " ".join(_flag(a) for a in command._actions if a.dest not in GLOBAL)  # noqa: SLF001
        rows.append(f"| `bertrt {name}` | {helps[name].replace('|', '/')} | {flags} |")
    return "\n".join([BEGIN, *rows, END])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        page = Path(argv[1]).read_text()
        current = page[page.index(BEGIN):page.index(END) + len(END)]
        if current != table():
            print(f"{argv[1]}: the command table is stale; regenerate it with scripts/commands_table.py",
                  file=sys.stderr)
            return 1
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
