"""The ``assets`` block of wrangler.jsonc / wrangler.toml and ``[tool.duro.assets]``: defaults,
every option, and the mistakes wrangler refuses, each named by file and key."""

from __future__ import annotations

import json
import pathlib

import pytest

from duro.config import Assets, load_project
from duro.errors import ConfigError


def project(root: pathlib.Path, assets, *, extra=None, public=True) -> pathlib.Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "entry.py").write_text("# entry\n")
    if public:
        (root / "public").mkdir(exist_ok=True)
    cfg = {"name": "site", "main": "src/entry.py", "compatibility_date": "2025-08-14", "assets": assets,
           **(extra or {})}
    (root / "wrangler.jsonc").write_text(json.dumps(cfg))
    return root


def error(root: pathlib.Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_project(root)
    return str(info.value)


def test_defaults_are_cloudflares(tmp_path):
    cfg = load_project(project(tmp_path, {"directory": "./public"}))
    assert cfg.assets == Assets(directory=(tmp_path / "public").resolve())
    assert cfg.assets.binding is None and cfg.assets.html_handling == "auto-trailing-slash"
    assert cfg.assets.not_found_handling == "none" and cfg.assets.run_worker_first is False
    assert cfg.assets.navigation_prefers_assets is True  # compatibility_date 2025-08-14
    assert load_project(project(tmp_path / "p2", {"directory": "public"})).assets is not None


def test_every_option(tmp_path):
    cfg = load_project(project(tmp_path, {"directory": "public", "binding": "STATIC", "html_handling": "none",
                                          "not_found_handling": "single-page-application",
                                          "run_worker_first": ["/api/*", "!/api/docs/*"]}))
    assert cfg.assets.binding == "STATIC" and cfg.assets.html_handling == "none"
    assert cfg.assets.not_found_handling == "single-page-application"
    assert cfg.assets.run_worker_first == ("/api/*", "!/api/docs/*")
    assert load_project(project(tmp_path / "t", {"directory": "public", "run_worker_first": True})
                        ).assets.run_worker_first is True
    # the older spelling
    assert load_project(project(tmp_path / "o", {"directory": "public", "experimental_serve_directly": False})
                        ).assets.run_worker_first is True


def test_the_navigation_flag_follows_the_compatibility_date_and_flags(tmp_path):
    old = project(tmp_path / "old", {"directory": "public"}, extra={"compatibility_date": "2024-09-19"})
    assert load_project(old).assets.navigation_prefers_assets is False
    on = project(tmp_path / "on", {"directory": "public"}, extra={
        "compatibility_date": "2024-09-19", "compatibility_flags": ["assets_navigation_prefers_asset_serving"]})
    assert load_project(on).assets.navigation_prefers_assets is True
    off = project(tmp_path / "off", {"directory": "public"}, extra={
        "compatibility_flags": ["assets_navigation_has_no_effect"]})
    assert load_project(off).assets.navigation_prefers_assets is False


def test_wrangler_toml_and_tool_duro(tmp_path):
    (tmp_path / "a" / "src").mkdir(parents=True)
    (tmp_path / "a" / "static").mkdir()
    (tmp_path / "a" / "src" / "entry.py").write_text("")
    (tmp_path / "a" / "wrangler.toml").write_text(
        'name = "a"\nmain = "src/entry.py"\n[assets]\ndirectory = "./static"\nbinding = "ASSETS"\n')
    assert load_project(tmp_path / "a").assets.binding == "ASSETS"
    (tmp_path / "b" / "web").mkdir(parents=True)
    (tmp_path / "b" / "app.py").write_text("")
    (tmp_path / "b" / "pyproject.toml").write_text(
        '[tool.duro]\nmain = "app.py"\n[tool.duro.assets]\ndirectory = "web"\n'
        'not_found_handling = "404-page"\n')
    cfg = load_project(tmp_path / "b")
    assert cfg.assets.directory == (tmp_path / "b" / "web").resolve()
    assert cfg.assets.not_found_handling == "404-page" and cfg.assets.navigation_prefers_assets


@pytest.mark.parametrize("assets, key, words", [
    ({}, "assets.directory", "missing"),
    ({"directory": "nope"}, "assets.directory", "does not exist"),
    ({"directory": "public", "html_handling": "auto"}, "assets.html_handling", '"auto-trailing-slash"'),
    ({"directory": "public", "not_found_handling": "spa"}, "assets.not_found_handling", '"single-page-application"'),
    ({"directory": "public", "binding": "my-assets"}, "assets.binding", "not a valid Python identifier"),
    ({"directory": "public", "run_worker_first": "yes"}, "assets.run_worker_first", "must be true, false"),
    ({"directory": "public", "run_worker_first": []}, "assets.run_worker_first", "at least 1 rule"),
    ({"directory": "public", "run_worker_first": ["api/*"]}, "assets.run_worker_first", "must start with '/' or '!/'"),
    ({"directory": "public", "run_worker_first": ["!api/*", "/x"]}, "assets.run_worker_first",
     "negative rules must start with '!/'"),
    ({"directory": "public", "run_worker_first": ["!/api/*"]}, "assets.run_worker_first",
     "at least 1 non-negative rule"),
    ({"directory": "public", "run_worker_first": ["/api/*", "/api/x"]}, "assets.run_worker_first",
     "rule '/api/*' makes it redundant"),
    ({"directory": "public", "run_worker_first": ["/a", "/a"]}, "assets.run_worker_first", "duplicate"),
    ({"directory": "public", "dirctory": "x"}, "assets.dirctory", "did you mean directory"),
])
def test_mistakes_are_named(tmp_path, assets, key, words):
    message = error(project(tmp_path, assets))
    assert message.startswith(f"wrangler.jsonc: {key}: ") and words in message, message


def test_the_binding_name_must_be_free(tmp_path):
    root = project(tmp_path, {"directory": "public", "binding": "COUNTER"}, extra={
        "durable_objects": {"bindings": [{"name": "COUNTER", "class_name": "Counter"}]}})
    assert "COUNTER is already bound" in error(root)
