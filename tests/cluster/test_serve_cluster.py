"""``duro serve --cluster``: real nats-servers (3, JetStream R=3, ``sync_interval: always``) and real
duro node processes on 127.0.0.1, driven over HTTP. Requests to any node reach the object's single
owner; a SIGKILLed owner loses no acknowledged write and its objects move (the take-over time is
printed); a SIGSTOPped owner's late writes are refused and its callers get a retryable error; a
SIGTERMed node hands its objects over at once.

Each answer of the test project's ``add`` carries the count the instance holds in memory beside
the stored one: two live owners of one object would make them differ, or would acknowledge the
same stored value twice. Load sizes: ``DURO_CLUSTER_E2E_SECONDS`` (writing time around a fault,
default 2)."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import httpx
import pytest

from duro.testing import ServerProcess, wait_for

from .nodes import Nodes

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "counter"
LOAD_S = float(os.environ.get("DURO_CLUSTER_E2E_SECONDS", "2"))

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def nodes(tmp_path, nats3):
    """nodes(n, **env) -> n duro nodes (a0, a1, ...) joined to the 3-server cluster; each stopped by
    PID at the end (SIGCONT first, in case a test stopped one)."""
    nodes = Nodes(PROJECT, tmp_path, f"t{int(time.monotonic() * 1000) % 10**8}-")  # unique across the module's tests

    def start(n: int, call_timeout: float = 10.0, admin: bool = False) -> list[ServerProcess]:
        return [nodes.start(nats3.urls, call_timeout=call_timeout, args=[] if admin else ["--no-admin"],
                            monitor=nats3.monitor_urls) for _ in range(n)]

    yield start
    nodes.stop_all()


def add(node: ServerProcess, name: str, timeout: float = 30) -> tuple[int, dict]:
    r = httpx.get(f"{node.url}/add/{name}", timeout=timeout)
    return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else {})


def get(node: ServerProcess, name: str) -> dict:
    r = httpx.get(f"{node.url}/get/{name}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def check_acks(acked: dict[str, list[int]], final: dict[str, int]) -> None:
    """Every acknowledged add is in the final count, and no stored value was acknowledged twice
    (two owners writing over each other would)."""
    for name, values in acked.items():
        assert len(values) == len(set(values)), f"{name}: a stored value was acknowledged twice: two owners"
        if values:
            assert max(values) <= final[name], f"{name}: acknowledged up to {max(values)}, stored {final[name]}: lost"


def test_any_node_reaches_the_single_owner_under_concurrent_load(nodes):
    cluster = nodes(3)
    names = [f"c{i}" for i in range(6)]
    per_client = 25
    acked: dict[str, list[int]] = defaultdict(list)
    ran_on: dict[str, set[str]] = defaultdict(set)
    lock = threading.Lock()

    def client(k: int) -> None:
        node = cluster[k % 3]
        with httpx.Client(base_url=node.url, timeout=30) as c:
            for j in range(per_client):
                name = names[(k + j) % len(names)]
                r = c.get(f"/add/{name}")
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["mem"] == body["stored"], body  # one live instance: memory and storage agree
                with lock:
                    acked[name].append(body["stored"])
                    ran_on[name].add(body["node"])

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(client, range(12)))
    elapsed = time.monotonic() - started
    final = {n: get(cluster[i % 3], n)["stored"] for i, n in enumerate(names)}
    total = sum(len(v) for v in acked.values())
    assert total == 12 * per_client
    for n in names:
        assert len(ran_on[n]) == 1, f"{n} ran on {ran_on[n]}"
        assert sorted(acked[n]) == list(range(1, final[n] + 1)), n  # every add counted once, none lost
    check_acks(acked, final)
    print(f"\n{total} adds through 3 nodes to {len(names)} objects in {elapsed:.2f} s "
          f"({total / elapsed:.0f}/s); owners: {sorted({next(iter(v)) for v in ran_on.values()})}")


def _load(targets: list[ServerProcess], names: list[str], stop: threading.Event, acked, errors, first_ok,
          lock: threading.Lock) -> None:
    """Write to ``names`` through ``targets`` until ``stop``: acknowledged values, and the errors
    a client saw (status, retryable) recorded."""
    def one(k: int) -> None:
        j = 0
        while not stop.is_set():
            now = list(targets)  # the live nodes (a rolling restart changes them)
            node = now[(k + j) % len(now)]
            name = names[(k + j) % len(names)]
            j += 1
            try:
                status, body = add(node, name, timeout=20)
            except httpx.HTTPError as e:
                with lock:
                    errors.append((name, type(e).__name__, True, str(e)))
                continue
            with lock:
                if status == 200:
                    assert body["mem"] == body["stored"], body
                    acked[name].append(body["stored"])
                    first_ok[name].append((time.monotonic(), body["node"]))
                else:
                    errors.append((name, status, body.get("retryable"), body.get("error")))
            if status != 200:
                time.sleep(0.05)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))


def _own_on(node: ServerProcess, names: list[str]) -> None:
    for n in names:  # the first request claims: these objects are owned by ``node``
        status, body = add(node, n)
        assert status == 200 and body["node"] == node.env["DURO_TEST_NODE"], body


def test_sigkill_of_the_owner_under_write_load_loses_no_acknowledged_write(nodes):
    owner, other, third = nodes(3)
    names = [f"k{i}" for i in range(4)]
    _own_on(owner, names)
    acked: dict[str, list[int]] = defaultdict(list)
    first_ok: dict[str, list[tuple[float, str]]] = defaultdict(list)
    errors: list = []
    lock, stop = threading.Lock(), threading.Event()
    writer = threading.Thread(target=_load, args=([other, third], names, stop, acked, errors, first_ok, lock))
    writer.start()
    try:
        time.sleep(LOAD_S)
        before = sum(len(v) for v in acked.values())
        killed_at = time.monotonic()
        owner.kill()
        dead = owner.env["DURO_TEST_NODE"]
        wait_for(lambda: all(any(t > killed_at and n != dead for t, n in first_ok[x]) for x in names),
                 timeout=60, what="every object served by another node")
        time.sleep(LOAD_S / 2)
    finally:
        stop.set()
        writer.join(60)
    takeover = {x: min(t for t, n in first_ok[x] if t > killed_at and n != dead) - killed_at for x in names}
    final = {n: get(other, n)["stored"] for n in names}
    check_acks(acked, final)
    assert before > 0
    bad = [e for e in errors if e[2] is not True]
    assert not bad, f"a client got an error it could not retry: {bad[:5]}"
    print(f"\nSIGKILL of the owner: {sum(len(v) for v in acked.values())} acknowledged adds, 0 lost; "
          f"take-over {min(takeover.values()):.2f}-{max(takeover.values()):.2f} s for {len(names)} objects "
          f"(lease ttl 3 s); {len(errors)} retryable errors meanwhile")


def test_a_commit_of_megabytes_is_acknowledged_and_survives_its_owner(nodes):
    owner, other = nodes(2)
    _own_on(owner, ["big"])
    r = httpx.get(f"{owner.url}/blob/big/3072", timeout=60)  # 3 MiB in one commit: over one NATS message
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == 6
    owner.kill()  # SIGKILL: the next owner has only the journal
    dead = owner.env["DURO_TEST_NODE"]

    def served_elsewhere():
        r = httpx.get(f"{other.url}/blob/big/0", timeout=30)
        return r.status_code == 200 and r.json()["node"] != dead and r.json()

    got = wait_for(served_elsewhere, timeout=60, what="the object served by the other node")
    assert got["rows"] == 6 and got["bytes"] == 6 * 524288


def test_a_stopped_owner_is_fenced_and_its_late_writes_are_refused(nodes, tmp_path):
    owner, other = nodes(2, call_timeout=3.0)
    names = [f"s{i}" for i in range(3)]
    _own_on(owner, names)
    # Writes in the owner's hands when it stops: each waits 1.5 s inside the object, then writes.
    late: list[tuple[int, dict]] = []

    def slow(name: str) -> None:
        r = httpx.get(f"{owner.url}/slow_add/{name}/1500", timeout=60)
        late.append((r.status_code, r.json()))

    slow_threads = [threading.Thread(target=slow, args=(n,)) for n in names for _ in range(2)]
    for t in slow_threads:
        t.start()
    time.sleep(0.5)  # they are inside the object, sleeping
    stopped_at = time.monotonic()
    os.kill(owner.proc.pid, signal.SIGSTOP)
    stopped = owner.env["DURO_TEST_NODE"]
    acked: dict[str, list[int]] = defaultdict(list)
    try:
        # The objects move once the stopped node's registration expired (its lease ttl, 3 s); a
        # request the stopped node holds times out first (the node's call timeout, 3 s here).
        def moved() -> bool:
            for n in names:
                status, body = add(other, n, timeout=20)
                if status != 200:
                    assert body.get("retryable") is True, body
                    return False
                acked[n].append(body["stored"])
                if body["node"] != other.env["DURO_TEST_NODE"]:
                    return False
            return True
        wait_for(moved, timeout=60, what="the objects moved to the other node")
        moved_s = time.monotonic() - stopped_at
    finally:
        os.kill(owner.proc.pid, signal.SIGCONT)
    for t in slow_threads:
        t.join(60)
    final = {n: get(other, n)["stored"] for n in names}
    check_acks(acked, final)
    assert len(late) == len(slow_threads)
    assert all(status == 503 and body.get("retryable") is True for status, body in late), late
    for n in names:  # the late writes did not land: every stored value is one the new owner acknowledged
        assert final[n] == max(acked[n]), (n, final[n], acked[n])
    log = (tmp_path / f"{stopped}.log").read_text()
    assert "self-fenced" in log and "dropped object" in log, log[-3000:]
    # After it resumed, the stopped node forwards to the new owner: one instance, one count.
    status, body = add(owner, names[0])
    assert status == 200 and body["node"] == other.env["DURO_TEST_NODE"], body
    assert body["stored"] == final[names[0]] + 1
    print(f"\nSIGSTOP of the owner: its objects moved after {moved_s:.2f} s; its {len(late)} late writes were "
          f"refused with a retryable error ({late[0][1]['error'][:90]}...); 0 acknowledged adds lost")


def test_a_graceful_stop_hands_objects_over_at_once(nodes, tmp_path):
    leaving, staying = nodes(2)
    names = [f"g{i}" for i in range(3)]
    _own_on(leaving, names)
    for n in names:
        add(leaving, n)
    sent = time.monotonic()
    leaving.proc.send_signal(signal.SIGTERM)
    leaving.proc.wait(20)
    stopped_s = time.monotonic() - sent
    served = time.monotonic()
    for n in names:
        one = time.monotonic()
        status, body = add(staying, n)
        assert status == 200 and body["stored"] == 3 and body["node"] == staying.env["DURO_TEST_NODE"], body
        # No lease to wait out: the other node takes the object on its first request.
        assert time.monotonic() - one < 1.0, f"taking {n} over took {time.monotonic() - one:.2f} s"
    served_s = time.monotonic() - served
    log = (tmp_path / f"{leaving.env['DURO_TEST_NODE']}.log").read_text()
    handed = [line for line in log.splitlines() if "handed over" in line]
    assert handed, log[-2000:]
    assert float(handed[-1].split(" in ")[-1].split(" s")[0]) < 1.0, handed[-1]
    took = (tmp_path / f"{staying.env['DURO_TEST_NODE']}.log").read_text()
    assert took.count("from a snapshot") == len(names), took[-2000:]  # the snapshots taken at hand-over
    print(f"\nSIGTERM: the node stopped in {stopped_s:.2f} s ({handed[-1].split(': ', 1)[-1]}); its "
          f"{len(names)} objects were served by the other node {served_s:.2f} s later, from their snapshots")


def test_the_alarm_of_a_dead_node_fires_on_a_survivor(nodes, tmp_path):
    owner, a, b = nodes(3)
    name = "alarm0"
    _own_on(owner, [name])
    r = httpx.get(f"{owner.url}/alarm_in/{name}/3000", timeout=30)
    assert r.status_code == 200 and r.json()["node"] == owner.env["DURO_TEST_NODE"], r.text
    killed_at = time.monotonic()
    owner.kill()
    dead = owner.env["DURO_TEST_NODE"]
    # No request wakes the object: a survivor adopts it once the dead node's registration expired
    # (its lease says which object it is) and fires its alarm.
    def adopted() -> bool:
        return any("took object" in (tmp_path / f"{n.env['DURO_TEST_NODE']}.log").read_text() for n in (a, b))
    wait_for(adopted, timeout=30, interval=0.1, what="a survivor adopted the dead node's object")
    adopted_s = time.monotonic() - killed_at
    found = wait_for(lambda: (got := get(a, name))["fired_by"] and got, timeout=30, interval=0.2,
                     what="the alarm fired")
    fired_s = time.monotonic() - killed_at
    assert found["fired_by"] in (a.env["DURO_TEST_NODE"], b.env["DURO_TEST_NODE"]), found
    assert found["fired_by"] != dead and found["stored"] == 1, found
    print(f"\nthe alarm of an object whose node was SIGKILLed fired on {found['fired_by']}: adopted {adopted_s:.1f} s "
          f"after the kill with no request to it, alarm seen fired at {fired_s:.1f} s (it was due at 3 s)")


def test_the_lease_ttl_is_the_operator_s_choice(tmp_path, nats3):
    p = ServerProcess(PROJECT, tmp_path / "data-ttl", log_path=tmp_path / "ttl.log",
                      env={"DURO_TEST_NODE": "ttl-node"},
                      args=["--cluster", ",".join(nats3.urls), "--node", "ttl-node", "--lease-ttl", "7", "--no-admin"])
    try:
        p.start()
        assert add(p, "ttl")[0] == 200
        assert "lease ttl 7 s" in p.log(), p.log()
    finally:
        p.stop(timeout=20)


def test_facets_are_refused_in_cluster_mode_saying_why(nodes):
    (node,) = nodes(1)
    assert add(node, "fac")[0] == 200
    r = httpx.get(f"{node.url}/facet/fac", timeout=30)
    assert r.status_code == 200 and "facets are not supported in cluster mode" in (r.json()["refused"] or ""), r.text
    assert add(node, "fac")[1]["stored"] == 2  # the object is unchanged and keeps working


def _metrics(node: ServerProcess) -> dict[str, float]:
    r = httpx.get(f"{node.admin_url}/__duro/admin/metrics", headers=node.admin_headers(), timeout=30)
    assert r.status_code == 200, r.text
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in r.text.splitlines() if line and line[0] != "#")}


def test_each_node_reports_its_cluster_metrics(nodes):
    a, b = nodes(2, admin=True)
    _own_on(a, ["m1"])
    assert add(b, "m1")[1]["node"] == a.env["DURO_TEST_NODE"]  # forwarded by b, served by a
    ma, mb = _metrics(a), _metrics(b)
    assert ma[f'duro_cluster_node_info{{node="{a.env["DURO_TEST_NODE"]}"}}'] == 1
    assert ma["duro_cluster_writable"] == 1 and ma["duro_cluster_objects_owned"] >= 1
    assert ma['duro_cluster_calls_total{direction="served"}'] >= 1
    assert mb['duro_cluster_calls_total{direction="forwarded"}'] >= 1
    assert ma["duro_cluster_journal_appends_total"] >= 3  # the EPOCH record and two commits
    assert ma["duro_cluster_journal_append_seconds_count"] == ma["duro_cluster_journal_appends_total"]
    assert ma['duro_cluster_object_moves_total{direction="in"}'] >= 1
    assert ma["duro_cluster_registration_renewals_total"] >= 0


def test_a_rolling_restart_under_load_loses_nothing_and_every_error_is_retryable(nodes):
    live = list(nodes(3, call_timeout=3.0))
    names = [f"r{i}" for i in range(4)]
    for i, n in enumerate(names):
        _own_on(live[i % 3], [n])
    acked: dict[str, list[int]] = defaultdict(list)
    first_ok: dict[str, list[tuple[float, str]]] = defaultdict(list)
    errors: list = []
    lock, stop = threading.Lock(), threading.Event()
    writer = threading.Thread(target=_load, args=(live, names, stop, acked, errors, first_ok, lock))
    writer.start()
    restarted = []
    try:
        time.sleep(LOAD_S / 2)
        for _ in range(3):  # each node in turn: a new one joins, the old one stops gracefully
            old = live[0]
            (new,) = nodes(1, call_timeout=3.0)
            live.append(new)
            live.remove(old)
            sent = time.monotonic()
            old.stop(timeout=20)
            restarted.append(time.monotonic() - sent)
            time.sleep(LOAD_S / 2)
    finally:
        stop.set()
        writer.join(60)
    final = {n: get(live[0], n)["stored"] for n in names}
    check_acks(acked, final)
    bad = [e for e in errors if e[2] is not True]
    assert not bad, f"a client got an error it could not retry: {bad[:5]}"
    after = {n: len(acked[n]) for n in names}
    assert all(after.values()), after
    print(f"\nrolling restart of 3 nodes under load: {sum(after.values())} acknowledged adds, 0 lost; "
          f"{len(errors)} retryable errors ({sorted({str(e[1]) for e in errors})}); each stop took "
          f"{min(restarted):.2f}-{max(restarted):.2f} s")


def test_bad_cluster_settings_are_refused_at_start_saying_why(nodes, tmp_path, nats3):
    from duro.testing import free_port

    (first,) = nodes(1)
    name = first.env["DURO_TEST_NODE"]

    def refused(*args: str) -> str:
        tag = free_port()
        p = ServerProcess(PROJECT, tmp_path / f"bad{tag}", args=[*args, "--no-admin"],
                          log_path=tmp_path / f"bad{tag}.log")
        try:
            with pytest.raises(RuntimeError) as info:
                p.start(timeout=30)
        finally:
            p.stop(timeout=20)  # (one that started after all is stopped, by PID)
        return str(info.value)

    taken = refused("--cluster", ",".join(nats3.urls), "--node", name)
    assert f"a node named {name!r} is already registered" in taken, taken
    dead = refused("--cluster", f"nats://127.0.0.1:{free_port()}", "--node", "lonely")
    assert "cannot connect to NATS" in dead and "is nats-server running there?" in dead, dead
    assert "not a NATS server address" in refused("--cluster", "http://127.0.0.1:4222", "--node", "x")
    assert "--node NAME" in refused("--cluster", ",".join(nats3.urls))
    assert "durability must be fsync" in refused("--cluster", ",".join(nats3.urls), "--node", "osnode",
                                                 "--durability", "os")
    assert "not a monitoring endpoint" in refused("--cluster", ",".join(nats3.urls), "--node", "m",
                                                  "--nats-monitor", "127.0.0.1:8222")
    gone = refused("--cluster", ",".join(nats3.urls), "--node", "m", "--nats-monitor", f"http://127.0.0.1:{free_port()}")
    assert "cannot read the NATS monitoring endpoint" in gone, gone
    assert add(first, "still")[0] == 200  # the running node was not disturbed
    assert "fsync before they acknowledge (sync_interval: always)" in first.log()  # checked at its start

    # Servers that acknowledge before they fsync, or run without JetStream: refused, saying what to set.
    from duro.cluster.testing import NatsServers, nats_server_binary
    with NatsServers(1, sync_always=False) as lazy:
        why = refused("--cluster", lazy.urls[0], "--node", "lazy", "--nats-monitor", lazy.monitor_urls[0])
        assert "not before it acknowledges them" in why and "sync_interval: always" in why, why
    port = free_port()
    plain = subprocess.Popen([str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _listening(port), timeout=20, interval=0.1, what="a nats-server without JetStream")
        why = refused("--cluster", f"nats://127.0.0.1:{port}", "--node", "nojs")
        assert "does not offer JetStream" in why, why
    finally:
        plain.kill()
        plain.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_local_cluster_command_starts_everything_and_stops_it_by_pid(tmp_path):
    out = tmp_path / "local.out"
    with open(out, "wb") as f:  # --port 0: free ports (port + 1 may be a nats-server's, started first)
        proc = subprocess.Popen([sys.executable, "-m", "duro.cluster.local", str(PROJECT), "--nodes", "2",
                                 "--port", "0"], stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready." in out.read_text() or proc.poll() is not None, timeout=60, what="the local cluster")
        text = out.read_text()
        assert "ready." in text, text
        pids = [int(line.split(" pid ")[1].split()[0]) for line in text.splitlines() if line.startswith("node-")]
        assert len(pids) == 2, text
        second = next(line.split()[1] for line in text.splitlines() if line.startswith("node-1:"))
        r = httpx.get(f"{second}/add/local", timeout=30)
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, out.read_text()
    for pid in pids:  # every node it started is gone
        assert not pathlib.Path(f"/proc/{pid}").exists() or \
            pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
