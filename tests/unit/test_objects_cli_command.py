"""``duro objects`` run in-process on a small project: with history off, a restore to a time is
refused before anything changes and ``show`` says why it has no bookmarks; and the command is
always there — an import bug in it fails loudly instead of dropping it from ``duro``."""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys

import pytest

from duro.cli.main import main

PROJECT_TOML = """\
[tool.duro]
main = "app.py"
history_retention = 0

[tool.duro.bindings]
COUNTER = "Counter"
"""

APP = """\
from duro import DurableObject


class Counter(DurableObject):
    pass
"""


@pytest.fixture
def history_off(tmp_path):
    """A project with history off and one object, apples, imported offline."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT_TOML)
    (project / "app.py").write_text(APP)
    source = tmp_path / "apples.sqlite"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE counter (k TEXT PRIMARY KEY, v INTEGER)")
        conn.execute("INSERT INTO counter VALUES ('n', 3)")
    conn.close()
    where = ["--project", str(project), "--data", str(tmp_path / "data")]
    assert main(["objects", "import", str(source), "--to", "apples", *where]) == 0
    return tmp_path / "data", where


def _files(data):
    return {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}


def test_with_history_off_a_restore_to_a_time_is_refused_and_nothing_changes(history_off, capsys):
    data, where = history_off
    before = _files(data)
    capsys.readouterr()
    assert main(["objects", "restore", "apples", "--at", "-1m", *where]) == 2
    err = capsys.readouterr().err
    assert err == ("duro objects restore: error: point-in-time history is off for this project "
                   "(history_retention = 0)\n")
    assert main(["objects", "branch", "apples", "--at", "-1m", "--to", "pears", *where]) == 2
    assert "point-in-time history is off" in capsys.readouterr().err
    assert _files(data) == before


def test_with_history_off_show_says_there_are_no_bookmarks(history_off, capsys):
    data, where = history_off
    capsys.readouterr()
    assert main(["objects", "show", "apples", "--json", *where]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tables"] == [{"name": "counter", "rows": 1}]
    assert shown["bookmarks"]["available"] is False
    assert shown["bookmarks"]["reason"].startswith("no history for this object")


def test_an_import_bug_in_the_objects_command_fails_loudly(monkeypatch):
    # A module that cannot be imported (None in sys.modules makes the import raise ImportError)
    # must stop `duro` from starting, not make `duro objects` silently disappear.
    import duro.storage

    monkeypatch.setitem(sys.modules, "duro.storage.maintenance", None)
    monkeypatch.delattr(duro.storage, "maintenance")
    monkeypatch.delitem(sys.modules, "duro.cli.objects", raising=False)
    monkeypatch.delitem(sys.modules, "duro.cli.main", raising=False)
    with pytest.raises(ImportError, match="duro.storage.maintenance"):
        importlib.import_module("duro.cli.main")
