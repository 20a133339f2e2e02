"""The declarative ``exports`` map of a wrangler file (Cloudflare, 2026-07-02): parsing, validation,
and which Durable Object classes it says exist.

``exports`` replaces ``migrations``: one entry per class name, each with a ``state`` (``created``,
``deleted``, ``renamed``, ``transferred``, ``expecting-transfer``) and the keys that state requires
or forbids. This module turns the map into :class:`Exports` — the live classes and their storage,
the tombstones, the renames and transfers — and checks the bindings against it. It moves no data:
what a rename or a transfer does to stored objects is ``duro migrate``'s.

Imports nothing of duro but the error tree.
"""

from __future__ import annotations

import json
import keyword
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import ConfigError

__all__ = ["ExportEntry", "Exports", "parse_exports", "STATES"]

STATES = ("created", "deleted", "renamed", "transferred", "expecting-transfer")
_STORAGE = ("sqlite", "legacy-kv")
_FIELDS = ("type", "state", "storage", "renamed_to", "transferred_to", "transfer_from", "container")

# state -> (required keys, forbidden keys), Cloudflare's table. ``type`` is required where a namespace
# is created or deleted; ``container`` may stand on live entries only.
_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "created": (("type", "storage"), ("renamed_to", "transferred_to", "transfer_from")),
    "deleted": (("type",), ("storage", "renamed_to", "transferred_to", "transfer_from", "container")),
    "renamed": (("renamed_to",), ("storage", "transferred_to", "transfer_from", "container")),
    "transferred": (("transferred_to",), ("storage", "renamed_to", "transfer_from", "container")),
    "expecting-transfer": (("storage", "transfer_from"), ("renamed_to", "transferred_to")),
}


@dataclass(frozen=True)
class ExportEntry:
    """One class of the map, validated. ``storage`` is None for a tombstone."""

    class_name: str
    state: str
    storage: str | None = None
    renamed_to: str | None = None
    transferred_to: str | None = None
    transfer_from: str | None = None
    container: Mapping[str, Any] | None = None

    @property
    def live(self) -> bool:
        """Whether the class has a namespace this Worker serves (``created``); an
        ``expecting-transfer`` class has none until the transfer commits."""
        return self.state == "created"


@dataclass(frozen=True)
class Exports:
    """The validated ``exports`` map: the runtime's view of which classes exist."""

    entries: Mapping[str, ExportEntry]

    def _with(self, state: str) -> frozenset[str]:
        return frozenset(n for n, e in self.entries.items() if e.state == state)

    @property
    def live_classes(self) -> frozenset[str]:
        return frozenset(n for n, e in self.entries.items() if e.live)

    @property
    def sqlite_classes(self) -> frozenset[str]:
        return frozenset(n for n, e in self.entries.items() if e.live and e.storage == "sqlite")

    @property
    def kv_classes(self) -> frozenset[str]:
        return frozenset(n for n, e in self.entries.items() if e.live and e.storage == "legacy-kv")

    @property
    def tombstones(self) -> frozenset[str]:
        """Classes whose namespace is gone from this Worker: deleted, renamed or transferred away."""
        return self._with("deleted") | self._with("renamed") | self._with("transferred")

    @property
    def renames(self) -> Mapping[str, str]:
        """old class name -> new class name."""
        return {n: e.renamed_to for n, e in self.entries.items() if e.renamed_to is not None}

    @property
    def pending_transfers(self) -> Mapping[str, str]:
        """class name -> the Worker it is expected from (``expecting-transfer``)."""
        return {n: e.transfer_from for n, e in self.entries.items() if e.transfer_from is not None}

    def check_bindings(self, bindings: Iterable[tuple[str, str, str]], file: str) -> None:
        """Refuse a binding (name, class name, config key) to a class the map gives no namespace."""
        for name, cls, key in bindings:
            entry = self.entries.get(cls)
            if entry is None:
                raise ConfigError(
                    f"binding {name} names class {cls}, which exports does not declare: a class absent from "
                    f'exports gets no namespace; add "{cls}": {{"type": "durable-object", "storage": "sqlite"}} '
                    "to exports", file=file, key=key)
            if entry.state == "expecting-transfer":
                raise ConfigError(
                    f"binding {name} names class {cls}, which is expecting a transfer from "
                    f"{entry.transfer_from}: bind it only after the transfer has committed", file=file, key=key)
            if not entry.live:
                what = {"deleted": "deleted",
                        "renamed": f"renamed to {entry.renamed_to}",
                        "transferred": f"transferred to {entry.transferred_to}"}[entry.state]
                raise ConfigError(f"binding {name} names class {cls}, which exports marks {what}: bind the "
                                  "live class instead, or remove the binding", file=file, key=key)

    def check_code(self, defined: Iterable[str], file: str) -> None:
        """Refuse a live class the entry module does not define (Cloudflare's
        ``config_export_not_in_code``)."""
        have = set(defined)
        for n in sorted(self.live_classes):
            if n not in have:
                raise ConfigError(f"[config_export_not_in_code] exports declares class {n}, but the entry module "
                                  "defines no such class; export it from the code or mark it deleted",
                                  file=file, key=f"exports.{n}")


