"""``duro serve --workers N`` on a real socket with real worker processes and real signals: one
activation per object across workers under concurrent load, forwarded fetch and RPC, a killed
worker restarted with nothing acknowledged lost, a worker stuck in C code killed by the
supervisor while the other serves, the memory limit, alarms after a restart, the supervisor's own
death, and bad input at start."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from duro.runtime.router import owner_of
from duro.testing import free_port, wait_for

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "workers"
NAMES = [f"n{i}" for i in range(24)]


def _hex(name: str, cls: str = "Tally") -> str:
    """The object's ID, as the server derives it (for which worker owns it)."""
    from duro.config import load_project
    from duro.ids import NamespaceKey
    return str(NamespaceKey(load_project(PROJECT).unique_key(cls)).id_from_name(name))


def _name_on(worker: int, count: int = 2, prefix: str = "x", cls: str = "Tally") -> str:
    return next(f"{prefix}{i}" for i in range(1000) if owner_of(_hex(f"{prefix}{i}", cls), count) == worker)


def _wait_serving(srv, count: int = 2) -> None:
    """Until every worker serves (the supervisor logs it), not only exists."""
    wait_for(lambda: len(srv.workers()) == count and srv.log().count(" serves (") >= count, timeout=60,
             what=f"{count} workers serving")


def _alive(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _clients_on_every_worker(srv, per_worker: int) -> list[httpx.Client]:
    """Keep-alive connections, ``per_worker`` accepted by each worker (``/entry`` answers with the
    pid of the worker that accepted the connection): so that every worker runs the entrypoint."""
    by_worker: dict[int, list[httpx.Client]] = {pid: [] for pid in srv.workers().values()}
    spare = []
    for _ in range(400):
        if all(len(v) >= per_worker for v in by_worker.values()):
            break
        c = httpx.Client(base_url=srv.url, timeout=30)
        pid = int(c.get("/entry/x").text)
        (by_worker[pid] if len(by_worker[pid]) < per_worker else spare).append(c)
    for c in spare:
        c.close()
    assert all(len(v) >= per_worker for v in by_worker.values()), {k: len(v) for k, v in by_worker.items()}
    return [c for v in by_worker.values() for c in v]


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _post(client, url):
    r = client.get(url)
    return r.status_code, r.text


def test_one_activation_per_object_across_workers(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    counts = {n: 0 for n in NAMES}
    plan = NAMES * 30 + ["n0"] * 480  # n0 is hot
    random.Random(1).shuffle(plan)
    for n in plan:
        counts[n] += 1
    pids: dict[str, set[int]] = {n: set() for n in NAMES}
    lock = threading.Lock()
    clients = _clients_on_every_worker(srv, 12)

    def run(job):
        client, chunk = job
        for n in chunk:
            r = client.get(f"/add/{n}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["mem"] == body["stored"], body  # one instance: memory and storage agree
            with lock:
                pids[n].add(body["pid"])

    try:
        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(run, [(c, plan[i::len(clients)]) for i, c in enumerate(clients)]))
    finally:
        for c in clients:
            c.close()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for n in NAMES:
            assert c.get(f"/get/{n}").json()["stored"] == counts[n]
    assert all(len(p) == 1 for p in pids.values()), pids  # each object ran in one process only
    owners = {next(iter(p)) for p in pids.values()}
    assert owners == set(srv.workers().values())  # and the objects are spread over both workers


def test_fetch_and_rpc_errors_cross_workers(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for worker in (0, 1):
            name = _name_on(worker)
            r = c.post(f"/fetch/{name}", content=b"hello")
            assert r.status_code == 201 and r.headers["x-object"] == "tally", r.text
            assert r.text.startswith("POST hello pid=")
            assert int(r.text.split("pid=")[1]) == srv.workers()[worker]
            # An unknown method fails in the owner and reaches the caller with its type and text.
            r = c.get(f"/nothing_here/{name}")
            assert r.status_code == 500 and r.text.startswith("TypeError"), r.text


def test_a_stub_that_saw_a_reset_stays_broken_across_workers(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    clients = _clients_on_every_worker(srv, 1)  # from each worker: worker 0's calls are forwarded
    name = _name_on(1, prefix="z")
    try:
        for c in clients:
            r = c.get(f"/abort_twice/{name}")
            assert r.json() == ["ObjectResetError reset=True", "ObjectResetError reset=True", "ok"], r.text
    finally:
        for c in clients:
            c.close()


def _load(url, name, stop, acked, errors):
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            try:
                r = c.get(f"/add/{name}")
            except httpx.HTTPError as e:
                errors.append(repr(e))
                continue
            if r.status_code == 200:
                acked.append(r.json()["stored"])
            else:
                errors.append(r.text)


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    victim = _name_on(1, prefix="v")
    bystander = _name_on(0, prefix="b")
    stop = threading.Event()
    acked: list[int] = []
    other: list[int] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_load, args=(srv.url, victim, stop, acked, errors)) for _ in range(4)]
    threads.append(threading.Thread(target=_load, args=(srv.url, bystander, stop, other, errors)))
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) > 50, timeout=20, what="load on the victim")
        pid = srv.workers()[1]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        before = len(acked)
        wait_for(lambda: srv.workers().get(1) not in (None, pid), timeout=10, what="a new worker 1")
        wait_for(lambda: len(acked) > before + 20, timeout=10, what="the victim to answer again")
        back = time.monotonic() - killed
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    final = httpx.get(srv.url + f"/get/{victim}", timeout=10).json()["stored"]
    # Every acknowledged increment is stored: the highest acknowledged value is there, and no
    # value was acknowledged twice (a lost commit would be handed out again).
    assert final >= max(acked) and len(set(acked)) == len(acked), (final, max(acked))
    assert len(acked) <= final
    print(f"\nworker 1 SIGKILLed: its object answered again {back:.2f} s later; {len(acked)} acknowledged, "
          f"{final} stored, {len(errors)} errors during the restart")
    assert back < 10
    assert "worker 1 (pid %d) was killed by SIGKILL" % pid in srv.log()
    assert "serves again" in srv.log()
    # The other worker's object was served throughout.
    assert len(other) > 0


