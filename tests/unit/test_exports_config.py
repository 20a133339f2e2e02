"""The declarative ``exports`` map of wrangler files (Cloudflare, 2026-07-02), read from real files:
what it declares (live classes and their storage, tombstones, renames, transfers) and every
mistake, each with an error naming the file, the key and the problem."""

from __future__ import annotations

import json
import pathlib

import pytest

from duro.compat.project import load_app
from duro.config import load_project
from duro.errors import ConfigError

ENTRY = """
from workers import DurableObject, WorkerEntrypoint

class Counter(DurableObject):
    async def n(self):
        return 1

class Chat(DurableObject):
    pass

class Default(WorkerEntrypoint):
    pass
"""


def project(root: pathlib.Path, exports: object, bindings: list[tuple[str, str]] | None = None,
            **extra: object) -> pathlib.Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "entry.py").write_text(ENTRY)
    data = {"name": "app", "main": "src/entry.py", "exports": exports, **extra,
            "durable_objects": {"bindings": [{"name": n, "class_name": c}
                                             for n, c in (bindings or [("COUNTER", "Counter")])]}}
    (root / "wrangler.jsonc").write_text("// exports, not migrations\n" + json.dumps(data, indent=2))
    return root


def error(root: pathlib.Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_project(root)
    return str(info.value)


LIVE = {"type": "durable-object", "storage": "sqlite"}


def test_live_classes_tombstones_renames_and_transfers(tmp_path):
    root = project(tmp_path, {
        "Counter": LIVE,
        "Chat": {"type": "durable-object", "storage": "legacy-kv"},
        "Gone": {"type": "durable-object", "state": "deleted"},
        "OldName": {"state": "renamed", "renamed_to": "Counter"},
        "Moved": {"state": "transferred", "transferred_to": "other-worker"},
        "Incoming": {"type": "durable-object", "state": "expecting-transfer", "storage": "sqlite",
                     "transfer_from": "old-worker"},
    }, [("COUNTER", "Counter"), ("CHAT", "Chat")])
    cfg = load_project(root)
    ex = cfg.exports
    assert ex is not None
    assert ex.live_classes == {"Counter", "Chat"}
    assert (ex.sqlite_classes, ex.kv_classes) == ({"Counter"}, {"Chat"})
    assert ex.tombstones == {"Gone", "OldName", "Moved"}
    assert dict(ex.renames) == {"OldName": "Counter"}
    assert dict(ex.pending_transfers) == {"Incoming": "old-worker"}
    assert "Counter" in cfg.sqlite_classes and "Chat" in cfg.kv_classes


@pytest.mark.parametrize("exports, key, text", [
    ({"Counter": {"type": "durable-object"}}, "exports.Counter.storage",
     "missing; a class in state 'created' requires type, storage"),
    ({"Counter": {"storage": "sqlite"}}, "exports.Counter.type", "missing; a class in state 'created' requires"),
    ({"Counter": {**LIVE, "state": "alive"}}, "exports.Counter.state",
     'state must be one of created, deleted, renamed, transferred, expecting-transfer, not "alive"'),
    ({"Counter": {**LIVE, "renamed_to": "X"}}, "exports.Counter.renamed_to", "not allowed in state 'created'"),
    ({"Counter": LIVE, "Gone": {"type": "durable-object", "state": "deleted", "storage": "sqlite"}},
     "exports.Gone.storage", "not allowed in state 'deleted'"),
    ({"Counter": {"type": "worker", "storage": "sqlite"}}, "exports.Counter.type",
     'type must be "durable-object", not "worker"'),
    ({"Counter": {"type": "durable-object", "storage": "postgres"}}, "exports.Counter.storage",
     'storage must be "sqlite" or "legacy-kv", not "postgres"'),
    ({"Counter": {**LIVE, "colour": "red"}}, "exports.Counter.colour", "unknown key colour; valid keys: type,"),
    ({"Counter": LIVE, "Old": {"state": "renamed", "renamed_to": "Missing"}}, "exports.Old.renamed_to",
     "the rename of Old needs a live entry for Missing in the same map"),
    ({"Counter": LIVE, "Old": {"state": "renamed", "renamed_to": "Old"}}, "exports.Old.renamed_to",
     "class Old cannot be renamed to itself"),
    ({"Counter": LIVE, "A": {"state": "renamed", "renamed_to": "Counter"},
      "B": {"state": "renamed", "renamed_to": "Counter"}}, "exports.B.renamed_to",
     "class Counter is already the target of the rename of A"),
    ({"Counter": LIVE, "Old": {"state": "renamed", "renamed_to": "not-a-class"}}, "exports.Old.renamed_to",
     '"not-a-class" is not a valid class name'),
    ({"Counter": LIVE, "In": {"type": "durable-object", "state": "expecting-transfer", "storage": "sqlite"}},
     "exports.In.transfer_from", "missing; a class in state 'expecting-transfer' requires storage, transfer_from"),
    ({"Counter": LIVE, "my-class": LIVE}, "exports.my-class", '"my-class" is not a valid class name'),
    (["Counter"], "exports", 'must be an object keyed by class name, not ["Counter"]'),
])
def test_mistakes_name_the_key(tmp_path, exports, key, text):
    msg = error(project(tmp_path, exports))
    assert msg.startswith(f"wrangler.jsonc: {key}: "), msg
    assert text in msg, msg


def test_bindings_must_name_live_classes(tmp_path):
    msg = error(project(tmp_path / "a", {"Chat": LIVE}))
    assert msg == ('wrangler.jsonc: durable_objects.bindings[0].class_name: binding COUNTER names class Counter, which exports '
                   'does not declare: a class absent from exports gets no namespace; add "Counter": '
                   '{"type": "durable-object", "storage": "sqlite"} to exports'), msg
    msg = error(project(tmp_path / "b", {"Counter": {"state": "renamed", "renamed_to": "Chat"}, "Chat": LIVE}))
    assert "binding COUNTER names class Counter, which exports marks renamed to Chat" in msg
    msg = error(project(tmp_path / "c", {"Counter": {"type": "durable-object", "state": "expecting-transfer",
                                                     "storage": "sqlite", "transfer_from": "w"}}))
    assert "expecting a transfer from w: bind it only after the transfer has committed" in msg


def test_exports_and_migrations_are_exclusive(tmp_path):
    msg = error(project(tmp_path, {"Counter": LIVE}, migrations=[{"tag": "v1", "new_sqlite_classes": ["Counter"]}]))
    assert msg == ("wrangler.jsonc: exports: exports and migrations cannot both be set: exports replaces "
                   "migrations (there is no way back); remove migrations")


async def test_app_serves_what_exports_declares_and_refuses_a_class_not_in_code(tmp_path):
    app = load_app(project(tmp_path / "ok", {"Counter": LIVE, "Chat": LIVE,
                                             "Gone": {"type": "durable-object", "state": "deleted"}}),
                   data_dir=tmp_path / "data")
    await app.start()
    try:
        assert await app.env.COUNTER.getByName("x").n() == 1  # a real object on a real runtime
        assert app.runtime.serves(app.env.COUNTER.unique_key)
    finally:
        await app.close()
    with pytest.raises(ConfigError, match=r"exports\.Ghost: \[config_export_not_in_code\] exports declares class "
                                          r"Ghost, but the entry module defines no such class"):
        load_app(project(tmp_path / "bad", {"Counter": LIVE, "Ghost": LIVE}), data_dir=tmp_path / "data2")