def _show(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(v)


def _is_ident(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def parse_exports(raw: Any, file: str, key: str = "exports") -> Exports:
    """Validate the ``exports`` map; raise :class:`ConfigError` naming the first bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"must be an object keyed by class name, not {_show(raw)}", file=file, key=key)
    entries: dict[str, ExportEntry] = {}
    for cls, table in raw.items():
        ck = f"{key}.{cls}"
        if not _is_ident(cls):
            raise ConfigError(f"{_show(cls)} is not a valid class name (keys of exports are the exported class "
                              "names)", file=file, key=ck)
        if not isinstance(table, dict):
            raise ConfigError(f"must be an object, not {_show(table)}", file=file, key=ck)
        unknown = sorted(set(table) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; valid keys: "
                              f"{', '.join(_FIELDS)}", file=file, key=f"{ck}.{unknown[0]}")
        state = table.get("state", "created")
        if state not in STATES:
            raise ConfigError(f"state must be one of {', '.join(STATES)}, not {_show(state)}", file=file,
                              key=f"{ck}.state")
        required, forbidden = _RULES[state]
        for k in required:
            if k not in table:
                raise ConfigError(f"missing; a class in state {state!r} requires {', '.join(required)}",
                                  file=file, key=f"{ck}.{k}")
        for k in forbidden:
            if k in table:
                raise ConfigError(f"not allowed in state {state!r} (it forbids {', '.join(forbidden)})",
                                  file=file, key=f"{ck}.{k}")
        if "type" in table and table["type"] != "durable-object":
            raise ConfigError(f'type must be "durable-object", not {_show(table["type"])}', file=file,
                              key=f"{ck}.type")
        for k in ("renamed_to", "transferred_to", "transfer_from"):
            if k in table and (not isinstance(table[k], str) or not table[k]):
                raise ConfigError(f"must be a non-empty string, not {_show(table[k])}", file=file, key=f"{ck}.{k}")
        storage = table.get("storage")
        if storage is not None and storage not in _STORAGE:
            raise ConfigError(f'storage must be "sqlite" or "legacy-kv", not {_show(storage)}', file=file,
                              key=f"{ck}.storage")
        if state == "expecting-transfer" and storage == "legacy-kv":
            raise ConfigError('a transferred namespace keeps its storage; only "sqlite" can be expected here',
                              file=file, key=f"{ck}.storage")
        container = table.get("container")
        if container is not None and not isinstance(container, dict):
            raise ConfigError(f"must be an object, not {_show(container)}", file=file, key=f"{ck}.container")
        entries[cls] = ExportEntry(cls, state, storage, table.get("renamed_to"), table.get("transferred_to"),
                                   table.get("transfer_from"), container)
    _check_renames(entries, file, key)
    return Exports(entries)


def _check_renames(entries: Mapping[str, ExportEntry], file: str, key: str) -> None:
    """A rename is a tombstone plus a live target in the same map: a valid class name, not the
    source, and the target of no other rename."""
    targets: dict[str, str] = {}
    for cls, e in entries.items():
        if e.renamed_to is None:
            continue
        rk = f"{key}.{cls}.renamed_to"
        dst = e.renamed_to
        if not _is_ident(dst):
            raise ConfigError(f"{_show(dst)} is not a valid class name", file=file, key=rk)
        if dst == cls:
            raise ConfigError(f"class {cls} cannot be renamed to itself", file=file, key=rk)
        if dst in targets:
            raise ConfigError(f"class {dst} is already the target of the rename of {targets[dst]}", file=file, key=rk)
        targets[dst] = cls
        target = entries.get(dst)
        if target is None or not target.live:
            raise ConfigError(f"the rename of {cls} needs a live entry for {dst} in the same map: add "
                              f'"{dst}": {{"type": "durable-object", "storage": "sqlite"}}', file=file, key=rk)
