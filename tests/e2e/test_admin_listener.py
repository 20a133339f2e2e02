"""The admin listener against the real server (``duro serve`` subprocesses on 127.0.0.1): the
admin API, /metrics and the dashboard answer only there and only with the token; the serving port
answers none of them; ``--no-admin`` turns it all off; a fixed port in use is a clear error at
start; ``import`` reads only files inside the folder the operator allowed."""

import contextlib
import json
import pathlib
import sqlite3
import subprocess
import sys

import httpx

from duro.ids import NamespaceKey
from duro.testing import ServerProcess, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
COUNTER = ROOT / "examples" / "counter"
KEY = NamespaceKey("counter-Counter")


def duro(*args):
    return subprocess.run([sys.executable, "-m", "duro", *args], capture_output=True, text=True, timeout=60)


def test_admin_is_on_its_own_listener_and_never_on_the_serving_port(serve):
    srv = serve(COUNTER)
    auth = srv.admin_headers()
    assert srv.admin_url.startswith("http://127.0.0.1:") and srv.admin_url != srv.url
    # The serving port: the project answers these paths like any other, even with the token.
    ping = httpx.post(srv.url + "/__duro/admin/ping", headers=auth, timeout=30)
    assert ping.status_code == 404 and "data_dir" not in ping.text
    for path in ("/__duro/admin/metrics", "/metrics", "/__duro/admin/tail"):
        r = httpx.get(srv.url + path, headers=auth, timeout=30)
        assert r.status_code == 404 and "duro_" not in r.text, path
    # The admin listener: the token or 403.
    assert httpx.post(srv.admin_url + "/__duro/admin/ping", timeout=30).status_code == 403
    assert httpx.get(srv.admin_url + "/metrics", headers={"authorization": "Bearer x"}, timeout=30).status_code == 403
    r = httpx.post(srv.admin_url + "/__duro/admin/ping", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["data_dir"] == srv.data_dir
    metrics = httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "duro_objects_active" in metrics.text
    # The dashboard's page holds no data: it needs no token, and loads nothing from elsewhere.
    page = httpx.get(srv.admin_url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no absolute URL: no CDN
    assert httpx.get(srv.admin_url + "/nothing", timeout=30).status_code == 404
    # Both files are the owner's only, and go when the server stops.
    data = pathlib.Path(srv.data_dir)
    assert (data / "admin.url").stat().st_mode & 0o777 == 0o600
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    assert duro("dashboard", "--data", srv.data_dir).stdout.startswith(srv.admin_url + "/#token=")
    srv.stop()
    assert not (data / "admin.url").exists() and not (data / "admin.token").exists()


def test_no_admin_turns_it_all_off(serve):
    srv = serve(COUNTER, "--no-admin")
    data = pathlib.Path(srv.data_dir)
    assert httpx.post(srv.url + "/counters/apples", timeout=30).json()["value"] == 1
    assert not (data / "admin.token").exists() and not (data / "admin.url").exists()
    assert httpx.post(srv.url + "/__duro/admin/ping", timeout=30).status_code == 404
    tail = duro("tail", "--data", srv.data_dir)
    assert tail.returncode == 1 and "--no-admin" in tail.stderr
    dash = duro("dashboard", "--data", srv.data_dir)
    assert dash.returncode == 1 and "no admin token" in dash.stderr
    write = duro("objects", "sql", "apples", "UPDATE counter SET v = 9", "--write", "--server", srv.url,
                 "--data", srv.data_dir, "--project", str(COUNTER))
    assert write.returncode == 1 and "Nothing was changed" in write.stderr
    assert httpx.get(srv.url + "/counters/apples", timeout=30).json()["value"] == 1


def test_a_fixed_admin_port_and_one_already_taken(serve, tmp_path):
    port = free_port()
    srv = serve(COUNTER, "--admin-port", str(port))
    assert srv.admin_url == f"http://127.0.0.1:{port}"
    other = ServerProcess(COUNTER, tmp_path / "other", args=["--admin-port", str(port)],
                          log_path=tmp_path / "other.log")
    try:
        other.start()
    except RuntimeError as e:
        assert f"cannot listen for the admin listener on 127.0.0.1:{port}" in str(e)
    else:
        other.stop()
        raise AssertionError("a second server took an admin port already in use")
    # The admin listener never shares the serving port: one process, and workers.
    same = free_port()
    for workers in ("1", "2"):
        clash = duro("serve", str(COUNTER), "--port", str(same), "--admin-port", str(same), "--workers", workers,
                     "--data", str(tmp_path / f"clash{workers}"))
        assert clash.returncode == 2 and f"the admin listener cannot use the serving port {same}" in clash.stderr
    bad = duro("serve", str(COUNTER), "--admin-port", "70000", "--data", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "port: must be a port number 0..65535" in bad.stderr


def _sqlite(path: pathlib.Path) -> pathlib.Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE counter (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        conn.execute("INSERT INTO counter VALUES ('n', 41)")
    conn.close()
    return path


def _import(srv, file, name):
    body = {"namespace": KEY.unique_key, "id": str(KEY.id_from_name(name)), "name": name, "file": str(file)}
    return httpx.post(srv.admin_url + "/__duro/admin/import", json=body, headers=srv.admin_headers(), timeout=30)


def test_import_reads_only_the_allowed_folder(serve, tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    secret = _sqlite(outside / "secret.sqlite")
    (allowed / "link.sqlite").symlink_to(secret)

    closed = serve(COUNTER)
    r = _import(closed, secret, "x")
    assert r.status_code == 403 and "imports no files" in r.json()["error"]

    srv = serve(COUNTER, "--admin-import-dir", str(allowed))
    for file in (secret, allowed / "link.sqlite", allowed / ".." / "outside" / "secret.sqlite"):
        r = _import(srv, file, "x")
        assert r.status_code == 403 and "outside the folder this server imports from" in r.json()["error"], file
    assert httpx.get(srv.url + "/counters/x", timeout=30).json()["value"] == 0  # nothing imported
    good = _sqlite(allowed / "good.sqlite")
    assert _import(srv, good, "imported").status_code == 200
    assert httpx.get(srv.url + "/counters/imported", timeout=30).json()["value"] == 41


def test_the_reading_commands_ask_the_server_with_server(serve, tmp_path):
    srv = serve(COUNTER)
    for _ in range(3):
        assert httpx.post(srv.url + "/counters/read", timeout=30).status_code == 200
    where = ["--project", str(COUNTER), "--data", srv.data_dir, "--server", srv.admin_url]
    listed = duro("objects", "list", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == "read"]
    assert row["id"] == KEY.id_from_name("read").to_string() and row["size"] > 0 and "owner" not in row
    shown = duro("objects", "show", "read", *where)
    assert shown.returncode == 0 and "counter" in shown.stdout and srv.admin_url in shown.stdout, shown.stderr
    got = duro("objects", "sql", "read", "SELECT v FROM counter WHERE k = ?", "--param", "n", "--json", *where)
    assert got.returncode == 0 and '"v": 3' in got.stdout, got.stdout + got.stderr
    out = tmp_path / "read.sqlite"
    exported = duro("objects", "export", "read", str(out), *where)
    assert exported.returncode == 0, exported.stderr
    with contextlib.closing(sqlite3.connect(out)) as db:
        assert db.execute("SELECT v FROM counter").fetchall() == [(3,)]
    assert not list((pathlib.Path(srv.data_dir) / "admin-exports").iterdir())
    missing = duro("objects", "show", "nobody", *where)
    assert missing.returncode == 3, missing.stdout + missing.stderr
