"""``duro objects check``: ``PRAGMA integrity_check`` over every stored object, with a progress bar
and a summary. Read-only: it works while a server runs and never changes a file; a damaged
object is repaired with ``duro objects restore`` (which refuses a damaged state of the history).

Exit codes: 0 every object is sound; 5 at least one is damaged; otherwise as ``duro objects``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..storage import maintenance
from ._data import load_context
from ._output import Progress, print_json

__all__ = ["add_check_parser", "EXIT_DAMAGED"]

EXIT_DAMAGED = 5


def add_check_parser(osub: Any, sub: Any, common: Any, command: Any) -> None:
    """Add ``check`` to ``duro objects``' subcommands (``sub`` builds one, ``common`` adds the
    shared options, ``command`` wraps the function with the shared error handling)."""
    s = sub(osub, "check", "check every object's database file for damage (integrity_check)",
            "Run SQLite's PRAGMA integrity_check over every stored object (or one namespace's) and "
            "print each damaged object with what is wrong, then a summary. Read-only: works while "
            "the server runs. A progress bar shows on a terminal. Exit code 0 when every object is "
            f"sound, {EXIT_DAMAGED} when at least one is damaged. Repair one with `duro objects "
            "restore` to a bookmark from before the damage.",
            "  duro objects check\n"
            "  duro objects check --namespace COUNTER --json\n"
            "  duro objects restore apples --at -1h      (repair a damaged one)\n")
    common(s)
    s.set_defaults(func=command(cmd_check))


def cmd_check(args: argparse.Namespace) -> int:
    """``duro objects check``."""
    ctx = load_context(args.project, args.data)
    targets = ctx.objects(args.namespace)
    damaged: list[dict[str, Any]] = []
    checked = 0
    with Progress("checking objects", unit="objects") as progress:
        for i, t in enumerate(targets):
            try:
                problems = maintenance.integrity_problems(t.path)
            except FileNotFoundError:
                problems = None  # deleted while we checked: simply gone
            except Exception as e:  # noqa: BLE001 - one unreadable object must not hide the others
                problems = [str(e)] if t.path.exists() else None
            if problems is not None:
                checked += 1
                if problems:
                    damaged.append({"namespace": t.namespace.label, "id": t.id, "path": str(t.path),
                                    "problems": problems})
            progress.update(i + 1, len(targets))
    if args.json:
        print_json({"checked": checked, "ok": checked - len(damaged), "damaged": damaged})
    else:
        for d in damaged:
            print(f"DAMAGED {d['namespace']} {d['id']}: {d['problems'][0]}")
            for extra in d["problems"][1:]:
                print(f"    {extra}")
        summary = f"checked {checked} object{'s' if checked != 1 else ''}: {checked - len(damaged)} ok, " \
                  f"{len(damaged)} damaged"
        print(summary)
        if damaged:
            print("repair: duro objects restore ID --at TIME (a time before the damage), or --bookmark B",
                  file=sys.stderr)
    return EXIT_DAMAGED if damaged else 0
