"""End-to-end: a page of a real object file is damaged on disk; ``duro objects check`` finds it,
``duro objects restore`` rebuilds every page from the history, and a restore to a state the
history took in damaged says it cannot, and why, instead of reporting success."""

from __future__ import annotations

import contextlib
import json
import pathlib
import sqlite3
import subprocess
import sys

import httpx

from duro.ids import NamespaceKey
from duro.testing import ServerProcess

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"
KEY = NamespaceKey("counter-Counter")
PAGE = 4096


def objects(data, *args):
    cmd = [sys.executable, "-m", "duro", "objects", *args, "--data", str(data), "--project", str(COUNTER)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def integrity(path):
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
            return [r[0] for r in c.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as e:
        return [str(e)]


def value(path):
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return c.execute("SELECT v FROM counter WHERE k = 'n'").fetchone()[0]


def damage(path) -> int:
    """Overwrite the header of the counter table's root page, as a bad sector would; returns the
    page number."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'counter'").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek((root - 1) * PAGE)
        f.write(b"\x0d" + b"\xff" * 11)
    return root


def test_check_finds_the_damage_and_restore_rebuilds_every_page(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(COUNTER, data, log_path=tmp_path / "server.log") as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for _ in range(20):
                assert c.post("/counters/apples").status_code == 200
            assert c.post("/counters/pears").status_code == 200
        # Read-only, so it works with the server running.
        proc = objects(data, "check")
        assert proc.returncode == 0, proc.stderr
        assert "checked 2 objects: 2 ok, 0 damaged" in proc.stdout
    apples = data / "do" / "counter-Counter" / f"{KEY.id_from_name('apples')}.sqlite"
    good = apples.read_bytes()
    last = json.loads(objects(data, "show", "apples", "--json").stdout)["bookmarks"]["last"]
    page = damage(apples)
    assert integrity(apples) != ["ok"]

    proc = objects(data, "check")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"DAMAGED COUNTER {KEY.id_from_name('apples')}" in proc.stdout
    assert "checked 2 objects: 1 ok, 1 damaged" in proc.stdout
    report = json.loads(objects(data, "check", "--json").stdout)
    assert report["checked"] == 2 and report["ok"] == 1
    assert [d["id"] for d in report["damaged"]] == [str(KEY.id_from_name("apples"))]
    assert report["damaged"][0]["problems"]

    proc = objects(data, "restore", "apples", "--bookmark", last)
    assert proc.returncode == 0, proc.stderr
    assert integrity(apples) == ["ok"]
    assert value(apples) == 20
    rebuilt = apples.read_bytes()
    assert rebuilt[(page - 1) * PAGE:page * PAGE] == good[(page - 1) * PAGE:page * PAGE]
    assert objects(data, "check").returncode == 0


def test_restore_to_a_damaged_state_says_it_cannot_and_names_an_intact_one(tmp_path):
    data = tmp_path / "data"
    apples = data / "do" / "counter-Counter" / f"{KEY.id_from_name('apples')}.sqlite"
    with ServerProcess(COUNTER, data, log_path=tmp_path / "server.log") as srv:
        for _ in range(20):
            assert httpx.post(f"{srv.url}/counters/apples", timeout=30).status_code == 200
    damage(apples)
    # The server opens the damaged file: its history takes the file in as it finds it.
    with ServerProcess(COUNTER, data, log_path=tmp_path / "server2.log") as srv:
        httpx.get(f"{srv.url}/counters/apples", timeout=30)  # fails or not: the damage is in the file
    assert integrity(apples) != ["ok"]
    damaged_bytes = apples.read_bytes()

    proc = objects(data, "restore", "apples", "--at", "-0s")  # now: the last state the history has
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is itself damaged" in proc.stderr and "The database was not changed" not in proc.stdout
    assert "No database was changed" in proc.stderr
    assert apples.read_bytes() == damaged_bytes
    hint = proc.stderr.split("the latest intact state before it is bookmark ")[1].split(";")[0]

    # Through a running server: the same refusal (the admin endpoint answers 400), then the repair.
    with ServerProcess(COUNTER, data, log_path=tmp_path / "server3.log") as srv:
        proc = objects(data, "restore", "apples", "--at", "-0s", "--server", srv.url)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "is itself damaged" in proc.stderr and hint in proc.stderr
        proc = objects(data, "restore", "apples", "--bookmark", hint, "--server", srv.url)
        assert proc.returncode == 0, proc.stderr
        assert httpx.get(f"{srv.url}/counters/apples", timeout=30).json()["value"] == 20
        assert httpx.post(f"{srv.url}/counters/apples", timeout=30).json()["value"] == 21
    assert integrity(apples) == ["ok"]
    assert value(apples) == 21
    assert objects(data, "check").returncode == 0
