"""A cluster node's own metrics on ``/metrics`` (beside every metric a single server has): which
node this is, whether it may write, the objects it owns, take-overs and hand-overs, calls it
forwarded to other nodes and served for them, and the journal's appends with their latency.

Each node answers for itself: scrape every node (Prometheus adds an ``instance`` label per target);
``duro_cluster_node_info`` names the node.
"""

from __future__ import annotations

from typing import Any

from ..runtime.metrics import Counter, Gauge, Metric

__all__ = ["cluster_metrics"]


def cluster_metrics(router: Any) -> list[Metric]:
    """The metrics of the node behind ``router`` (a ``ClusterRouter``), read at scrape time."""
    node = router.node
    info = Gauge("duro_cluster_node_info", "This cluster node (value 1), by name.", ("node",))
    info.set(1, (node.node,))
    reg = node.registry
    writable = Gauge("duro_cluster_writable", "1 while this node's registration is valid and it may write; "
                     "0 while it is self-fenced (its objects move to other nodes).")
    writable.set(1 if reg is not None and reg.writable() else 0)
    renewals = Counter("duro_cluster_registration_renewals", "Renewals of this node's registration that succeeded.")
    renewals.inc((), reg.renewals if reg is not None else 0)
    owned = Gauge("duro_cluster_objects_owned", "Objects this node holds the lease of.")
    owned.set(len(node.owned))
    moves = Counter("duro_cluster_object_moves", "Objects taken over by this node (in) and let go by it (out).",
                    ("direction",))
    moves.inc(("in",), node.taken)
    moves.inc(("out",), node.dropped)
    calls = Counter("duro_cluster_calls", "Calls (fetch, RPC, WebSocket set-up, admin) this node forwarded to "
                    "an object's owner, and served here for other nodes.", ("direction",))
    calls.inc(("forwarded",), router.forwarded)
    calls.inc(("served",), router.served)
    claims = Counter("duro_cluster_claims", "Objects this node claimed because no node answered for them.")
    claims.inc((), router.claims)
    out: list[Metric] = [info, writable, renewals, owned, moves, calls, claims]
    journal = node.journal
    if journal is not None:
        appends = Counter("duro_cluster_journal_appends", "Messages appended to the replicated journal.")
        appends.inc((), journal.appends)
        retries = Counter("duro_cluster_journal_append_retries", "Journal appends sent again (a timeout, an "
                          "election, a spurious refusal).")
        retries.inc((), journal.retries)
        out += [appends, retries, journal.append_seconds]
    return out
