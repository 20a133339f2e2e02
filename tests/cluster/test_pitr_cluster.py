"""Point-in-time recovery in cluster mode, with real nats-servers and real duro node processes: a
bookmark taken on one node restores on another, and a restore (through the API or ``duro
objects``) is in the object's replicated log, so the object's next owner — after a graceful hand-
over (a snapshot that carries the history) or a SIGKILL (rebuilt from the log) — has it too.

The test project's objects keep a stored counter; each step checks it on whichever node serves
the object, and which node that was."""

from __future__ import annotations

import pathlib
import signal
import time

import httpx
import pytest

from duro.testing import ServerProcess, wait_for

from .nodes import Nodes

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "counter"
NAMESPACE = "counter-Counter"

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def nodes(tmp_path, nats3):
    nodes = Nodes(PROJECT, tmp_path, f"p{int(time.monotonic() * 1000) % 10**8}-")

    def start(n: int, admin: bool = False, env: dict[str, str] | None = None, args: tuple = ()) -> list[ServerProcess]:
        return [nodes.start(nats3.urls, call_timeout=10.0, args=[*args, *([] if admin else ["--no-admin"])], env=env)
                for _ in range(n)]

    yield start
    nodes.stop_all()


def call(node: ServerProcess, *parts: str) -> dict:
    r = httpx.get(f"{node.url}/{'/'.join(parts)}", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def add_until_served(node: ServerProcess, name: str) -> dict:
    """``add`` on ``node``, retried while the object moves (retryable 503s)."""
    def attempt() -> dict | None:
        r = httpx.get(f"{node.url}/add/{name}", timeout=60)
        if r.status_code == 503:
            return None
        assert r.status_code == 200, r.text
        return r.json()
    return wait_for(attempt, timeout=60, interval=0.2, what=f"{name} served by {node.name}")


def node_name(node: ServerProcess) -> str:
    return node.env["DURO_TEST_NODE"]


def admin(node: ServerProcess, op: str, **args) -> httpx.Response:
    return httpx.post(f"{node.admin_url}/__duro/admin/{op}", headers=node.admin_headers(), json=args, timeout=60)


def object_id(node: ServerProcess, name: str) -> str:
    r = admin(node, "id", namespace=NAMESPACE, name=name)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_a_bookmark_restores_on_another_node_and_the_restore_outlives_its_node(nodes):
    a, b = nodes(2)
    for want in (1, 2, 3):
        got = call(a, "add", "pitr")
        assert got["stored"] == want and got["node"] == node_name(a), got  # a owns it
    bm3 = call(b, "bookmark", "pitr")  # asked through b: answered by the owner
    assert bm3["stored"] == 3 and bm3["node"] == node_name(a), bm3
    for _ in range(2):
        call(a, "add", "pitr")
    assert call(a, "note", "pitr")["notes"] == 1  # a table the bookmark's state does not have

    # A graceful stop: the next owner starts from the snapshot, which carries the history.
    a.proc.send_signal(signal.SIGTERM)
    a.proc.wait(timeout=30)
    restored = call(b, "restore", "pitr", bm3["bookmark"])
    assert restored["node"] == node_name(b) and restored["aborted"], restored
    got = add_until_served(b, "pitr")
    assert got == {**got, "stored": 4, "node": node_name(b)}, got  # back to 3, plus this add

    # A crash: the next owner rebuilds from the snapshot and the log, which holds the restore.
    (c,) = nodes(1)
    b.kill()
    got = add_until_served(c, "pitr")
    assert got["stored"] == 5 and got["node"] == node_name(c), got
    assert call(c, "get", "pitr")["notes"] == 0, "the restore is not in the log"
    # Bookmarks name the same states on every node: the one taken on a still restores, here.
    assert call(c, "restore", "pitr", bm3["bookmark"])["aborted"]
    got = add_until_served(c, "pitr")
    assert got["stored"] == 4 and got["node"] == node_name(c), got
    # And a bookmark for a time: the state then (before the first restore: 5 adds).
    later = call(c, "bookmark_at", "pitr", str(int(time.time() * 1000)))
    assert later["bookmark"] == call(c, "bookmark", "pitr")["bookmark"], later


def test_duro_objects_restore_branch_and_write_go_through_the_log(nodes):
    a, b = nodes(2, admin=True)
    for _ in range(2):
        assert call(a, "add", "adm")["node"] == node_name(a)
    bm2 = call(a, "bookmark", "adm")["bookmark"]
    for _ in range(3):
        call(a, "add", "adm")
    call(a, "note", "adm")
    hex_id = object_id(b, "adm")

    # Asked at b, which does not own the object: the restore runs on its owner a.
    r = admin(b, "restore", namespace=NAMESPACE, id=hex_id, name="adm", bookmark=bm2)
    assert r.status_code == 200, r.text
    assert r.json()["bookmark"] == bm2 and r.json()["undo"], r.json()
    got = call(b, "add", "adm")
    assert got["stored"] == 3 and got["node"] == node_name(a), got

    # A branch of it as it was at bm2, and a write made with SQL.
    branch_id = object_id(b, "adm-2")
    r = admin(b, "branch", namespace=NAMESPACE, id=hex_id, name="adm", bookmark=bm2, to_id=branch_id,
              to_name="adm-2")
    assert r.status_code == 200, r.text
    r = admin(b, "sql", namespace=NAMESPACE, id=hex_id, name="adm", sql="UPDATE t SET v = v + 100 WHERE k = 'n'")
    assert r.status_code == 200 and r.json()["changes"] == 1, r.text

    # The owner dies without a snapshot: b rebuilds both objects from their logs.
    a.kill()
    got = add_until_served(b, "adm")
    assert got["stored"] == 104 and got["node"] == node_name(b), got
    assert call(b, "get", "adm")["notes"] == 0, "the restore is not in the log"
    got = add_until_served(b, "adm-2")
    assert got["stored"] == 3 and got["node"] == node_name(b), got
    assert call(b, "get", "adm-2")["notes"] == 0


def test_a_restore_to_an_unknown_bookmark_is_refused_and_changes_nothing(nodes):
    (a,) = nodes(1, admin=True)
    call(a, "add", "gone")
    hex_id = object_id(a, "gone")
    r = admin(a, "restore", namespace=NAMESPACE, id=hex_id, name="gone", bookmark="not-a-bookmark")
    assert r.status_code == 400 and "bookmark" in r.json()["error"].lower(), r.text
    assert call(a, "add", "gone")["stored"] == 2


def test_owned_objects_are_snapshot_on_a_cadence_and_a_take_over_starts_there(nodes, tmp_path):
    """The journal stream keeps 31 days: an object that lives longer on one node must be snapshot
    meanwhile, or its next owner could not rebuild it. Here: 4 s after the last snapshot (its
    take-over) an object that changed is snapshot, checked twice a second. One object is written
    all along (copied through its live connection); one is written, then evicted after 1 s idle
    (snapshot from its files)."""
    env = {"DURO_CLUSTER_SNAPSHOT_AGE": "4", "DURO_CLUSTER_SNAPSHOT_EVERY": "0.5"}
    a, b = nodes(2, env=env, args=("--idle-timeout", "1"))
    log_a = tmp_path / f"{node_name(a)}.log"
    for _ in range(6):
        call(a, "add", "cold")
    bm = call(a, "bookmark", "cold")["bookmark"]
    call(a, "add", "cold")
    wait_for(lambda: "its files" in log_a.read_text(), timeout=30, interval=0.2,
             what="a snapshot of an evicted object")

    def written() -> bool:  # writes until a snapshot is taken while the object is live
        call(a, "add", "hot")
        return "copied from its connection" in log_a.read_text()
    wait_for(written, timeout=30, interval=0.05, what="a snapshot of a live object")
    hot = call(a, "add", "hot")["stored"]
    a.kill()  # no hand-over: the next owner starts from the cadence's snapshots
    for name, want in (("cold", 8), ("hot", hot + 1)):
        got = add_until_served(b, name)
        assert got["stored"] == want and got["node"] == node_name(b), (name, got)
    took = [line for line in (tmp_path / f"{node_name(b)}.log").read_text().splitlines() if "took object" in line]
    assert len(took) == 2 and all("from a snapshot" in line for line in took), took
    # The snapshot carried the history: a bookmark taken on a restores on b.
    assert call(b, "restore", "cold", bm)["aborted"]
    assert add_until_served(b, "cold")["stored"] == 7
