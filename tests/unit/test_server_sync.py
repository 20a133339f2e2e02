"""What a node reads from a NATS server's ``/varz`` at start (cluster/serversync.py): the shapes
below are a real nats-server 2.15's (``sync_always`` is what ``sync_interval: always`` sets). The
whole check against real servers: tests/cluster/test_serve_cluster.py."""

import pytest

from duro.cluster.serversync import monitor_urls, problem
from duro.config_admin import parse_monitor_urls
from duro.errors import ConfigError


def varz(version="2.15.1", **config):
    js = {"config": {"max_memory": 1 << 30, "store_dir": "/tmp/js", "sync_interval": 120_000_000_000, **config}}
    return {"server_name": "n0", "version": version, "jetstream": js}


def test_a_server_that_fsyncs_before_it_acknowledges_is_fit():
    assert problem("http://h:8222", varz(sync_always=True)) is None


def test_a_lazy_fsync_is_named_with_its_interval_and_the_setting_to_change():
    why = problem("http://h:8222", varz())
    assert "n0" in why and "every 120 s" in why and "sync_interval: always" in why


def test_no_jetstream_and_old_versions_are_named():
    assert "without JetStream" in problem("http://h:8222", {"server_name": "n0", "version": "2.15.1"})
    assert "2.9.10" in problem("http://h:8222", varz("2.9.10", sync_always=True))
    assert problem("http://h:8222", varz("2.12.0-beta", sync_always=True)) is None


def test_default_monitoring_addresses_are_each_host_once_on_port_8222():
    assert monitor_urls(["nats://a:4222", "nats://a:4223", "tls://b:4222"]) == ["http://a:8222", "http://b:8222"]


def test_monitoring_addresses_are_checked():
    assert parse_monitor_urls("http://a:8222/, https://b:1", None, "--nats-monitor") == ("http://a:8222", "https://b:1")
    for bad in ("a:8222", "http://a", "nats://a:4222", [], "http://a:0"):
        with pytest.raises(ConfigError):
            parse_monitor_urls(bad, None, "--nats-monitor")
