"""End-to-end: ``duro objects`` as a subprocess against the counter example's data directory, with
the server running (reads, and writes through --server) and stopped (offline writes)."""

from __future__ import annotations

import contextlib
import json
import pathlib
import sqlite3
import subprocess
import sys

import httpx
import pytest

from duro.ids import NamespaceKey
from duro.testing import ServerProcess

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"
KEY = NamespaceKey("counter-Counter")

def objects(data, *args, cwd=None):
    """Run ``duro objects ARGS --data DATA --project COUNTER``; returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "duro", "objects", *args, "--data", str(data), "--project", str(COUNTER)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)


def ok(data, *args):
    proc = objects(data, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def counter_value(srv, name):
    return httpx.get(f"{srv.url}/counters/{name}", timeout=30).json()["value"]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One server for the module, with apples=3, pears=1 and kiwis=10."""
    base = tmp_path_factory.mktemp("objects")
    (base / "imports").mkdir()
    srv = ServerProcess(COUNTER, base / "data", log_path=base / "server.log",
                        args=["--admin-import-dir", str(base / "imports")]).start()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for name, by in (("apples", 3), ("pears", 1), ("kiwis", 10)):
            assert c.post(f"/counters/{name}?by={by}").status_code == 200
    yield srv, base / "data"
    srv.stop()


# ---- reading while the server runs -----------------------------------------------------------------


def test_list_shows_each_object_with_its_name(running):
    srv, data = running
    table = ok(data, "list")
    assert table.splitlines()[0].split()[:3] == ["NAMESPACE", "ID", "NAME"]
    for name in ("apples", "pears", "kiwis"):
        assert f"{KEY.id_from_name(name)}  {name}" in table
    rows = json.loads(ok(data, "list", "--json", "--namespace", "COUNTER"))
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) >= {"apples", "pears", "kiwis"}
    assert by_name["apples"]["id"] == str(KEY.id_from_name("apples"))
    assert by_name["apples"]["size"] > 0 and by_name["apples"]["alarm"] is None
    assert by_name["apples"]["last_write"].endswith("Z")


def test_show_by_name_and_by_id(running):
    srv, data = running
    text = ok(data, "show", "apples")
    assert "counter" in text and "kv keys" in text
    info = json.loads(ok(data, "show", str(KEY.id_from_name("apples")), "--json"))
    assert info["name"] == "apples"
    assert info["tables"] == [{"name": "counter", "rows": 1}]
    assert info["kv_keys"] == 0 and info["alarm"] is None
    assert "available" in info["bookmarks"]


def test_sql_reads_and_refuses_to_write_without_write(running):
    srv, data = running
    out = json.loads(ok(data, "sql", "apples", "SELECT k, v FROM counter WHERE k = ?", "--param", "n", "--json"))
    assert out["rows"] == [{"k": "n", "v": 3}]
    assert "(1 row)" in ok(data, "sql", "apples", "SELECT v FROM counter")
    proc = objects(data, "sql", "apples", "UPDATE counter SET v = 999")
    assert proc.returncode == 2
    assert "--write" in proc.stderr
    assert counter_value(srv, "apples") == 3


def test_writes_refuse_while_the_server_runs(running, tmp_path):
    srv, data = running
    proc = objects(data, "sql", "pears", "UPDATE counter SET v = 999", "--write")
    assert proc.returncode == 4
    assert f"pid {srv.proc.pid}" in proc.stderr and "--server" in proc.stderr
    export = tmp_path / "kiwis.sqlite"
    ok(data, "export", "kiwis", str(export))
    proc = objects(data, "import", str(export), "--to", "plums")
    assert proc.returncode == 4 and "Nothing was changed" in proc.stderr
    assert not (data / "do" / "counter-Counter" / f"{KEY.id_from_name('plums')}.sqlite").exists()
    proc = objects(data, "restore", "pears", "--at", "-15m")
    assert proc.returncode == 4
    assert counter_value(srv, "pears") == 1


def test_write_through_the_server_resets_the_object(running):
    srv, data = running
    assert counter_value(srv, "kiwis") == 10  # a live instance exists
    out = ok(data, "sql", "kiwis", "UPDATE counter SET v = v + 5 RETURNING v", "--write", "--server", srv.url)
    assert "15" in out
    assert counter_value(srv, "kiwis") == 15
    assert httpx.post(f"{srv.url}/counters/kiwis", timeout=30).json()["value"] == 16


