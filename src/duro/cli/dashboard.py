"""``duro dashboard``: print the URL of a running server's dashboard, with its admin token in
the URL's fragment (a browser never sends a fragment to a server; the page moves the token into
the tab's sessionStorage and removes it from the address bar)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError
from ._admin import AdminUnavailable, admin_address
from .tail import _data_dir

__all__ = ["add_dashboard_parser"]

DESCRIPTION = """\
Print the URL of a running server's dashboard: its namespaces and objects, one object's tables,
KV keys and bookmarks (restore, branch), a read-only SQL console, the live tail and open sockets.

The dashboard is served by the server's admin listener (127.0.0.1 and a free port unless the
config's [admin] table or --admin-host/--admin-port say otherwise). The URL carries the admin
token: it lets whoever holds it change every object, so do not paste it anywhere.
"""


def add_dashboard_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("dashboard", help="print the URL of a running server's dashboard (with its token)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  duro dashboard\n  duro dashboard --data /var/lib/myapp\n")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="the server's data directory (default: the config's data_dir, else PROJECT/.duro)")
    p.add_argument("--project", metavar="DIR", default=None,
                   help="project folder whose config names the data directory (default: the current folder)")
    p.set_defaults(func=cmd_dashboard)
    return p


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        base, token = admin_address(_data_dir(args), None)
    except ConfigError as e:
        print(f"duro: {e}", file=sys.stderr)
        return 2
    except AdminUnavailable as e:
        print(f"duro dashboard: {e}", file=sys.stderr)
        return 1
    print(f"{base}/#token={token}")
    return 0
