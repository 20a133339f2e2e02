"""Entry point of the ``duro`` command."""

from __future__ import annotations

import argparse
import sys

from .migrate import add_migrate_parser
from .dashboard import add_dashboard_parser
from .objects import add_objects_parser
from .serve import add_serve_args, cmd_dev, cmd_serve
from .tail import add_tail_parser

DESCRIPTION = """\
duro runs Durable Objects for Python: one live instance per name, each with its own SQLite
database, alarms, WebSockets and RPC. A project is a folder with pyproject.toml ([tool.duro]) or
a Cloudflare wrangler.jsonc / wrangler.toml.

Start here:
  duro dev examples/counter        serve a project on http://127.0.0.1:8787, restart on code change
  duro serve . --port 8080         production server (data in ./.duro unless --data is given)
  duro objects list                see the objects in a data directory
  duro tail                        watch a running server's events live
  duro migrate --dry-run           what the config's renamed/deleted/transferred classes would move
  duro dashboard                   the URL of a running server's dashboard
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="duro", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run a project's HTTP server",
                           description="Run a project's HTTP and WebSocket server. Every request runs the "
                                       "project's WorkerEntrypoint (the class named Default unless the config "
                                       "says otherwise). Stop with Ctrl-C or SIGTERM: in-flight requests finish, "
                                       "databases close cleanly.")
    add_serve_args(serve, dev=False)
    serve.set_defaults(func=cmd_serve)
    dev = sub.add_parser("dev", help="run a project on 127.0.0.1:8787 with reload on code change",
                         description="Serve a project for development: 127.0.0.1:8787, data in PROJECT_DIR/.duro, "
                                     "and a restart whenever a .py/.toml/.jsonc/.html/.js/.css file changes "
                                     "(a restart resets every object; stored data is kept).")
    add_serve_args(dev, dev=True)
    dev.set_defaults(func=cmd_dev)
    add_objects_parser(sub)
    add_tail_parser(sub)
    add_migrate_parser(sub)
    add_dashboard_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
