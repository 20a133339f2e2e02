"""What the event-recording seam (runtime/events.py) costs per event, in process: the same
trivial event run through ``Activation.run`` with the seam off, on (counting for /metrics), on
with a ``duro tail`` subscriber (records built and queued, log lines collected), and — when the
OpenTelemetry SDK is installed — on with traces (a span per event, kept by an in-memory exporter).

    python bench/events_cost.py [--events N] [--rounds R]

Prints the median over rounds of the time per event for each mode, and the differences.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from inprocess import run_and_save  # noqa: E402

from duro.testing import LocalApp  # noqa: E402

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e" / "projects" / "observe"


async def main(events: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalApp(PROJECT, pathlib.Path(tmp) / "data") as app:
            runtime = app.runtime
            hub = runtime.events
            act = runtime.activation(app.env.COUNTER.unique_key, app.env.COUNTER.id_from_name("bench"))

            async def event(instance):
                return 1

            async def batch() -> float:
                t0 = time.perf_counter()
                for _ in range(events):
                    await act.run(event, kind="rpc", label="bench")
                return (time.perf_counter() - t0) / events * 1e6

            await batch()  # construct, warm up
            modes: dict[str, list[float]] = {"off": [], "metrics": [], "metrics+tail": []}
            tracer = _tracer()
            if tracer is not None:
                modes["metrics+otel"] = []
            for _ in range(rounds):
                act._hub = None
                modes["off"].append(await batch())
                act._hub = hub
                modes["metrics"].append(await batch())
                sub = hub.subscribe(maxsize=events + 1)
                modes["metrics+tail"].append(await batch())
                sub.close()
                if tracer is not None:
                    hub.tracer = tracer
                    modes["metrics+otel"].append(await batch())
                    hub.tracer = None
            med = {k: round(statistics.median(v), 3) for k, v in modes.items()}
            return {"events_per_round": events, "rounds": rounds, "us_per_event_median": med,
                    "seam_cost_us": round(med["metrics"] - med["off"], 3),
                    "tail_extra_us": round(med["metrics+tail"] - med["metrics"], 3),
                    **({"otel_extra_us": round(med["metrics+otel"] - med["metrics"], 3)} if tracer else {})}


def _tracer():
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    from duro.runtime.tracing import Tracing
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exporter.clear()
    return Tracing(provider)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default="/tmp/duro-events-cost.json")
    a = p.parse_args()
    run_and_save(main(a.events, a.rounds), a.out)
