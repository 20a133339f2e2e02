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
