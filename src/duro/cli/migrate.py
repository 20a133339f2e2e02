"""``duro migrate``: apply the project's migrations (renames, deletes, transfers) to its stored data
now, or show with ``--dry-run`` what they would change. The server applies them at start too;
this runs them offline, holding the data directory's lock, so a long one can be watched.

Exit codes: 0 done (or nothing to do); 1 storage failure; 2 configuration refused (an unknown or
out-of-order tag, an occupied target, an untagged migration that moves data); 4 a server holds
the data directory.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from ..config import load_project
from ..errors import ConfigError, DuroError, StorageError
from ..runtime.journalrecovery import recover
from ..storage import migrate
from ._data import DataContext, ServerRunning
from ._output import Progress, print_json

__all__ = ["add_migrate_parser"]

DESCRIPTION = """\
Apply the migrations list of a project's configuration to its stored objects:

  renamed_classes      the class's objects (databases, history, alarms) move to the new class
                       name; their IDs stay valid
  transferred_classes  the same, from another script's class (DATA/do/<from_script>-<from>)
  deleted_classes      the class's objects and their history are deleted for good

Each migration runs once: the tags applied are recorded in DATA/migrations.json (per script, the
project's name), and a tag is
recorded only once all its moves are done, so a run stopped in the middle (even by SIGKILL or a
power cut) is finished by the next one. A tag applied before that the configuration no longer
lists, or a new migration put before one already applied, is refused. `duro serve` and `duro dev`
apply pending migrations at start; this command does it with the server stopped.
"""

EXAMPLES = """\
examples:
  duro migrate --dry-run               what would move, and how much (nothing is changed)
  duro migrate                         apply them (the server must be stopped)
  duro migrate path/to/project --data /var/lib/myapp/.duro --json
"""


def add_migrate_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("migrate", help="apply renamed/deleted/transferred classes to the stored data",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", nargs="?", default=".", metavar="PROJECT_DIR",
                   help="the project folder (default: this folder)")
    p.add_argument("--data", metavar="DIR", help="data directory (default: the config's data_dir, else PROJECT/.duro)")
    p.add_argument("--dry-run", "-n", action="store_true", help="show what would change; change nothing")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_migrate)
    return p


def _row(ch: migrate.Change) -> dict[str, Any]:
    return {"tag": ch.tag, "kind": ch.move.kind, "what": ch.move.what, "from": ch.move.source,
            "to": ch.move.target, "objects": ch.objects, "bytes": ch.bytes, "alarms": ch.alarms,
            "done": ch.done, "note": ch.note}


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ServerRunning as e:
        code, msg = 4, str(e)
    except ConfigError as e:
        code, msg = 2, str(e)
    except (StorageError, DuroError, OSError) as e:
        code, msg = 1, str(e)
    print(f"duro migrate: error: {msg}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    cfg = load_project(args.project)
    data = pathlib.Path(args.data) if args.data else (cfg.data_dir or cfg.root / ".duro")
    data = data.absolute()
    plan = migrate.from_config(cfg)
    ctx = DataContext(data, cfg)
    applied_before = migrate.applied_tags(data, plan.script)
    if args.dry_run:
        changes = migrate.dry_run(data, plan)
    else:
        pid = ctx.server_pid()
        if pid is not None:
            raise ServerRunning(f"cannot migrate: a duro server (pid {pid}) is using {data}. Nothing was changed. "
                                "The server applies pending migrations when it starts: restart it, or stop it "
                                "and run duro migrate")
        data.mkdir(parents=True, exist_ok=True)
        with ctx.exclusive("migrate"), Progress("migrating", unit="") as bar:
            report = recover(data, history=True)  # the object files in step with the journal first
            held = list(report.last) if report.corrupt else []

            def progress(what: str, done: int, total: int) -> None:
                bar.label = what
                bar.update(done, total)
            changes = migrate.apply(data, plan, pending_keys=held, progress=progress)
    now = migrate.applied_tags(data, plan.script)
    pending = [m.tag for m in migrate.pending(data, plan)] if args.dry_run else []
    if args.json:
        print_json({"dry_run": args.dry_run, "data_dir": str(data), "applied_before": applied_before,
                    "applied": now, "pending": pending, "changes": [_row(c) for c in changes]})
        return 0
    if args.dry_run:
        if not pending:
            print(f"nothing to migrate in {data}: every tag is applied ({', '.join(now) or 'none listed'})")
            return 0
        print(f"would apply {', '.join(pending)} to {data} (dry run: nothing is changed)")
        for c in changes:
            print("  " + c.describe())
        return 0
    newly = [t for t in now if t not in applied_before]
    if not newly:
        print(f"nothing to migrate in {data}: every tag is applied ({', '.join(now) or 'none listed'})")
        return 0
    for c in changes:
        print("  " + c.describe())
    print(f"applied {', '.join(newly)} to {data}")
    return 0
