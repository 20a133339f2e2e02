"""The operator's configuration: the ``admin`` table and ``file_mode``, from real files, and the
message of each mistake (file, key, what is allowed)."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from duro.config import apply_overrides, load_project
from duro.config_admin import AdminConfig
from duro.errors import ConfigError


def project(root: pathlib.Path, extra: str) -> pathlib.Path:
    (root / "app.py").write_text("# entry\n")
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.duro]
        main = "app.py"
        """) + textwrap.dedent(extra))
    return root


def error(root: pathlib.Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_project(root)
    return str(info.value)


def test_defaults_are_a_private_listener_and_owner_only_files(tmp_path):
    cfg = load_project(project(tmp_path, ""))
    assert cfg.admin == AdminConfig(enabled=True, host="127.0.0.1", port=0, import_dir=None)
    assert cfg.file_mode == 0o600


def test_the_admin_table_and_file_mode_are_read(tmp_path):
    cfg = load_project(project(tmp_path, """
        file_mode = "0640"
        [tool.duro.admin]
        port = 9100
        host = "::1"
        import_dir = "imports"
        """))
    assert cfg.admin == AdminConfig(enabled=True, host="::1", port=9100, import_dir=(tmp_path / "imports").resolve())
    assert cfg.file_mode == 0o640


def test_wrangler_reads_them_from_its_duro_section(tmp_path):
    (tmp_path / "entry.py").write_text("# entry\n")
    (tmp_path / "wrangler.jsonc").write_text('{"name": "w", "main": "entry.py", '
                                             '"duro": {"admin": {"enabled": false}, "file_mode": "0640"}}')
    cfg = load_project(tmp_path)
    assert cfg.admin.enabled is False and cfg.file_mode == 0o640


@pytest.mark.parametrize("extra, key, words", [
    ("[tool.duro.admin]\nport = 70000\n", "tool.duro.admin.port", "0..65535"),
    ("[tool.duro.admin]\nport = true\n", "tool.duro.admin.port", "0..65535"),
    ("[tool.duro.admin]\nenabled = \"no\"\n", "tool.duro.admin.enabled", "true or false"),
    ("[tool.duro.admin]\nhost = \"\"\n", "tool.duro.admin.host", "address"),
    ("[tool.duro.admin]\nimport_dir = 3\n", "tool.duro.admin.import_dir", "folder path"),
    ("[tool.duro.admin]\ntoken = \"x\"\n", "tool.duro.admin.token", "valid keys: enabled, host, port, import_dir"),
    ("admin = 3\n", "tool.duro.admin", "must be a table"),
    ("file_mode = \"0644\"\n", "tool.duro.file_mode", "'0600', '0640'"),
    ("file_mode = 0o600\n", "tool.duro.file_mode", "(a string)"),
])
def test_mistakes_name_the_key(tmp_path, extra, key, words):
    text = error(project(tmp_path, extra))
    assert f"pyproject.toml: {key}: " in text and words in text, text


def test_flags_override_the_config(tmp_path):
    cfg = load_project(project(tmp_path, "[tool.duro.admin]\nport = 9100\n"))
    cfg = apply_overrides(cfg, admin={"enabled": False})
    assert cfg.admin == AdminConfig(enabled=False, port=9100)
    with pytest.raises(ConfigError, match="port: must be a port number"):
        apply_overrides(cfg, admin={"port": -1})


# ---- the cluster table (duro serve --cluster) ----------------------------------------------------


def test_the_cluster_table_is_read_and_absent_means_embedded(tmp_path):
    from duro.config_admin import ClusterConfig
    assert load_project(project(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path, "")).cluster == \
        ClusterConfig()
    cfg = load_project(project(tmp_path, """
        [tool.duro.cluster]
        servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
        node = "node-1"
        lease_ttl = 12
        """))
    assert cfg.cluster == ClusterConfig(("nats://10.0.0.1:4222", "nats://10.0.0.2:4222"), "node-1", 12)


@pytest.mark.parametrize("extra, words", [
    ('[tool.duro.cluster]\nservers = ["http://h:4222"]', ["tool.duro.cluster.servers", "'http://h:4222'", "nats://HOST:PORT"]),
    ('[tool.duro.cluster]\nservers = ["nats://h"]', ["tool.duro.cluster.servers", "nats://HOST:PORT"]),
    ('[tool.duro.cluster]\nservers = []', ["tool.duro.cluster.servers", "must list"]),
    ('[tool.duro.cluster]\nnode = "a b"', ["tool.duro.cluster.node", "'a b'", "letters, digits"]),
    ('[tool.duro.cluster]\nleader = "x"', ["tool.duro.cluster.leader", "unknown key", "servers, node, lease_ttl"]),
    ('[tool.duro.cluster]\nlease_ttl = 2.5', ["tool.duro.cluster.lease_ttl", "whole seconds from 1 to 300", "2.5"]),
    ('[tool.duro.cluster]\nlease_ttl = 0', ["tool.duro.cluster.lease_ttl", "whole seconds"]),
])
def test_cluster_mistakes_name_the_key_and_what_is_allowed(tmp_path, extra, words):
    text = error(project(tmp_path, extra))
    for w in words:
        assert w in text, text


def test_the_cluster_flags_override_the_table_and_are_checked(tmp_path):
    import argparse
    from duro.cli.cluster import cluster_settings
    cfg = load_project(project(tmp_path, """
        [tool.duro.cluster]
        servers = "nats://a:1,nats://b:2"
        node = "n1"
        """))
    got = cluster_settings(argparse.Namespace(cluster=None, node="n2"), cfg)
    assert got is not None and got.servers == ("nats://a:1", "nats://b:2") and got.node == "n2"
    assert got.lease_ttl == 3  # the default
    assert cluster_settings(argparse.Namespace(cluster=None, node="n2", lease_ttl="9"), cfg).lease_ttl == 9
    with pytest.raises(ConfigError, match="--lease-ttl.*whole seconds"):
        cluster_settings(argparse.Namespace(cluster=None, node="n2", lease_ttl="0.5"), cfg)
    plain = load_project(project(tmp_path / "p" if (tmp_path / "p").mkdir() is None else tmp_path, ""))
    assert cluster_settings(argparse.Namespace(cluster=None, node=None), plain) is None
    with pytest.raises(ConfigError, match="--node NAME"):
        cluster_settings(argparse.Namespace(cluster="nats://h:4222", node=None), plain)
    with pytest.raises(ConfigError, match="--cluster nats://HOST:PORT"):
        cluster_settings(argparse.Namespace(cluster=None, node="n1"), plain)
    with pytest.raises(ConfigError, match="--cluster"):
        cluster_settings(argparse.Namespace(cluster="nats://h:99999", node="n1"), plain)
