"""OpenTelemetry traces (``duro serve --otel``, ``runtime/tracing.py``) with the SDK's in-memory
exporter, against the real front on a real 127.0.0.1 socket in this process: one span per
object event — fetch, RPC method, alarm, WebSocket message — with class, name, status and rows,
children of the request's server span, which continues the caller's ``traceparent``."""

from __future__ import annotations

import asyncio
import pathlib

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from duro.compat import load_app  # noqa: E402
from duro.http import AsgiFront, serve  # noqa: E402
from duro.http.websocket import websocket_handler  # noqa: E402
from duro.runtime import tracing  # noqa: E402
from duro.testing import free_port  # noqa: E402

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "observe"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


async def _served(tmp_path, traced: bool = True):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = load_app(PROJECT, data_dir=tmp_path / "data")
    if traced:
        tracing.install(app.runtime, provider)
    port = free_port()
    ready = asyncio.Event()
    servers: list = []
    task = asyncio.ensure_future(serve(AsgiFront(app, websocket_handler=websocket_handler), port=port,
                                       ready=ready, log_level="warning", on_server=servers.append))
    await asyncio.wait_for(ready.wait(), 30)
    return f"http://127.0.0.1:{port}", (task, servers[0]), exporter


async def _stop(served) -> None:
    task, server = served
    server.should_exit = True  # the graceful stop: listener closed, app closed
    await asyncio.wait_for(task, 30)


def _by_kind(spans, kind):
    return [s for s in spans if s.attributes.get("duro.event.kind") == kind]


async def test_a_span_per_event_linked_to_the_request(tmp_path):
    from websockets.asyncio.client import connect
    url, task, exporter = await _served(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            headers = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
            assert (await c.post("/rpc/t1", headers=headers)).text == "1"
            assert (await c.get("/fetch/t1")).text == "fetched t1"
            assert (await c.post("/relay/t2")).text == "pong"
            assert (await c.post("/fail/t1")).status_code == 500
            assert (await c.post("/arm/t1?in=0")).status_code == 200
        async with connect(url.replace("http", "ws") + "/ws/t1") as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo hi"
        for _ in range(500):  # the alarm fires on its own
            if _by_kind(exporter.get_finished_spans(), "alarm"):
                break
            await asyncio.sleep(0.01)
    finally:
        await _stop(task)
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    # The RPC: a span with the object's class, name, status and rows, under the request's server
    # span, which continues the caller's trace.
    rpc = next(s for s in _by_kind(spans, "rpc") if s.attributes["duro.event.label"] == "increment")
    assert rpc.attributes["duro.object.class"] == "Counter" and rpc.attributes["duro.object.name"] == "t1"
    assert rpc.attributes["duro.event.status"] == "ok" and rpc.status.status_code is not StatusCode.ERROR
    assert rpc.attributes["duro.rows_written"] >= 1
    assert rpc.end_time > rpc.start_time
    request = by_id[rpc.parent.span_id]
    assert request.name == "POST" and request.attributes["http.response.status_code"] == 200
    assert format(request.context.trace_id, "032x") == TRACE_ID == format(rpc.context.trace_id, "032x")
    assert format(request.parent.span_id, "016x") == CALLER_SPAN

    fetch = _by_kind(spans, "fetch")
    assert fetch and fetch[0].attributes["duro.object.class"] == "Counter"
    assert by_id[fetch[0].parent.span_id].name == "GET"

    # An RPC an object makes is a child of the event that made it.
    ping = next(s for s in _by_kind(spans, "rpc") if s.attributes["duro.event.label"] == "ping")
    relay = by_id[ping.parent.span_id]
    assert relay.attributes["duro.event.label"] == "relay" and ping.attributes["duro.object.class"] == "Other"
    assert ping.attributes["duro.rows_written"] >= 1

    # A failing method: the error status and the exception.
    fail = next(s for s in _by_kind(spans, "rpc") if s.attributes["duro.event.label"] == "fail")
    assert fail.attributes["duro.event.status"] == "error" and fail.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" and "boom" in e.attributes["exception.message"] for e in fail.events)

    # The alarm and the WebSocket message.
    assert _by_kind(spans, "alarm")[0].attributes["duro.object.name"] == "t1"
    assert any(s.attributes["duro.object.class"] == "Counter" for s in _by_kind(spans, "websocket"))


async def test_off_by_default_no_spans(tmp_path):
    url, task, exporter = await _served(tmp_path, traced=False)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            assert (await c.post("/rpc/t1")).text == "1"
    finally:
        await _stop(task)
    assert exporter.get_finished_spans() == ()


def test_the_serve_flag_says_what_to_install_when_the_sdk_is_missing(tmp_path, monkeypatch):
    import sys
    from duro.errors import ConfigError
    from duro.cli.serve import _tracing
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    app = load_app(PROJECT, data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match=r"pip install 'duro\[otel\]'"):
        _tracing(app, "observe")