def test_export_then_import_through_the_server(running, tmp_path):
    srv, data = running
    outside = tmp_path / "apples.sqlite"
    ok(data, "export", "apples", str(outside))
    proc = objects(data, "import", str(outside), "--to", "apricots", "--server", srv.url)
    assert proc.returncode == 1 and "outside the folder this server imports from" in proc.stderr, proc.stderr
    export = data.parent / "imports" / "apples.sqlite"
    ok(data, "export", "apples", str(export))
    with contextlib.closing(sqlite3.connect(export)) as conn:  # a standalone SQLite file
        assert conn.execute("SELECT v FROM counter").fetchall() == [(3,)]
    assert not pathlib.Path(str(export) + "-wal").exists()
    proc = objects(data, "export", "apples", str(export))
    assert proc.returncode == 2 and "--force" in proc.stderr
    ok(data, "import", str(export), "--to", "apricots", "--server", srv.url)
    assert counter_value(srv, "apricots") == 3
    assert json.loads(ok(data, "show", "apricots", "--json"))["name"] == "apricots"
    proc = objects(data, "import", str(export), "--to", "apricots", "--server", srv.url)
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_admin_endpoint_needs_the_token(running):
    srv, data = running
    url = f"{srv.admin_url}/__duro/admin/sql"
    body = {"namespace": "counter-Counter", "id": str(KEY.id_from_name("pears")), "sql": "DELETE FROM counter"}
    assert httpx.post(url, json=body, timeout=30).status_code == 403
    wrong = httpx.post(url, json=body, headers={"authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 403
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    assert counter_value(srv, "pears") == 1


def test_bad_input_is_a_clear_error(running, tmp_path):
    srv, data = running
    proc = objects(data, "show", "nobody")
    assert proc.returncode == 3 and "no object named 'nobody'" in proc.stderr
    forged = str(KEY.id_from_name("apples"))[:-1] + "0"
    proc = objects(data, "show", forged)
    assert proc.returncode == 2 and "not an ID" in proc.stderr
    proc = objects(data, "show", "apples", "--namespace", "NOPE")
    assert proc.returncode == 2 and "unknown namespace 'NOPE'" in proc.stderr and "COUNTER" in proc.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    proc = objects(data, "import", str(junk), "--to", "junk")
    assert proc.returncode == 2 and "not a SQLite database" in proc.stderr
    proc = objects(data, "restore", "apples", "--at", "yesterday")
    assert proc.returncode == 2 and "cannot read the time" in proc.stderr
    proc = objects(data, "restore", "apples", "--bookmark", "not-a-bookmark", "--server", srv.url)
    assert proc.returncode == 2
    assert counter_value(srv, "apples") == 3


def test_every_subcommand_has_help_with_an_example():
    for sub in ("list", "show", "sql", "export", "import", "restore", "branch"):
        proc = subprocess.run([sys.executable, "-m", "duro", "objects", sub, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0
        assert f"duro objects {sub}" in proc.stdout.split("examples:")[1]


# ---- with the server stopped ------------------------------------------------------------------------


def test_offline_reads_create_no_files_and_writes_hold_the_lock(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(COUNTER, data, log_path=tmp_path / "s.log") as srv:
        httpx.post(f"{srv.url}/counters/figs?by=2", timeout=30)
    before = sorted(p.name for p in data.rglob("*"))
    ok(data, "list")
    ok(data, "show", "figs")
    ok(data, "sql", "figs", "SELECT * FROM counter")
    ok(data, "export", "figs", str(tmp_path / "figs.sqlite"))
    assert sorted(p.name for p in data.rglob("*")) == before
    ok(data, "sql", "figs", "UPDATE counter SET v = 40", "--write")
    ok(data, "import", str(tmp_path / "figs.sqlite"), "--to", "dates")
    proc = objects(data, "import", str(tmp_path / "figs.sqlite"), "--to", "dates")
    assert proc.returncode == 2 and "--force" in proc.stderr
    with ServerProcess(COUNTER, data, log_path=tmp_path / "s2.log") as srv:
        assert counter_value(srv, "figs") == 40
        assert counter_value(srv, "dates") == 2

    # A name stored in two namespaces is ambiguous until --namespace picks one.
    other = NamespaceKey("other-Thing").id_from_name("figs")
    (data / "do" / "other-Thing").mkdir()
    (tmp_path / "figs.sqlite").rename(data / "do" / "other-Thing" / f"{other}.sqlite")
    proc = objects(data, "show", "figs")
    assert proc.returncode == 2 and "several namespaces (COUNTER, other-Thing)" in proc.stderr
    assert json.loads(ok(data, "show", "figs", "--namespace", "other-Thing", "--json"))["id"] == str(other)

    # An alarm written from outside reaches the node's alarm index, so the scheduler will look.
    when = 4_102_444_800_000  # 2100-01-01
    ok(data, "sql", "dates", "INSERT OR REPLACE INTO _cf_METADATA (key, value) VALUES (1, ?)", "--param",
       str(when), "--write")
    assert json.loads(ok(data, "show", "dates", "--json"))["alarm_ms"] == when
    with contextlib.closing(sqlite3.connect(data / "alarms.sqlite")) as conn:
        rows = conn.execute("SELECT object_id, due_ms FROM alarms").fetchall()
    assert (str(KEY.id_from_name("dates")), when) in rows


def _value(data, name):
    return json.loads(ok(data, "sql", name, "SELECT v FROM counter", "--json"))["rows"][0]["v"]


def test_restore_and_branch_offline_and_through_the_server(tmp_path):
    import time

    from duro.storage import history
    from duro.storage.journal import parse_bookmark

    data = tmp_path / "data"
    with ServerProcess(COUNTER, data, log_path=tmp_path / "s.log") as srv:
        httpx.post(f"{srv.url}/counters/figs?by=5", timeout=30)
    path = data / "do" / "counter-Counter" / f"{KEY.id_from_name('figs')}.sqlite"
    b0 = history.current_bookmark(path)  # what a server with history on has recorded by now
    b0_ms = parse_bookmark(b0)[1]
    deadline = time.monotonic() + 5
    while int(time.time() * 1000) <= b0_ms + 1 and time.monotonic() < deadline:
        time.sleep(0.001)  # the next record must carry a later time than b0
    ok(data, "sql", "figs", "UPDATE counter SET v = 100", "--write")
    b1 = json.loads(ok(data, "show", "figs", "--json"))["bookmarks"]["last"]
    assert b1 > b0

    # Bad input changes nothing.
    files = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    for args, text in ((("--bookmark", "garbage"), "Invalid bookmark"),
                       (("--bookmark", "00000000000000ff-018c2b3f4e5a-9f3c0a1b"), "Invalid bookmark"),
                       (("--at", "2020-01-01T00:00:00Z"), "outside the retention window")):
        proc = objects(data, "restore", "figs", *args)
        assert proc.returncode == 2 and text in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == files

    out = ok(data, "restore", "figs", "--at", str(b0_ms))
    assert "to undo" in out and b1 in out
    assert _value(data, "figs") == 5
    ok(data, "branch", "figs", "--bookmark", b1, "--to", "figs-copy")
    assert _value(data, "figs-copy") == 100 and _value(data, "figs") == 5
    assert json.loads(ok(data, "show", "figs-copy", "--json"))["name"] == "figs-copy"
    proc = objects(data, "branch", "figs", "--bookmark", b1, "--to", "figs-copy")
    assert proc.returncode == 2 and "already exists" in proc.stderr

    with ServerProcess(COUNTER, data, log_path=tmp_path / "s2.log") as srv:
        assert counter_value(srv, "figs") == 5
        proc = objects(data, "restore", "figs", "--bookmark", b1)
        assert proc.returncode == 4 and "Nothing was changed" in proc.stderr
        assert counter_value(srv, "figs") == 5
        ok(data, "restore", "figs", "--bookmark", b1, "--server", srv.url)
        assert counter_value(srv, "figs") == 100
        ok(data, "branch", "figs", "--at", str(int(time.time() * 1000)), "--to", "figs-late", "--server", srv.url)
        assert counter_value(srv, "figs-late") == 100
