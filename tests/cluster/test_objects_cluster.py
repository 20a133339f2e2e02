"""``duro objects --server`` (and the admin API under it) against a cluster: real nats-servers (3,
R=3) and three real duro node processes, shared by the module's tests. Asked at any node, the
listing shows every object of the cluster with its owner; ``show``, ``sql`` and ``export`` of an
object another node owns are answered by that node with its current data; an object whose owner
was SIGKILLed is still listed, and ``show`` of it works (the node asked takes it over). The
SIGKILL test runs last: it kills the module's third node."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from duro.testing import ServerProcess, wait_for

from .nodes import Nodes

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "counter"
NS = "counter-Counter"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(nats3, tmp_path_factory):
    nodes = Nodes(PROJECT, tmp_path_factory.mktemp("objects"), "ob")
    try:
        yield [nodes.start(nats3.urls, call_timeout=8.0) for _ in range(3)]
    finally:
        nodes.stop_all()


def name_of(node: ServerProcess) -> str:
    return node.env["DURO_TEST_NODE"]


def add(node: ServerProcess, name: str) -> dict:
    r = httpx.get(f"{node.url}/add/{name}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def admin(node: ServerProcess, op: str, **body) -> httpx.Response:
    return httpx.post(f"{node.admin_url}/__duro/admin/{op}", headers=node.admin_headers(), json=body, timeout=30)


def ok(node: ServerProcess, op: str, **body) -> dict:
    r = admin(node, op, **body)
    assert r.status_code == 200, (op, r.status_code, r.text)
    return r.json()


def id_of(node: ServerProcess, name: str) -> str:
    return ok(node, "id", namespace=NS, name=name)["id"]


def cli(node: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "duro", "objects", *args, "--project", str(PROJECT),
                           "--data", str(node.data_dir), "--server", node.admin_url],
                          capture_output=True, text=True, timeout=60)


def test_listing_at_any_node_shows_every_object_with_its_owner(cluster):
    made = {}
    for i, node in enumerate(cluster):
        for j in range(2):
            name = f"list-{i}-{j}"
            assert add(node, name)["node"] == name_of(node)  # the first request claims: owned there
            made[id_of(node, name)] = (name, name_of(node))
    for node in cluster:
        got = ok(node, "objects", limit=500)
        rows = {r["id"]: r for r in got["objects"]}
        for hex_id, (name, owner) in made.items():
            assert hex_id in rows, (name_of(node), name, sorted(rows))
            row = rows[hex_id]
            assert (row["name"], row["owner"], row["source"]) == (name, owner, "owner"), row
            assert row["size"] > 0 and row["last_write_ms"] > 0
        assert got["cluster"] and got["unreachable"] == [] and got["total"] >= len(made)
        assert set(got["nodes"]) == {name_of(n) for n in cluster}
        # No node's data directory holds the others' objects: the rows came from their owners.
        files = {p.name[:-7] for p in (pathlib.Path(node.data_dir) / "do" / NS).glob("*.sqlite")}
        assert {h for h, (_, owner) in made.items() if owner != name_of(node)}.isdisjoint(files)
        # The search and the namespace count see the cluster too.
        found = ok(node, "objects", q="list-1-", limit=500)["objects"]
        assert sorted(r["name"] for r in found if r["name"] and r["name"].startswith("list-")) == \
            ["list-1-0", "list-1-1"]
        stored = {n["namespace"]: n["stored"] for n in ok(node, "namespaces")["namespaces"]}
        assert stored[NS] >= len(made)
    assert "connections" in ok(cluster[0], "sockets")  # the dashboard's other read answers too
    small = ok(cluster[0], "objects", limit=2)
    assert len(small["objects"]) == 2 and small["truncated"] and small["total"] >= len(made)


def test_show_and_sql_of_another_node_s_object_answer_its_current_data(cluster):
    a, b, _ = cluster
    for _ in range(3):
        add(b, "fresh")
    stored = add(b, "fresh")["stored"]  # written on b right before the reads at a
    hex_id = id_of(a, "fresh")
    shown = ok(a, "object", namespace=NS, id=hex_id)
    assert shown["name"] == "fresh" and {"name": "t", "rows": 1} in shown["tables"], shown
    rows = ok(a, "query", namespace=NS, id=hex_id, sql="SELECT v FROM t WHERE k = ?", bindings=["n"])["rows"]
    assert rows == [[stored]]
    assert ok(a, "query", namespace=NS, id=hex_id, sql="SELECT v FROM t")["rows"] == [[stored]]
    # Still b's (nothing moved), and a never wrote a copy of its own.
    assert add(b, "fresh")["node"] == name_of(b)
    assert not (pathlib.Path(a.data_dir) / "do" / NS / f"{hex_id}.sqlite").exists()
    # A write asked at a runs on the owner b too (and goes into the object's log there,
    # test_pitr_cluster.py); an object nobody stored is not made by a read.
    r = admin(a, "sql", namespace=NS, id=hex_id, sql="UPDATE t SET v = v + 10 WHERE k = 'n'")
    assert r.status_code == 200 and r.json()["changes"] == 1, r.text
    after = add(b, "fresh")
    assert after["stored"] == stored + 12 and after["node"] == name_of(b), after
    assert not (pathlib.Path(a.data_dir) / "do" / NS / f"{hex_id}.sqlite").exists()
    ghost = id_of(a, "never-stored")
    r = admin(a, "object", namespace=NS, id=ghost)
    assert r.status_code == 404 and "no stored data" in r.json()["error"], r.text
    assert ghost not in {x["id"] for x in ok(a, "objects", limit=500)["objects"]}


def test_the_cli_against_one_node_lists_shows_queries_and_exports_the_cluster(cluster, tmp_path):
    a, b, c = cluster
    add(c, "cli-c")
    stored = add(c, "cli-c")["stored"]
    add(b, "cli-b")
    p = cli(a, "list", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["cli-c"]["owner"] == name_of(c) and rows["cli-b"]["owner"] == name_of(b), rows
    p = cli(a, "list")
    assert p.returncode == 0 and "OWNER" in p.stdout and name_of(c) in p.stdout, p.stdout + p.stderr
    p = cli(a, "show", "cli-c", "--json")
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["name"] == "cli-c" and shown["owner"] == name_of(c), shown
    assert {"name": "t", "rows": 1} in shown["tables"]
    p = cli(a, "show", "cli-c")
    assert p.returncode == 0 and "owner" in p.stdout and name_of(c) in p.stdout, p.stdout + p.stderr
    p = cli(a, "sql", "cli-c", "SELECT v FROM t WHERE k = ?", "--param", "n", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows"] == [{"v": stored}]
    out = tmp_path / "cli-c.sqlite"
    p = cli(a, "export", "cli-c", str(out))
    assert p.returncode == 0, p.stderr
    with contextlib.closing(sqlite3.connect(out)) as db:
        assert db.execute("SELECT v FROM t WHERE k = 'n'").fetchall() == [(stored,)]
    assert not list((pathlib.Path(c.data_dir) / "admin-exports").glob("*"))  # read to its end: removed
    p = cli(a, "show", "no-such-object")
    assert p.returncode == 3, p.stdout + p.stderr
    p = cli(a, "sql", "cli-c", "DELETE FROM t", "--write")  # run by c, the owner, into its log
    assert p.returncode == 0 and "1 row changed" in p.stdout, p.stdout + p.stderr
    got = add(c, "cli-c")
    assert got["stored"] == 1 and got["node"] == name_of(c), got


def test_an_object_of_a_sigkilled_owner_is_listed_and_shown(cluster):
    a, _, c = cluster
    for _ in range(2):
        add(c, "orphan")
    stored = add(c, "orphan")["stored"]
    hex_id = id_of(a, "orphan")
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait(timeout=10)
    listed = {r["id"]: r for r in ok(a, "objects", limit=500)["objects"]}
    assert hex_id in listed, "the object of a dead node is still listed"
    started = time.monotonic()
    shown = ok(a, "object", namespace=NS, id=hex_id)  # a takes it over (once c's lease expired)
    took = time.monotonic() - started
    assert shown["name"] == "orphan", shown
    assert ok(a, "query", namespace=NS, id=hex_id, sql="SELECT v FROM t")["rows"] == [[stored]]
    row = wait_for(lambda: {r["id"]: r for r in ok(a, "objects", limit=500)["objects"]}.get(hex_id),
                   timeout=10, what="the object listed again")
    assert row["owner"] == name_of(a) and row["source"] == "owner", row
    print(f"\nshow of an object whose owner was SIGKILLed answered in {took:.1f} s (taken over by the node asked)")
