"""``duro serve --cluster``: make the loaded app a node of a cluster (DESIGN.md §5).

The runtime keeps its shape: its router becomes the cluster's (calls to objects other nodes own
cross NATS), its journal and barrier the cluster's (commits go to the replicated stream before a
response leaves). Imported only in cluster mode: the embedded default never loads NATS.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..config_admin import ClusterConfig, parse_cluster_node, parse_cluster_urls, parse_lease_ttl, parse_monitor_urls
from ..errors import ConfigError, DuroError

__all__ = ["cluster_settings", "join_cluster"]

log = logging.getLogger("duro.cli")


def cluster_settings(args: argparse.Namespace, cfg: Any) -> ClusterConfig | None:
    """The cluster this server joins (flags over the config's ``cluster`` table), or None."""
    base: ClusterConfig = getattr(cfg, "cluster", ClusterConfig())
    servers = parse_cluster_urls(args.cluster, None, "--cluster") if getattr(args, "cluster", None) else base.servers
    node = parse_cluster_node(args.node, None, "--node") if getattr(args, "node", None) else base.node
    if not servers:
        if getattr(args, "node", None):
            raise ConfigError("--node names this server in a cluster: give the cluster's NATS servers with "
                              "--cluster nats://HOST:PORT[,...] (or [tool.duro.cluster] servers)")
        return None
    if not node:
        raise ConfigError("cluster mode needs this node's name: --node NAME (or [tool.duro.cluster] node), "
                          "unique in the cluster")
    ttl = parse_lease_ttl(args.lease_ttl, None, "--lease-ttl") if getattr(args, "lease_ttl", None) else base.lease_ttl
    monitor = parse_monitor_urls(args.nats_monitor, None, "--nats-monitor") if getattr(args, "nats_monitor", None) \
        else base.monitor
    return ClusterConfig(servers, node, ttl, monitor)


async def join_cluster(app: Any, settings: ClusterConfig) -> Any:
    """Connect and register this node, then route the app's calls and commits through the cluster.
    ConfigError when NATS is unreachable, lacks JetStream, or the node name is taken."""
    try:
        from ..cluster.node import ClusterJournal, ClusterNode
        from ..cluster.router import ClusterRouter
    except ImportError as e:
        raise ConfigError(f"cluster mode needs the cluster extra (pip install 'duro[cluster]'): {e}") from None
    from ..api.forwarding import install_forwarding

    runtime = app.runtime
    if runtime.durability != "fsync":
        raise ConfigError("cluster mode acknowledges a write once NATS has it replicated and fsync'd: "
                          "durability must be fsync, not os")
    from ..cluster.leases import LeaseOptions
    ttl = settings.lease_ttl
    # Renew three times per TTL; stop writing a sixth of it (at least 0.5 s) before it could expire.
    options = LeaseOptions(ttl=float(ttl), renew_every=ttl / 3, margin=max(0.5, ttl / 6))
    from ..cluster.serversync import check_server_sync
    await check_server_sync(settings.servers, settings.monitor)  # ConfigError: servers that fsync lazily
    node = ClusterNode(runtime, list(settings.servers), settings.node or "", options=options)
    try:
        await node.start()
    except ConfigError:
        raise
    except DuroError as e:  # a bucket or stream the servers cannot make, NATS not answering in time
        raise ConfigError(f"node {settings.node} cannot join the cluster at {', '.join(settings.servers)}: {e}") from None
    journal = ClusterJournal(node)
    runtime.router = ClusterRouter(node)
    runtime.journal = journal
    runtime.barrier = journal
    install_forwarding(runtime)
    runtime.add_service(node.serving_gate())  # added last, closed first: no calls in while it drains
    return node
