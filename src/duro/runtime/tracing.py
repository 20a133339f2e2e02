"""OpenTelemetry traces, optional and off by default: one span per object event.

:func:`install` (``duro serve --otel``, or a test with its own ``TracerProvider``) gives the
runtime's :class:`EventHub` a :class:`Tracing`. Then every event an object runs — a fetch, an RPC
method, an alarm, a WebSocket message — gets a span, started as the event arrives (so the events
it causes, RPCs to other objects, are its children) and ended with its status, duration and rows
read and written. The front starts a server span per request (``http/server.py``), continuing the
caller's trace from its ``traceparent`` header, so a request's object events hang under it.

Off (the default) it costs one attribute test per event: nothing here is imported, no span is made.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["Tracing", "install", "TRACER_NAME"]

TRACER_NAME = "duro"


class Tracing:
    """The tracer and the few OpenTelemetry calls duro makes."""

    def __init__(self, provider: Any = None) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        self._context = context
        self._trace = trace
        self._propagate = propagate
        self._kinds = SpanKind
        self._status = (Status, StatusCode)
        self.tracer = (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)

    # ------------------------------------------------------------------ object events
    def start_event(self, act: Any, kind: str, label: str) -> tuple[Any, Any]:
        """A span for one event of ``act`` (an Activation), current until :meth:`end_event`."""
        name = act.runtime.events.class_name(act.unique_key)
        attrs = {"duro.object.class": name, "duro.object.namespace": act.unique_key,
                 "duro.object.id": act.id.to_string(), "duro.event.kind": kind, "duro.event.label": label}
        if act.id.name is not None:
            attrs["duro.object.name"] = act.id.name
        span = self.tracer.start_span(f"{name} {kind} {label}"[:200], kind=self._kinds.INTERNAL, attributes=attrs)
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def end_event(self, started: tuple[Any, Any], status: str, error: BaseException | None,
                  rows: tuple[int, int]) -> None:
        span, token = started
        self._context.detach(token)
        span.set_attribute("duro.event.status", status)
        span.set_attribute("duro.rows_read", rows[0])
        span.set_attribute("duro.rows_written", rows[1])
        status_cls, code = self._status
        if error is not None:
            span.record_exception(error)
        if status != "ok":
            span.set_status(status_cls(code.ERROR, f"{status}: {error}" if error is not None else status))
        span.end()

    # ------------------------------------------------------------------ across worker processes
    def inject(self) -> dict[str, str]:
        """The current trace context, W3C ``traceparent`` style, for a call to another worker."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        return carrier

    @contextlib.contextmanager
    def remote_parent(self, carrier: dict[str, str]) -> Iterator[None]:
        """Make the calling worker's context current while its call runs here."""
        token = self._context.attach(self._propagate.extract(carrier))
        try:
            yield
        finally:
            self._context.detach(token)

    # ------------------------------------------------------------------ requests (the front)
    def start_request(self, scope: dict[str, Any]) -> tuple[Any, Any]:
        """A server span for an HTTP request, a child of the caller's (its ``traceparent``)."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                   if k in (b"traceparent", b"tracestate", b"baggage")}
        parent = self._propagate.extract(carrier) if carrier else None
        method = scope.get("method", "GET")
        span = self.tracer.start_span(method, context=parent, kind=self._kinds.SERVER, attributes={
            "http.request.method": method, "url.path": scope.get("path", "")[:2000]})
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def end_request(self, started: tuple[Any, Any], status: int | None) -> None:
        span, token = started
        self._context.detach(token)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                status_cls, code = self._status
                span.set_status(status_cls(code.ERROR))
        span.end()


def install(runtime: Any, provider: Any = None) -> Tracing:
    """Turn traces on for ``runtime`` (a Runtime), with ``provider`` or the global tracer provider.
    Raises ImportError naming what to install when the SDK is missing."""
    try:
        tracing = Tracing(provider)
    except ImportError as e:
        raise ImportError("OpenTelemetry traces need the opentelemetry packages: pip install 'duro[otel]' "
                          f"({e})") from None
    runtime.events.tracer = tracing
    router = getattr(runtime, "router", None)
    if router is not None:  # worker processes: a call forwarded to another worker stays in its trace
        router.trace_out = tracing.inject
        router.trace_in = tracing.remote_parent
    return tracing


def configure(runtime: Any, service_name: str) -> Any:
    """``duro serve --otel``: traces on, exported as the standard ``OTEL_*`` environment says.
    A tracer provider the process already has (``opentelemetry-instrument``) is used as is;
    otherwise one is made, with ``service.name`` the project's name and ``OTEL_TRACES_EXPORTER``
    ``otlp`` (the default; ``OTEL_EXPORTER_OTLP_*`` set where to) or ``console``; it is flushed and
    shut down when the runtime closes (before uvicorn re-raises SIGTERM, which ends the process).
    Call before the runtime starts."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as e:
        raise ImportError(f"--otel needs the OpenTelemetry SDK: pip install 'duro[otel]' ({e})") from None
    import os
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        install(runtime, current)
        return current
    which = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if which == "console":
        exporter: Any = ConsoleSpanExporter()
    elif which == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise ImportError("OTEL_TRACES_EXPORTER=otlp (the default) needs the OTLP exporter: "
                              f"pip install 'duro[otel]' ({e}); or set OTEL_TRACES_EXPORTER=console") from None
        exporter = OTLPSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={which!r} is not one duro sets up: use otlp or console, or "
                         "configure a tracer provider yourself (opentelemetry-instrument)")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(runtime, provider)
    runtime.add_service(_Flush(provider))
    return provider


class _Flush:
    """Shuts the tracer provider made by :func:`configure` down with the runtime: the spans still
    in its batch are exported (off the event loop: an exporter may wait for its collector)."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        import asyncio
        await asyncio.to_thread(self.provider.shutdown)