def test_a_worker_stuck_in_c_code_is_killed_while_the_other_serves(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    stuck, fine = _name_on(1, prefix="s"), _name_on(0, prefix="f")
    pid = srv.workers()[1]
    base = _cpu_ticks(pid)
    out: dict[str, object] = {}

    def call():
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                out["r"] = _post(c, f"/spin_in_c/{stuck}")
        except httpx.HTTPError as e:  # its connection was on the worker that was killed
            out["r"] = e

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: _cpu_ticks(pid) > base + 30, timeout=10, what="worker 1 to spin")
    # Meanwhile the other worker's objects answer: a stuck worker's loop accepts no connection,
    # so each new one goes to the healthy worker.
    times = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        r = httpx.get(f"{srv.url}/add/{fine}", timeout=30)
        times.append(time.monotonic() - t0)
        assert r.status_code == 200, r.text
    wait_for(lambda: srv.workers().get(1) not in (None, pid), timeout=30, what="the stuck worker to be replaced")
    t.join(60)
    assert "was stuck for" in srv.log(), srv.log()
    # Its objects are served again (a call racing the restart gets the retryable error: retry it).
    answers = []

    def served() -> bool:
        r = httpx.get(f"{srv.url}/add/{stuck}", timeout=30)
        answers.append((r.status_code, r.text[:200]))
        assert r.status_code == 200 or "retryable=True" in r.text, answers
        return r.status_code == 200
    wait_for(served, timeout=15, interval=0.2, what="the stuck worker's object to answer again")
    times.sort()
    print(f"\nthe healthy worker while the other was stuck: {len(times)} answers, p99 "
          f"{times[int(len(times) * 0.99)] * 1000:.0f} ms, slowest {times[-1] * 1000:.0f} ms; the caller of the "
          f"stuck object got: {out.get('r')!r:.120}")


def _cpu_ticks(pid: int) -> int:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_memory_limit_fails_the_event_and_restarts_only_that_worker(serve):
    srv = serve(PROJECT, "--workers", "2", "--memory-limit", "300M")
    _wait_serving(srv)
    hog, fine = _name_on(1, prefix="h"), _name_on(0, prefix="f")
    before = srv.workers()
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.get(f"/add/{fine}")
        assert r.status_code == 200
        r = c.get(f"/hog/{hog}")
    assert r.status_code == 500 and "exceeded its memory limit" in r.text, r.text
    wait_for(lambda: srv.workers().get(1) not in (None, before[1]), timeout=30, what="worker 1 to restart")
    assert srv.workers()[0] == before[0]  # the other worker was untouched
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get(f"/add/{fine}").json()["stored"] == 2
        assert c.get(f"/add/{hog}").status_code == 200
    assert "past its memory limit" in srv.log()


def test_an_alarm_fires_on_the_restarted_owner(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    name = _name_on(1, prefix="a")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        first = c.get(f"/alarm_in/{name}?1500").json()
        assert first == srv.workers()[1]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: srv.workers().get(1) not in (None, first), timeout=10, what="a new worker 1")
        fired = wait_for(lambda: c.get(f"/get/{name}").json()["fired"], timeout=20, what="the alarm")
    assert fired == srv.workers()[1] != first


