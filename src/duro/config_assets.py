"""The ``assets`` block of a project's configuration (Cloudflare's Workers Static Assets): checked as
wrangler checks it, with Cloudflare's limits and texts for ``run_worker_first`` route rules. Read by
``config.py``; only validates."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from duro.config_values import check_keys, choice, ident, show, string, string_list, table
from duro.errors import ConfigError

__all__ = ["Assets", "HTML_HANDLING", "NOT_FOUND_HANDLING", "parse_assets", "navigation_prefers_assets"]

_ASSETS_KEYS = ("directory", "binding", "html_handling", "not_found_handling", "run_worker_first",
                "experimental_serve_directly")
HTML_HANDLING = ("auto-trailing-slash", "force-trailing-slash", "drop-trailing-slash", "none")
NOT_FOUND_HANDLING = ("single-page-application", "404-page", "none")
# Cloudflare's limits on run_worker_first rules (workers-shared configuration constants).
_MAX_ROUTE_RULES = 100
_MAX_ROUTE_RULE_LENGTH = 100
# The compatibility flag under which a browser navigation (Sec-Fetch-Mode: navigate) gets the
# not_found_handling page even when a Worker exists; on by default from this date.
_NAVIGATION_FLAG = ("assets_navigation_prefers_asset_serving", "assets_navigation_has_no_effect", "2025-04-01")


@dataclass(frozen=True)
class Assets:
    """The ``assets`` block: a folder of static files served as Cloudflare's Workers Static Assets
    serves them. ``run_worker_first`` is a bool or the tuple of route rules (``"/api/*"``,
    ``"!/api/docs/*"``). ``navigation_prefers_assets``: a browser navigation that matches no file gets
    the ``not_found_handling`` page rather than the Worker (Cloudflare's compatibility flag
    ``assets_navigation_prefers_asset_serving``, on from compatibility date 2025-04-01)."""

    directory: pathlib.Path
    binding: str | None = None
    html_handling: str = "auto-trailing-slash"
    not_found_handling: str = "none"
    run_worker_first: bool | tuple[str, ...] = False
    navigation_prefers_assets: bool = True


def parse_assets(root: pathlib.Path, raw: Any, file: str, key: str, navigation_first: bool) -> Assets:
    """The ``assets`` block, checked as wrangler checks it."""
    raw = table(raw, file, key)
    check_keys(raw, _ASSETS_KEYS, file, key)
    if "directory" not in raw:
        raise ConfigError('missing; set it to the folder of static files, e.g. "./public"', file=file,
                          key=f"{key}.directory")
    directory = (root / string(raw["directory"], file, f"{key}.directory")).resolve()
    if not directory.is_dir():
        raise ConfigError(f"the folder {directory} does not exist (or is not a folder); the assets directory "
                          f"must exist", file=file, key=f"{key}.directory")
    binding = ident(raw["binding"], file, f"{key}.binding") if "binding" in raw else None
    html = choice(raw.get("html_handling", "auto-trailing-slash"), HTML_HANDLING, file, f"{key}.html_handling")
    not_found = choice(raw.get("not_found_handling", "none"), NOT_FOUND_HANDLING, file,
                        f"{key}.not_found_handling")
    first: bool | tuple[str, ...] = False
    if "run_worker_first" in raw:
        first = _route_rules(raw["run_worker_first"], file, f"{key}.run_worker_first")
    elif "experimental_serve_directly" in raw:  # the older spelling: serve_directly = not run_worker_first
        v = raw["experimental_serve_directly"]
        if not isinstance(v, bool):
            raise ConfigError(f"must be true or false, not {show(v)}", file=file,
                              key=f"{key}.experimental_serve_directly")
        first = not v
    return Assets(directory=directory, binding=binding, html_handling=html, not_found_handling=not_found,
                  run_worker_first=first, navigation_prefers_assets=navigation_first)


def _route_rules(v: Any, file: str, key: str) -> bool | tuple[str, ...]:
    """``run_worker_first``: true/false, or route rules as Cloudflare validates them."""
    if isinstance(v, bool):
        return v
    if not isinstance(v, list):
        raise ConfigError(f'must be true, false or an array of route rules like ["/api/*"], not {show(v)}',
                          file=file, key=key)
    rules = string_list(v, file, key)
    if not rules:
        raise ConfigError("no rules; must provide at least 1 rule (or use true/false)", file=file, key=key)
    if len(rules) > _MAX_ROUTE_RULES:
        raise ConfigError(f"{len(rules)} rules exceed the maximum of {_MAX_ROUTE_RULES}", file=file, key=key)
    problems = []
    for r in rules:
        if r.startswith("!") and not r.startswith("!/"):
            problems.append(f"{r!r}: negative rules must start with '!/'")
        elif not r.startswith(("/", "!/")):
            problems.append(f"{r!r}: rules must start with '/' or '!/'")
        if len(r) > _MAX_ROUTE_RULE_LENGTH:
            problems.append(f"{r!r}: all rules must be less than {_MAX_ROUTE_RULE_LENGTH} characters in length")
    for i, r in enumerate(rules):
        if r in rules[:i]:
            problems.append(f"{r!r}: rule is a duplicate; rules must be unique")
        if r.endswith("*"):
            problems += [f"{o!r}: rule {r!r} makes it redundant" for o in rules
                         if o != r and o.startswith(r[:-1]) and o.startswith("!") == r.startswith("!")]
    if problems:
        raise ConfigError("invalid routes:\n" + "\n".join(problems), file=file, key=key)
    if not any(r.startswith("/") for r in rules):
        raise ConfigError("only negative rules were provided; must provide at least 1 non-negative rule",
                          file=file, key=key)
    return tuple(rules)


def navigation_prefers_assets(data: dict[str, Any], file: str) -> bool:
    """Cloudflare's flag ``assets_navigation_prefers_asset_serving``: on from the compatibility date
    2025-04-01, or when listed; off when its opposite is listed."""
    enable, disable, since = _NAVIGATION_FLAG
    flags = data.get("compatibility_flags", [])
    flags = string_list(flags, file, "compatibility_flags")
    if disable in flags:
        return False
    date = data.get("compatibility_date", "2021-11-02")  # the asset server's default date
    return enable in flags or (isinstance(date, str) and date >= since)
