"""Counters and histograms for ``/metrics``, and their Prometheus text exposition (format 0.0.4).

Written by hand rather than with ``prometheus_client``: an observation here is a dict lookup, a
``bisect`` and two additions (about 0.3 µs), where ``prometheus_client``'s labelled ``observe``
takes a lock and a labels lookup (about 2 µs, measured on the development machine), and every
event of every object makes several. Nothing here blocks, allocates per observation once a label
set exists, or takes a lock: each metric is updated from one thread (the event loop's, or the
journal's writer thread for the journal's own), and a scrape that reads it while it moves may see
a sum one observation ahead of its count, which Prometheus tolerates.

It never imports the rest of duro and never does I/O.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable

__all__ = ["Counter", "Histogram", "Gauge", "render", "LATENCY_BUCKETS", "SIZE_BUCKETS"]

# Seconds: from 100 µs (a cached read) to 30 s (the longest an event may queue).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = tuple[str, ...]


class Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def samples(self) -> Iterable[tuple[str, Labels, tuple[tuple[str, str], ...], float]]:
        raise NotImplementedError


class Counter(Metric):
    """A monotonic count per label set: ``inc(labels, n)``."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), n: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + n

    def get(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0)

    def samples(self) -> Iterable[tuple[str, Labels, tuple[tuple[str, str], ...], float]]:
        if not self.values and not self.labelnames:
            yield "_total", (), (), 0
        for labels, v in sorted(self.values.items()):
            yield "_total", labels, (), v


class Gauge(Metric):
    """A value per label set, set at scrape time (``set``) or moved (``inc``)."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, value: float, labels: Labels = ()) -> None:
        self.values[labels] = value

    def samples(self) -> Iterable[tuple[str, Labels, tuple[tuple[str, str], ...], float]]:
        for labels, v in sorted(self.values.items()):
            yield "", labels, (), v


class _Buckets:
    __slots__ = ("counts", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)  # the last one is +Inf
        self.sum = 0.0


class Histogram(Metric):
    """Cumulative buckets per label set: ``observe(value, labels)``."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = (),
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help, labelnames)
        self.bounds = tuple(buckets)
        self.children: dict[Labels, _Buckets] = {}

    def observe(self, value: float, labels: Labels = ()) -> None:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = _Buckets(len(self.bounds))
        child.counts[bisect.bisect_left(self.bounds, value)] += 1
        child.sum += value

    def count(self, labels: Labels = ()) -> int:
        child = self.children.get(labels)
        return sum(child.counts) if child is not None else 0

    def samples(self) -> Iterable[tuple[str, Labels, tuple[tuple[str, str], ...], float]]:
        children = self.children
        if not children and not self.labelnames:
            children = {(): _Buckets(len(self.bounds))}
        for labels, child in sorted(children.items()):
            counts = list(child.counts)
            total = 0
            for bound, n in zip(self.bounds, counts):
                total += n
                yield "_bucket", labels, (("le", _number(bound)),), total
            total += counts[-1]
            yield "_bucket", labels, (("le", "+Inf"),), total
            yield "_sum", labels, (), child.sum
            yield "_count", labels, (), total


def _number(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v)) if not isinstance(v, float) else repr(float(v))
    return repr(float(v))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(metrics: Iterable[Metric]) -> str:
    """The Prometheus text exposition of ``metrics`` (``text/plain; version=0.0.4``)."""
    out: list[str] = []
    for m in metrics:
        # In the 0.0.4 text format a counter's family is named as its samples are (``_total``).
        family = m.name + "_total" if m.kind == "counter" else m.name
        out.append(f"# HELP {family} {m.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        out.append(f"# TYPE {family} {m.kind}")
        for suffix, labels, extra, value in m.samples():
            pairs = [f'{k}="{_escape(v)}"' for k, v in zip(m.labelnames, labels)]
            pairs += [f'{k}="{v}"' for k, v in extra]
            head = m.name + suffix + ("{" + ",".join(pairs) + "}" if pairs else "")
            out.append(f"{head} {_number(value)}")
    return "\n".join(out) + "\n"
