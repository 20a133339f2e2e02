"""The hand-written Prometheus exposition (``runtime/metrics.py``), read back by
prometheus_client's parser."""

from prometheus_client.parser import text_string_to_metric_families

from duro.runtime.metrics import Counter, Gauge, Histogram, render


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_counter_gauge_histogram_round_trip():
    c = Counter("duro_x", "Things.", ("class", "status"))
    c.inc(("A", "ok"))
    c.inc(("A", "ok"), 2)
    c.inc(('we"ird\\', "error"))
    g = Gauge("duro_g", "A gauge.")
    g.set(7)
    h = Histogram("duro_h_seconds", "Latency\nwith a newline.", ("kind",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v, ("rpc",))
    empty = Histogram("duro_e_seconds", "No labels, nothing observed.")
    text = render([c, g, h, empty])
    s = _samples(text)
    assert s[("duro_x_total", (("class", "A"), ("status", "ok")))] == 3
    assert s[("duro_x_total", (("class", 'we"ird\\'), ("status", "error")))] == 1
    assert s[("duro_g", ())] == 7
    assert s[("duro_h_seconds_bucket", (("kind", "rpc"), ("le", "0.1")))] == 2  # le is inclusive
    assert s[("duro_h_seconds_bucket", (("kind", "rpc"), ("le", "1.0")))] == 3
    assert s[("duro_h_seconds_bucket", (("kind", "rpc"), ("le", "+Inf")))] == 4
    assert s[("duro_h_seconds_count", (("kind", "rpc"),))] == 4
    assert abs(s[("duro_h_seconds_sum", (("kind", "rpc"),))] - 3.65) < 1e-9
    assert s[("duro_e_seconds_count", ())] == 0
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    # The parser names a counter's family without its _total, with every sample attached.
    assert types == {"duro_x": "counter", "duro_g": "gauge", "duro_h_seconds": "histogram",
                     "duro_e_seconds": "histogram"}
