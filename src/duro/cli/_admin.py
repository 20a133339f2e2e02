"""Where the CLI finds a running server's admin listener: the server writes its address to
``DATA/admin.url`` and its token to ``DATA/admin.token`` (both 0600, both removed at shutdown;
see http/adminfront.py). ``--server URL`` is used only when the data directory names no address
(an admin listener reached another way, e.g. through an SSH tunnel)."""

from __future__ import annotations

import pathlib

from ..errors import DuroError

__all__ = ["AdminUnavailable", "admin_address", "TOKEN_FILE", "URL_FILE"]

TOKEN_FILE = "admin.token"
URL_FILE = "admin.url"


class AdminUnavailable(DuroError):
    """No admin listener can be reached through this data directory (exit code 1)."""


def admin_address(data_dir: pathlib.Path, given: str | None) -> tuple[str, str]:
    """(base URL of the admin listener, token), or AdminUnavailable saying what is missing."""
    token_path = data_dir / TOKEN_FILE
    try:
        token = token_path.read_text().strip()
    except FileNotFoundError:
        raise AdminUnavailable(
            f"no admin token at {token_path}: is a duro server running with --data {data_dir}? "
            "(a server started with --no-admin has no admin listener)") from None
    except PermissionError:
        raise AdminUnavailable(f"cannot read {token_path}: run as the user the server runs as") from None
    try:
        url = (data_dir / URL_FILE).read_text().strip()
    except FileNotFoundError:
        if given is None:
            raise AdminUnavailable(f"no admin address at {data_dir / URL_FILE}: the server is starting or "
                                   "stopping; try again") from None
        url = given
    return url.rstrip("/"), token
