"""Real nats-servers for the cluster tests: ``nats1`` (one server, for fast tests) and ``nats3``
(a 3-server JetStream cluster, R=3), both with ``sync_interval: always``, on free 127.0.0.1 ports,
stopped by PID at the end of the module. Tests use keys of their own, so they can share one."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("nats", reason="the cluster tests need the cluster extra (nats-py)")

from duro.cluster.testing import NatsServers  # noqa: E402

CHILD = [sys.executable, "-m", "tests.cluster.child"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def nats1() -> Iterator[NatsServers]:
    with NatsServers(1) as servers:
        yield servers


@pytest.fixture(scope="module")
def nats3() -> Iterator[NatsServers]:
    with NatsServers(3) as servers:
        yield servers


@pytest.fixture
async def connect():
    """connect(servers) -> a nats-py connection to them, closed (drained) at the end of the test."""
    import nats

    opened = []

    async def open_(servers, **kw):
        nc = await nats.connect(servers.urls, **kw)
        opened.append(nc)
        return nc

    yield open_
    for nc in opened:
        if not nc.is_closed:
            await nc.close()