def test_workers_die_with_the_supervisor_and_a_new_server_starts(serve, tmp_path):
    srv = serve(PROJECT, "--workers", "2", data=tmp_path / "data")
    _wait_serving(srv)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for n in NAMES[:6]:
            assert c.get(f"/add/{n}").status_code == 200
    pids = list(srv.workers().values())
    srv.kill()
    wait_for(lambda: not any(_alive(p) for p in pids),
             timeout=10, what="the workers to die with their supervisor")
    # The old listening socket goes with the last worker (else start() would find it still open).
    wait_for(lambda: not _listening(srv.port), timeout=10, what="the old socket to close")
    srv.start()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for n in NAMES[:6]:
            assert c.get(f"/add/{n}").json()["stored"] == 2


@pytest.mark.parametrize("args, text", [
    (["--workers", "0"], "--workers must be a number from 1 to 256"),
    (["--workers", "many"], "--workers must be a number from 1 to 256, or auto"),
    (["--memory-limit", "lots"], "cannot read 'lots' as a memory size"),
    (["--memory-limit", "1M"], "is below 32M"),
])
def test_bad_worker_options_are_refused_at_start(tmp_path, args, text):
    r = subprocess.run([sys.executable, "-m", "duro", "serve", str(PROJECT), "--port", str(free_port()),
                        "--data", str(tmp_path / "d"), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and text in r.stderr, r.stderr


def test_sigterm_stops_every_worker(serve):
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get(f"/add/{NAMES[0]}").status_code == 200
    pids = list(srv.workers().values())
    t0 = time.monotonic()
    code = srv.stop(timeout=30)
    assert code == 0 and time.monotonic() - t0 < 15
    assert all(not os.path.exists(f"/proc/{p}") for p in pids)
    assert "all workers stopped" in json.dumps(srv.log())


def _ws_held_by(srv, room: str, pid: int, tag: str):
    """A WebSocket to ``room`` whose connection the worker ``pid`` accepted (it says so in a header)."""
    from websockets.sync.client import connect
    url = srv.url.replace("http://", "ws://") + f"/ws/{room}?{tag}"
    for _ in range(200):
        with contextlib.ExitStack() as stack:
            ws = stack.enter_context(connect(url, open_timeout=10))
            if int(ws.response.headers["x-entry-pid"]) == pid:
                stack.pop_all()  # the caller closes it
                return ws
    raise AssertionError(f"no connection landed on worker pid {pid}")


def test_websockets_are_bridged_to_the_object_s_worker(serve):
    """A socket whose connection one worker holds and whose object another owns keeps the whole
    API: tags, attachments, auto-response, broadcast, hibernation, closes either way."""
    from websockets.exceptions import ConnectionClosed
    srv = serve(PROJECT, "--workers", "2", "--hibernation-timeout", "0.3")
    _wait_serving(srv)
    pids = srv.workers()
    room = _name_on(1, prefix="r", cls="Room")
    a = _ws_held_by(srv, room, pids[0], "ta")  # bridged: held by worker 0, the object on worker 1
    b = _ws_held_by(srv, room, pids[1], "tb")  # local to the object's worker
    try:
        assert a.recv(10) == f"welcome {pids[1]}" and b.recv(10) == f"welcome {pids[1]}"
        _drain_left(a)  # connections opened while looking for b, closed again: "left:1000" each
        a.send("tags")
        assert json.loads(a.recv(10)) == ["ta"]
        a.send("attach:kept")
        assert a.recv(10) == "ok"
        a.send("count")
        assert a.recv(10) == "2"
        a.send(b"\x00\x01")
        assert a.recv(10) == b"bin:\x00\x01"
        b.send("broadcast:hi")
        assert a.recv(10) == "all:hi" and b.recv(10) == "all:hi"
        a.send("constructed")
        built = int(a.recv(10))
        time.sleep(2.5)  # past the hibernation timeout and a sweep: the instance is dropped
        a.send("ping")  # answered on the object's worker without waking it
        assert a.recv(10) == "pong"
        a.send("attachment")  # wakes it: a new instance, the socket and its attachment kept
        assert json.loads(a.recv(10)) == {"value": "kept"}
        a.send("constructed")
        assert int(a.recv(10)) == built + 1
        b.close()  # the local client leaves: the bridged one is told
        assert a.recv(10) == "left:1000"
        a.send("close")  # the object closes the bridged socket
        with pytest.raises(ConnectionClosed) as closed:
            a.recv(10)
        assert closed.value.rcvd.code == 4000 and closed.value.rcvd.reason == "bye"
    finally:
        a.close()
        b.close()


def _drain_left(ws) -> None:
    while True:
        try:
            msg = ws.recv(0.5)
        except TimeoutError:
            return
        assert msg.startswith("left:"), msg


def test_bridged_websockets_when_a_worker_dies(serve):
    """The object's worker dies: its bridged connections close with 1012. The connection's worker
    dies: the object gets websocket_close 1006, as for a client that vanished."""
    from websockets.exceptions import ConnectionClosed
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    pids = srv.workers()
    on1, on0 = _name_on(1, prefix="k", cls="Room"), _name_on(0, prefix="k", cls="Room")
    c = _ws_held_by(srv, on1, pids[0], "c")  # held by 0, object on 1
    d = _ws_held_by(srv, on0, pids[1], "d")  # held by 1, object on 0
    assert c.recv(10).startswith("welcome") and d.recv(10).startswith("welcome")
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(ConnectionClosed) as closed:
        c.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    c.close()
    d.close()
    wait_for(lambda: srv.workers().get(1) not in (None, pids[1]), timeout=10, what="a new worker 1")
    e = _ws_held_by(srv, on0, srv.workers()[0], "e")
    try:
        assert e.recv(10).startswith("welcome")
        def closes():
            e.send("closes")
            msg = e.recv(10)
            while msg.startswith("left:"):  # a probe connection of _ws_held_by closing
                msg = e.recv(10)
            return [row for row in json.loads(msg) if row["code"] == 1006]
        rows = wait_for(closes, timeout=10, what="the object to learn its client vanished")
        assert rows == [{"code": 1006, "reason": "WebSocket disconnected without sending Close frame.", "clean": 0}]
    finally:
        e.close()


def test_the_dashboard_lists_the_sockets_of_every_worker(serve):
    """The admin ``sockets`` view (the dashboard's) answers from any worker with every worker's
    hibernatable sockets, each object listed by the worker that holds it."""
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    pids = srv.workers()
    on0, on1 = _name_on(0, prefix="s", cls="Room"), _name_on(1, prefix="s", cls="Room")
    a = _ws_held_by(srv, on0, pids[0], "a")
    b = _ws_held_by(srv, on1, pids[0], "b")  # held by worker 0, its object on worker 1
    try:
        assert a.recv(10).startswith("welcome") and b.recv(10).startswith("welcome")
        wait_for(lambda: (pathlib.Path(srv.data_dir) / "admin.url").exists(), timeout=30, what="the admin listener")
        r = httpx.post(srv.admin_url + "/__duro/admin/sockets", headers=srv.admin_headers(), json={}, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        by_name = {o["name"]: o for o in got["objects"]}
        assert {on0, on1} <= set(by_name), got  # worker 1's socket too, not only the answering worker's
        assert by_name[on0]["worker"] == 0 and by_name[on1]["worker"] == 1, got
        assert len(by_name[on0]["sockets"]) >= 1 and len(by_name[on1]["sockets"]) >= 1
        assert got["connections"]["websocket"] >= 2 and got["missing_workers"] == []
    finally:
        a.close()
        b.close()


def test_metrics_tail_and_admin_writes_cover_every_worker(serve):
    """/metrics on the admin listener has every worker's samples, labelled; ``duro tail``
    shows events of objects on both workers; ``duro objects sql --write --server`` changes an
    object on the worker that owns it, whichever worker takes the request."""
    from prometheus_client.parser import text_string_to_metric_families
    srv = serve(PROJECT, "--workers", "2")
    _wait_serving(srv)
    names = [_name_on(0, prefix="m"), _name_on(1, prefix="m")]
    wait_for(lambda: (pathlib.Path(srv.data_dir) / "admin.url").exists(), timeout=30, what="the admin listener")
    auth = srv.admin_headers()
    tail = subprocess.Popen([sys.executable, "-m", "duro", "tail", "--json", "--server", srv.url, "--data",
                             srv.data_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # the stream is open on every worker
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for n in names * 3:
                assert c.get(f"/add/{n}").status_code == 200
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while seen != set(names) and time.monotonic() < deadline:
            line = tail.stdout.readline()
            if not line:
                break
            rec = json.loads(line)
            if rec.get("name") in names:
                seen.add(rec["name"])
        assert seen == set(names), seen
    finally:
        tail.terminate()
        tail.wait(10)
        tail.stdout.close()
        tail.stderr.close()
    for _ in range(3):  # worker 0 answers, with both workers' samples
        text = httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        workers = {s.labels["worker"] for s in fams["duro_commits"].samples}
        assert workers == {"0", "1"}, text
    for n in names:
        r = subprocess.run([sys.executable, "-m", "duro", "objects", "sql", n, "UPDATE t SET v = 100 RETURNING v",
                            "--write", "--server", srv.url, "--data", srv.data_dir, "--project", str(PROJECT),
                            "--namespace", "TALLY"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "100" in r.stdout, r.stderr
        assert httpx.get(f"{srv.url}/add/{n}", timeout=30).json()["stored"] == 101
