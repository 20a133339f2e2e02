"""``duro tail`` and ``/metrics`` against the real server (a ``duro serve`` subprocess on
127.0.0.1): the tail is the real command in a subprocess, the metrics are parsed by
prometheus_client's own parser."""

import json
import pathlib
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from duro.testing import wait_for

PROJECT = pathlib.Path(__file__).parent / "projects" / "observe"
FIELDS = {"type", "time_ms", "namespace", "class", "id", "name", "kind", "label", "status", "error",
          "duration_ms", "cpu_ms", "rows_read", "rows_written", "logs"}


class Tail:
    """``duro tail --json ...`` in a subprocess; its lines parsed as they arrive."""

    def __init__(self, srv, *args):
        cmd = [sys.executable, "-m", "duro", "tail", "--json", "--server", srv.url, "--data", srv.data_dir, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: any(x["type"] == "hello" for x in self.lines) or self.proc.poll() is not None,
                 timeout=30, what="duro tail to connect")
        if self.proc.poll() is not None:
            self.kill()
            raise AssertionError(f"duro tail exited with {self.proc.returncode}")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def events(self):
        return [x for x in list(self.lines) if x["type"] == "event"]

    def wait(self, pred, what):
        return wait_for(lambda: next((e for e in self.events() if pred(e)), None), timeout=30, what=what)

    def finish(self):
        """Wait for the command to end (the server stopped) and return its exit status."""
        code = self.proc.wait(30)
        self._reader.join(10)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def tails():
    started = []

    def start(srv, *args):
        t = Tail(srv, *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def test_tail_json_shows_every_kind_of_event_with_its_printed_lines(serve, tails):
    srv = serve(PROJECT)
    tail = tails(srv)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/fetch/apples").text == "fetched apples"
        assert c.post("/rpc/apples").text == "1"
        assert c.post("/fail/apples").status_code == 500
        c.post("/arm/apples?in=50")
        with connect(srv.url.replace("http://", "ws://") + "/ws/apples") as ws:
            ws.send("hello")
            assert ws.recv(timeout=30) == "echo hello"

    def of(kind, label):
        return lambda e: e["kind"] == kind and e["label"].endswith(label) and e["name"] == "apples"

    fetch = tail.wait(of("fetch", "/fetch/apples"), "the fetch event")
    rpc = tail.wait(of("rpc", "increment"), "the RPC event")
    failed = tail.wait(of("rpc", "fail"), "the failed RPC event")
    # (An earlier alarm event may be the scheduler finding it not yet due: no handler, no lines.)
    alarm = tail.wait(lambda e: of("alarm", "alarm")(e) and e["logs"], "the alarm handler's event")
    message = tail.wait(of("websocket", "websocket_message"), "the WebSocket message event")
    for e in (fetch, rpc, failed, alarm, message):
        assert set(e) == FIELDS, e
        assert e["class"] == "Counter" and e["namespace"] == "observe-e2e-Counter" and len(e["id"]) == 64
        assert e["duration_ms"] >= 0 and e["cpu_ms"] >= 0 and e["time_ms"] > 1.7e12
    assert fetch["status"] == "ok" and fetch["logs"] == ["fetch apples"] and fetch["label"].startswith("GET ")
    assert rpc["status"] == "ok" and rpc["logs"] == ["increment 1"] and rpc["rows_written"] >= 1
    assert failed["status"] == "error" and failed["error"] == "ValueError: boom" and failed["logs"] == ["about to fail"]
    assert alarm["status"] == "ok" and alarm["logs"] == ["alarm fired", "WARNING observe-app: alarm logged"]
    assert message["status"] == "ok" and message["logs"] == ["ws hello"]
    # What the handlers printed still reached the server's stdout.
    wait_for(lambda: "increment 1" in srv.log() and "ws hello" in srv.log(), what="prints in the server log")


def test_tail_filters_by_object_class_status_and_sample(serve, tails):
    srv = serve(PROJECT)
    by_object = tails(srv, "--object", "pears")
    by_class = tails(srv, "--class", "Other")
    by_status = tails(srv, "--status", "error")
    sampled = tails(srv, "--sample", "0.2", "--kind", "rpc", "--object", "many")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        c.post("/rpc/apples")
        c.post("/other/apples")
        c.post("/fail/apples")
        c.post("/rpc/pears")
        for _ in range(100):
            c.post("/rpc/many")
    # A graceful stop ends the streams (everything queued is sent first) rather than waiting for
    # them: SIGTERM re-raised after a clean shutdown, not the SIGKILL that follows a 30 s wait.
    assert srv.stop() == -signal.SIGTERM
    for t in (by_object, by_class, by_status, sampled):
        assert t.finish() == 0
    assert [(e["name"], e["label"]) for e in by_object.events()] == [("pears", "increment")]
    assert [(e["class"], e["label"]) for e in by_class.events()] == [("Other", "ping")]
    assert [(e["name"], e["label"], e["status"]) for e in by_status.events()] == [("apples", "fail", "error")]
    kept = sampled.events()
    assert all(e["name"] == "many" and e["kind"] == "rpc" for e in kept)
    assert 0 < len(kept) < 100, len(kept)  # 20 expected; 0 or 100 has odds below 1e-9


def test_tail_refuses_bad_filters_and_a_wrong_token(serve, tmp_path):
    srv = serve(PROJECT)
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.get(srv.admin_url + "/__duro/admin/tail").status_code == 403
    r = httpx.get(srv.admin_url + "/__duro/admin/tail?status=fine", headers=auth)
    assert r.status_code == 400 and "unknown status 'fine'" in r.json()["error"]
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    r = subprocess.run([sys.executable, "-m", "duro", "tail", "--server", srv.url, "--data", str(wrong)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no admin token" in r.stderr


def test_a_tail_client_that_never_reads_does_not_hold_up_requests(serve):
    """A client that subscribes and then never reads: its socket buffers fill, the server keeps
    only `queue` records for it and drops (and counts) the rest, and every request completes."""
    srv = serve(PROJECT)
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", int(srv.admin_url.rsplit(":", 1)[1])))
    stalled.sendall(f"GET /__duro/admin/tail?queue=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
                    .encode())
    try:
        auth = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            wait_for(lambda: _sample(httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text,
                                     "duro_tail_subscribers") == 1, what="the stalled tail to subscribe")
            # Each record carries a 12 KB label (the URL): 1,500 of them (18 MB) are far more than the socket
            # buffers and the 10-record queue hold.
            for i in range(1500):
                assert c.get("/fetch/big?pad=" + "x" * 12000).status_code == 200
            text = httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text
        assert _sample(text, "duro_tail_dropped_total") > 500
        assert _sample(text, "duro_events_total", **{"class": "Counter", "kind": "fetch", "status": "ok"}) == 1500
    finally:
        stalled.close()


def _families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(text, name, **labels):
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0


def test_metrics_parse_and_move(serve):
    srv = serve(PROJECT)
    assert httpx.get(srv.admin_url + "/metrics").status_code == 403
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        before = httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30)
        assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
        fam = _families(before.text)
        for name in ("duro_events", "duro_event_duration_seconds", "duro_http_requests",
                     "duro_http_request_duration_seconds", "duro_objects_active", "duro_objects_hibernated",
                     "duro_objects_stored", "duro_websockets_hibernatable", "duro_connections_open",
                     "duro_journal_batch_commits", "duro_journal_fsync_seconds", "duro_alarm_lateness_seconds",
                     "duro_queue_depth", "duro_resets", "duro_overloaded", "duro_front_refusals",
                     "duro_tail_dropped"):
            assert name in fam, name
        assert fam["duro_event_duration_seconds"].type == "histogram"
        assert fam["duro_events"].type == "counter"
        b = before.text
        assert _sample(b, "duro_objects_stored", **{"class": "Counter"}) == 0
        for _ in range(3):
            c.post("/rpc/plums")
        c.post("/fail/plums")
        when = c.post("/arm/plums?in=20").json()["alarm"]
        wait_for(lambda: _sample(httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text,
                                 "duro_alarm_lateness_seconds_count") == 1, what="the alarm to fire")
        with connect(srv.url.replace("http://", "ws://") + "/ws/plums") as ws:
            ws.send("x")
            ws.recv(timeout=30)

            def settled():
                # The echo and the alarm's start are seen before their events end and are counted.
                text = httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text
                done = (_sample(text, "duro_events_total", **{"class": "Counter", "kind": "websocket"}) == 1
                        and _sample(text, "duro_alarms_total", outcome="succeeded") == 1)
                return text if done else None
            a = wait_for(settled, what="the WebSocket and alarm events to be counted")
    rpc = {"class": "Counter", "kind": "rpc"}
    assert _sample(a, "duro_events_total", status="ok", **rpc) - _sample(b, "duro_events_total", status="ok", **rpc) == 4
    assert _sample(a, "duro_events_total", status="error", **rpc) - _sample(b, "duro_events_total", status="error", **rpc) == 1
    # The scheduler may also look at the alarm a moment early (an event that finds it not yet due).
    assert _sample(a, "duro_events_total", **{"class": "Counter", "kind": "alarm", "status": "ok"}) >= 1
    assert _sample(a, "duro_events_total", **{"class": "Counter", "kind": "websocket", "status": "ok"}) == 1
    assert _sample(a, "duro_event_duration_seconds_count", **rpc) == 5
    assert _sample(a, "duro_http_requests_total", code="500") == 1
    assert _sample(a, "duro_rows_written_total", **{"class": "Counter"}) >= 3
    assert _sample(a, "duro_objects_stored", **{"class": "Counter"}) == 1
    assert _sample(a, "duro_objects_active", **{"class": "Counter"}) == 1
    assert _sample(a, "duro_websockets_hibernatable") == 1
    assert _sample(a, "duro_connections_open", kind="websocket") == 1
    assert _sample(a, "duro_journal_batch_commits_count") > _sample(b, "duro_journal_batch_commits_count")
    assert _sample(a, "duro_journal_fsync_seconds_count") > _sample(b, "duro_journal_fsync_seconds_count")
    assert _sample(a, "duro_alarms_total", outcome="succeeded") == 1
    assert when > 0


def test_metrics_count_a_hibernated_object(serve):
    srv = serve(PROJECT, "--hibernation-timeout", "0.2")
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=srv.url, timeout=30) as c, \
            connect(srv.url.replace("http://", "ws://") + "/ws/sleepy") as ws:
        ws.send("x")
        ws.recv(timeout=30)
        text = wait_for(lambda: (t := httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text)
                        and _sample(t, "duro_objects_hibernated") == 1 and t, what="the object to hibernate")
        assert _sample(text, "duro_objects_active", **{"class": "Counter"}) == 0
        assert _sample(text, "duro_websockets_hibernatable") == 1
        ws.send("y")  # wakes it
        assert ws.recv(timeout=30) == "echo y"
        text = httpx.get(srv.admin_url + "/metrics", headers=auth, timeout=30).text
        assert _sample(text, "duro_objects_hibernated") == 0
        assert _sample(text, "duro_objects_active", **{"class": "Counter"}) == 1
