"""``duro serve --otel`` as a real process: spans leave through the exporter the standard
``OTEL_TRACES_EXPORTER`` names (``console`` here: no collector is assumed), flushed at SIGTERM."""

import pathlib

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "observe"


def test_serve_otel_exports_a_span_per_event(serve):
    srv = serve(PROJECT, "--otel", env={"OTEL_TRACES_EXPORTER": "console"})
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    assert httpx.post(srv.url + "/rpc/o1", headers=headers, timeout=30).text == "1"
    assert srv.stop(timeout=30) in (0, -15)
    log = srv.log()
    assert '"name": "Counter rpc increment"' in log and '"duro.object.name": "o1"' in log, log[-3000:]
    assert '"trace_id": "0x4bf92f3577b34da6a3ce929d0e0e4736"' in log, log[-3000:]
    assert '"service.name": "observe-e2e"' in log


def test_serve_otel_with_an_unknown_exporter_says_what_to_use(serve):
    with pytest.raises(RuntimeError, match="OTEL_TRACES_EXPORTER='zipkin' is not one duro sets up"):
        serve(PROJECT, "--otel", env={"OTEL_TRACES_EXPORTER": "zipkin"})


def test_a_call_forwarded_to_another_worker_stays_in_its_trace(serve):
    """With --workers 2 the object may live in the worker that did not accept the request: its
    event's span must still be in the request's trace (the context crosses the Unix socket)."""
    import json
    import re
    srv = serve(PROJECT, "--otel", "--workers", "2", env={"OTEL_TRACES_EXPORTER": "console"})
    traces = {}
    for i in range(12):  # objects of both workers, through connections either may accept
        trace_id = f"{i + 1:032x}"
        r = httpx.post(f"{srv.url}/rpc/f{i}", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
                       timeout=30)
        assert r.text == "1"
        traces[f"f{i}"] = trace_id
    assert srv.stop(timeout=30) == 0
    log = srv.log()
    spans = [json.loads(m) for m in re.findall(r"^\{\n.*?^\}$", log, re.S | re.M)]
    events = {s["attributes"]["duro.object.name"]: s for s in spans if s["name"] == "Counter rpc increment"}
    assert set(events) == set(traces), (sorted(events), log[-3000:])
    for name, span in events.items():
        assert span["context"]["trace_id"] == "0x" + traces[name], (name, span)
