"""Project configuration: find ``wrangler.jsonc``/``.json``/``.toml`` (read unchanged, plus an
optional ``duro`` section) or ``[tool.duro]`` in ``pyproject.toml``, validate it, return a frozen
:class:`ProjectConfig`. Every mistake is a :class:`ConfigError` naming file, dotted key and what is
allowed. It only reads files: never imports user code, creates directories or opens data.

Lenient on purpose: a bound class no migration creates is accepted as SQLite-backed (Cloudflare
would refuse to deploy it); unknown top-level wrangler keys are ignored."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from duro.config_admin import AdminConfig, ClusterConfig, parse_admin, parse_cluster, parse_file_mode
from duro.config_assets import Assets, navigation_prefers_assets, parse_assets
from duro.config_values import array, check_keys, ident, project_name, show, string, string_list, table
from duro.errors import ConfigError
from duro.exports_config import Exports, parse_exports

__all__ = ["Assets", "Binding", "Limits", "MigrationStep", "ProjectConfig", "load_project", "find_config_file", "apply_overrides",
           "WRANGLER_FILES"]

WRANGLER_FILES = ("wrangler.jsonc", "wrangler.json", "wrangler.toml")
_ENTRY_CANDIDATES = ("app.py", "main.py", "src/entry.py", "entry.py")
_DURABILITY = ("fsync", "os")
_TOOL_KEYS = ("main", "entrypoint", "name", "durability", "data_dir", "bindings", "vars", "limits", "migrations",
              "history_retention", "crons", "assets", "admin", "file_mode", "cluster")
_WRANGLER_DURO_KEYS = ("entrypoint", "durability", "data_dir", "limits", "history_retention", "admin", "file_mode",
                       "cluster")

@dataclass(frozen=True)
class Binding:
    """A Durable Object namespace binding: ``env.<name>`` -> class ``class_name``."""

    name: str
    class_name: str
    script_name: str | None = None  # cross-project binding; refused with a ConfigError for now


@dataclass(frozen=True)
class MigrationStep:
    """One entry of the ``migrations`` list, as far as it moves stored data. ``key`` is its dotted
    place in the config file (for messages); ``transferred`` holds (from, from_script, to)."""

    index: int
    key: str
    tag: str | None = None
    renamed: tuple[tuple[str, str], ...] = ()
    deleted: tuple[str, ...] = ()
    transferred: tuple[tuple[str, str, str], ...] = ()

    @property
    def moves_data(self) -> bool:
        return bool(self.renamed or self.deleted or self.transferred)


@dataclass(frozen=True)
class Limits:
    """Per-process and per-object limits. Seconds are floats; counts and sizes are ints."""

    idle_timeout: float = 70.0  # seconds an idle instance stays in memory before eviction
    hibernation_timeout: float = 10.0  # seconds before an instance with only hibernatable sockets is dropped
    max_open_databases: int = 2000  # LRU bound on open SQLite files per process
    max_queued_events: int = 1000  # per object; beyond that: "Too many requests queued."
    cpu_ms: int = 30000  # wrangler limits.cpu_ms: CPU milliseconds of one event (1..300000)
    max_request_body: int = 100 * 1024 * 1024  # one request body (413 past it)
    max_queued_bytes: int = 128 * 1024 * 1024  # per object: bodies and RPC arguments; "Too much data queued."
    max_queue_age: float = 30.0  # seconds an event may wait at a locked input gate; "Requests queued for too long."
    # The front (docs/config.md, "The front protects itself"). 0 turns header/body timeouts off.
    max_url_bytes: int = 16 * 1024  # request target; 414 past it (Cloudflare: 16 KB)
    max_header_bytes: int = 128 * 1024  # all header lines together; 431 past it (Cloudflare: 128 KB)
    max_header_count: int = 100  # header lines; 431 past it
    header_timeout: float = 20.0  # seconds from a request's first byte to the end of its headers; 408
    body_timeout: float = 30.0  # seconds a request body may go without a byte arriving; 408
    keepalive_timeout: float = 15.0  # seconds an idle keep-alive connection stays open
    max_connections: int = 0  # open HTTP/WebSocket connections; 0: derived from the open-file limit
    max_body_bytes_in_flight: int = 256 * 1024 * 1024  # request bodies being read, all together; 503 past it
    overload_retry_after: int = 1  # seconds, the Retry-After of every 503
    max_name_bytes: int = 1024  # an object name (UTF-8) for id_from_name / get_by_name
    max_log_line: int = 4096  # characters; longer log records are cut (tracebacks included)
    # seconds from SIGTERM to the end of the process, however busy it is: in-flight requests get
    # the first three quarters, closing the rest; past it the process exits at once (cli/stopping.py)
    drain_timeout: float = 40.0
    # seconds a worker retiring for a code reload (SIGHUP to `duro serve --workers N`) lets busy
    # objects finish before it resets them (Cloudflare's code_update_strategy max_delay); 0: at once
    code_update_max_delay: float = 300.0


_LIMIT_KINDS = {f.name: type(f.default) for f in dataclasses.fields(Limits)}  # float: seconds; int: counts
_ZERO_MEANS_DERIVED = frozenset({"max_connections"})
_ZERO_NOT_ALLOWED = frozenset({"drain_timeout"})  # seconds that cannot be "off"
# Upper bounds, with why: Cloudflare refuses a limits.cpu_ms above 300000 (5 minutes).
_LIMIT_MAX = {"cpu_ms": (300_000, "Cloudflare's maximum, 5 minutes of CPU per event"),
              "code_update_max_delay": (86_400, "Cloudflare's maximum max_delay, 24 hours")}


@dataclass(frozen=True)
class ProjectConfig:
    """A project's validated configuration. Paths are absolute."""

    root: pathlib.Path
    source: pathlib.Path | None
    name: str
    main: pathlib.Path
    entrypoint: str
    bindings: tuple[Binding, ...]
    sqlite_classes: frozenset[str]
    kv_classes: frozenset[str]
    vars: Mapping[str, Any] = field(hash=False)
    durability: Literal["fsync", "os"]
    limits: Limits
    data_dir: pathlib.Path | None
    history_retention: float = 30.0  # days of point-in-time-recovery history kept; 0 = history off
    crons: tuple[str, ...] = ()  # cron triggers (wrangler triggers.crons, [tool.duro] crons); checked by the app
    assets: Assets | None = None  # static assets (wrangler's ``assets`` block), if any
    # Bindings to Cloudflare services duro does not provide (KV, D1, Workers AI, ...): name -> what
    # it is. ``env.NAME`` raises an error saying so.
    unsupported_bindings: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}), hash=False)
    # The migrations list in order (tags, renames, deletes, transfers): applied to the stored data
    # once per tag by duro.storage.migrate at start or by `duro migrate`.
    migrations: tuple[MigrationStep, ...] = ()
    exports: Exports | None = field(default=None, hash=False)  # wrangler's declarative ``exports``, if used
    compatibility_flags: tuple[str, ...] = ()  # wrangler's, as written
    admin: AdminConfig = AdminConfig()  # the admin listener (config_admin.py)
    file_mode: int = 0o600  # data files duro creates; 0o640 lets the group read them
    cluster: ClusterConfig = ClusterConfig()  # cluster mode's NATS servers and node name (config_admin.py)

    def unique_key(self, class_name: str) -> str:
        """The namespace's unique key, ``"<name>-<ClassName>"`` as Miniflare derives it."""
        return f"{self.name}-{class_name}"


# --- public functions ------------------------------------------------------------------------------


def find_config_file(root: str | os.PathLike[str]) -> pathlib.Path | None:
    """The config file :func:`load_project` would read in ``root``, or None."""
    found = _find(pathlib.Path(root).resolve())
    return found[0] if found else None


def load_project(root: str | os.PathLike[str]) -> ProjectConfig:
    """Find and read the configuration of the project in ``root``."""
    root = pathlib.Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"project directory {root} does not exist or is not a directory")
    found = _find(root)
    if found is None:
        raise ConfigError(_no_config_message(root))
    path, data = found
    if path.name == "pyproject.toml":
        return _with_operator(_with_crons(_from_tool_duro(root, path, data), path, data), path, data)
    return _with_operator(_with_crons(_from_wrangler(root, path, data), path, data), path, data)


def _with_operator(cfg: ProjectConfig, path: pathlib.Path, data: Any) -> ProjectConfig:
    """Read the ``admin`` and ``cluster`` tables and ``file_mode`` of ``[tool.duro]`` or wrangler's ``duro``."""
    if path.name == "pyproject.toml":
        section, prefix = data["tool"]["duro"], "tool.duro"
    else:
        section, prefix = data.get("duro", {}), "duro"
    admin = parse_admin(section.get("admin", {}), cfg.root, path.name, f"{prefix}.admin")
    mode = parse_file_mode(section.get("file_mode", "0600"), path.name, f"{prefix}.file_mode")
    cluster = parse_cluster(section.get("cluster", {}), path.name, f"{prefix}.cluster")
    return dataclasses.replace(cfg, admin=admin, file_mode=mode, cluster=cluster)


def _with_crons(cfg: ProjectConfig, path: pathlib.Path, data: Any) -> ProjectConfig:
    """Read the cron triggers: wrangler ``triggers.crons``, or ``crons`` in ``[tool.duro]``. Only
    their shape is checked here (strings, no repeats); their syntax is the app's to check."""
    file = path.name
    if file == "pyproject.toml":
        raw, key = data["tool"]["duro"].get("crons", []), "tool.duro.crons"
    else:
        raw, key = table(data.get("triggers", {}), file, "triggers").get("crons", []), "triggers.crons"
    crons = string_list(raw, file, key)
    for i, text in enumerate(crons):
        if text in crons[:i]:
            raise ConfigError(f"{show(text)} is listed twice (also {key}[{crons.index(text)}])", file=file,
                              key=f"{key}[{i}]")
    return dataclasses.replace(cfg, crons=tuple(crons))


def apply_overrides(cfg: ProjectConfig, **kw: Any) -> ProjectConfig:
    """Return ``cfg`` with fields replaced, e.g. from CLI flags. ``None`` values are skipped; Limits
    field names (``idle_timeout=5``) replace single limits; a relative ``data_dir`` is taken against
    the current directory. Invalid values raise ConfigError keyed by the argument name."""
    kw = {k: v for k, v in kw.items() if v is not None}
    limit_changes = {k: kw.pop(k) for k in list(kw) if k in _LIMIT_KINDS}
    if "durability" in kw:
        kw["durability"] = _durability(kw["durability"], None, "durability")
    if "data_dir" in kw:
        kw["data_dir"] = pathlib.Path(kw["data_dir"]).absolute()
    kw["limits"] = _limit_values(limit_changes, kw.get("limits", cfg.limits), None, "")
    if "admin" in kw and isinstance(kw["admin"], dict):  # flags: {"port": 9000, "enabled": False}
        kw["admin"] = parse_admin(kw["admin"], pathlib.Path.cwd(), None, "", cfg.admin)
    if "file_mode" in kw and isinstance(kw["file_mode"], str):
        kw["file_mode"] = parse_file_mode(kw["file_mode"], None, "file_mode")
    return dataclasses.replace(cfg, **kw)


# --- finding and parsing files ---------------------------------------------------------------------


def _find(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]] | None:
    for name in WRANGLER_FILES:
        path = root / name
        if path.is_file():
            return path, _load(path)
    path = root / "pyproject.toml"
    if path.is_file():
        data = _load(path)
        tool = data.get("tool")
        if isinstance(tool, dict) and "duro" in tool:
            return path, data
    return None


def _load(path: pathlib.Path) -> Any:
    """Parse one config file; a syntax error names the file and the position."""
    file = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
        return tomllib.loads(text) if file.endswith(".toml") else json.loads(_strip_jsonc(text, file))
    except UnicodeDecodeError as e:
        raise ConfigError(f"not valid UTF-8 (byte {e.start})", file=file) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=file) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", file=file) from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}", file=file) from None


# A JSON string, a // comment, or a /* comment (possibly unterminated). Scanning left to right, a
# string is consumed whole from its opening quote, so "https://x" is never taken for a comment.
# The second pattern, run after comments are gone, finds trailing commas outside strings.
_JSONC_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*(?:[^*]|\*(?!/))*(?:\*/)?')
_TRAILING_COMMA = re.compile(r'"(?:[^"\\\n]|\\.)*"|,(?=\s*[}\]])')


def _strip_jsonc(text: str, file: str) -> str:
    """Blank out comments and trailing commas. Every other character and every newline stays in
    place, so JSON error positions still point into the original file."""

    def blank(m: re.Match[str]) -> str:
        t = m.group()
        if t.startswith('"'):
            return t
        if t.startswith("/*") and (len(t) < 4 or not t.endswith("*/")):
            line = text.count("\n", 0, m.start()) + 1
            col = m.start() - text.rfind("\n", 0, m.start())
            raise ConfigError(f"line {line}, column {col}: unterminated /* comment", file=file)
        return re.sub(r"[^\n]", " ", t)

    return _TRAILING_COMMA.sub(blank, _JSONC_TOKEN.sub(blank, text))


# --- the two formats -------------------------------------------------------------------------------


def _from_wrangler(root: pathlib.Path, path: pathlib.Path, data: Any) -> ProjectConfig:
    file = path.name
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be an object, not {show(data)}", file=file)
    name = project_name(data.get("name", root.name), file, "name")
    if "main" not in data:
        raise ConfigError('missing; set it to the Python entry file, e.g. "src/entry.py"', file=file, key="main")
    main = _main(root, data["main"], file, "main")
    duro = table(data.get("duro", {}), file, "duro")
    check_keys(duro, _WRANGLER_DURO_KEYS, file, "duro")

    bindings = _wrangler_bindings(table(data.get("durable_objects", {}), file, "durable_objects"), name, file)
    limits = Limits()
    wl = table(data.get("limits", {}), file, "limits")
    if "cpu_ms" in wl:
        limits = _limit_values({"cpu_ms": wl["cpu_ms"]}, limits, file, "limits")
    limits = _limits(duro.get("limits", {}), limits, file, "duro.limits")
    assets = None
    if "assets" in data:
        assets = parse_assets(root, data["assets"], file, "assets", navigation_prefers_assets(data, file))
    migrations, exports = data.get("migrations", []), None
    if "exports" in data:  # the declarative form (exports_config.py) replaces migrations
        exports = parse_exports(data["exports"], file)
        if "migrations" in data:
            raise ConfigError("exports and migrations cannot both be set: exports replaces migrations (there is "
                              "no way back); remove migrations", file=file, key="exports")
        exports.check_bindings(((b.name, b.class_name, k) for b, k in bindings), file)
        migrations = [{"new_sqlite_classes": sorted(exports.sqlite_classes),
                       "new_classes": sorted(exports.kv_classes)}]
    cfg = _build(root, path, name, main, duro, "duro", bindings, migrations, "migrations",
                 data.get("vars", {}), "vars", limits, assets)
    flags = tuple(string_list(data.get("compatibility_flags", []), file, "compatibility_flags"))
    cfg = dataclasses.replace(cfg, exports=exports, compatibility_flags=flags)
    unsupported = {n: what for n, what in _unsupported_bindings(data).items()
                   if n not in cfg.vars and all(b.name != n for b in cfg.bindings)}
    return dataclasses.replace(cfg, unsupported_bindings=types.MappingProxyType(unsupported)) if unsupported else cfg


# wrangler keys of bindings to Cloudflare services duro does not provide: key -> (what, the field
# naming the binding). A list of tables, or one table (``ai``, ``browser``).
_UNSUPPORTED_BINDING_KEYS = {
    "kv_namespaces": ("a Workers KV namespace", "binding"),
    "d1_databases": ("a D1 database", "binding"),
    "r2_buckets": ("an R2 bucket", "binding"),
    "services": ("a service binding", "binding"),
    "ai": ("the Workers AI binding", "binding"),
    "workflows": ("a Workflow", "binding"),
    "worker_loaders": ("a Worker Loader", "binding"),
    "vectorize": ("a Vectorize index", "binding"),
    "hyperdrive": ("a Hyperdrive configuration", "binding"),
    "analytics_engine_datasets": ("an Analytics Engine dataset", "binding"),
    "browser": ("the Browser Rendering binding", "binding"),
    "images": ("the Images binding", "binding"),
    "dispatch_namespaces": ("a dispatch namespace", "binding"),
    "mtls_certificates": ("an mTLS certificate", "binding"),
    "secrets_store_secrets": ("a Secrets Store secret", "binding"),
    "version_metadata": ("the version metadata binding", "binding"),
    "send_email": ("an email sending binding", "name"),
}


def _unsupported_bindings(data: dict[str, Any]) -> dict[str, str]:
    """Binding names of the wrangler file that duro cannot provide, and what each is."""
    out: dict[str, str] = {}
    for key, (what, field_name) in _UNSUPPORTED_BINDING_KEYS.items():
        entries = data.get(key)
        if isinstance(entries, dict):
            entries = [entries]
        for e in entries if isinstance(entries, list) else ():
            if isinstance(e, dict) and isinstance(e.get(field_name), str):
                out[e[field_name]] = f"{what} ({key} in the wrangler file)"
    queues = data.get("queues")
    if isinstance(queues, dict):
        for e in queues.get("producers") or ():
            if isinstance(e, dict) and isinstance(e.get("binding"), str):
                out[e["binding"]] = "a Queue producer (queues.producers in the wrangler file)"
    return out


def _wrangler_bindings(do: dict[str, Any], name: str, file: str) -> list[tuple[Binding, str]]:
    """The bindings, each with the key of its class_name (for later messages)."""
    out: list[tuple[Binding, str]] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(array(do.get("bindings", []), file, "durable_objects.bindings")):
        key = f"durable_objects.bindings[{i}]"
        raw = table(raw, file, key)
        script = raw.get("script_name")
        if script is not None and string(script, file, f"{key}.script_name") != name:
            raise ConfigError(f"bindings to another project ({show(script)}) are not supported yet; define the "
                              f"class in this project and remove script_name", file=file, key=f"{key}.script_name")
        if "environment" in raw:
            string(raw["environment"], file, f"{key}.environment")
        b = Binding(ident(raw.get("name"), file, f"{key}.name"),
                    ident(raw.get("class_name"), file, f"{key}.class_name"))
        if b.name in seen:
            raise ConfigError(f"duplicate binding name {show(b.name)} (also {seen[b.name]}); each env name may "
                              f"be bound once", file=file, key=f"{key}.name")
        seen[b.name] = key
        out.append((b, f"{key}.class_name"))
    return out


def _from_tool_duro(root: pathlib.Path, path: pathlib.Path, data: dict[str, Any]) -> ProjectConfig:
    file, prefix = path.name, "tool.duro"
    tool = table(data["tool"]["duro"], file, prefix)
    check_keys(tool, _TOOL_KEYS, file, prefix)
    if "main" not in tool:
        guess = next((c for c in _ENTRY_CANDIDATES if (root / c).is_file()), "app.py")
        raise ConfigError(f'missing; set it to the entry file relative to the project root, e.g. main = "{guess}"',
                          file=file, key=f"{prefix}.main")
    main = _main(root, tool["main"], file, f"{prefix}.main")
    project = data.get("project")
    default_name = project.get("name") if isinstance(project, dict) else None
    if "name" in tool:
        name = project_name(tool["name"], file, f"{prefix}.name")
    else:
        name = project_name(default_name if isinstance(default_name, str) else root.name, file, "project.name")
    bindings = [
        (Binding(ident(k, file, f"{prefix}.bindings.{k}"), ident(v, file, f"{prefix}.bindings.{k}")),
         f"{prefix}.bindings.{k}")
        for k, v in table(tool.get("bindings", {}), file, f"{prefix}.bindings").items()
    ]
    limits = _limits(tool.get("limits", {}), Limits(), file, f"{prefix}.limits")
    assets = parse_assets(root, tool["assets"], file, f"{prefix}.assets", True) if "assets" in tool else None
    return _build(root, path, name, main, tool, prefix, bindings, tool.get("migrations", []),
                  f"{prefix}.migrations", tool.get("vars", {}), f"{prefix}.vars", limits, assets)


def _build(root: pathlib.Path, path: pathlib.Path, name: str, main: pathlib.Path, section: dict[str, Any],
           prefix: str, keyed: list[tuple[Binding, str]], migrations: Any, mkey: str, vars_: Any, vkey: str,
           limits: Limits, assets: Assets | None = None) -> ProjectConfig:
    """The part both formats share: entrypoint, durability, data_dir, migrations, vars."""
    file = path.name
    sqlite, kv, deleted, steps = _migrations(migrations, file, mkey)
    bindings = [b for b, _ in keyed]
    for b, bkey in keyed:
        if b.class_name in deleted:
            raise ConfigError(f"Cannot apply --delete-class migration to class {b.class_name} without also "
                              f"removing the binding that references it", file=file, key=bkey)
    vars_ = table(vars_, file, vkey)
    for b in bindings:
        if b.name in vars_:
            raise ConfigError(f"{b.name} is both a var and a Durable Object binding; rename one",
                              file=file, key=f"{vkey}.{b.name}")
    if assets is not None and assets.binding is not None:
        akey = "assets.binding" if prefix != "tool.duro" else "tool.duro.assets.binding"
        if any(b.name == assets.binding for b in bindings) or assets.binding in vars_:
            raise ConfigError(f"{assets.binding} is already bound (a Durable Object binding or a var); "
                              f"give the assets binding another name", file=file, key=akey)
    sub = f"{prefix}." if prefix else ""
    data_dir = section.get("data_dir")
    if data_dir is not None:
        data_dir = root / string(data_dir, file, f"{sub}data_dir")
    return ProjectConfig(
        root=root,
        source=path,
        name=name,
        main=main,
        entrypoint=ident(section.get("entrypoint", "Default"), file, f"{sub}entrypoint"),
        bindings=tuple(bindings),
        # Unmigrated bound classes are SQLite-backed: lenient where Cloudflare requires a migration.
        sqlite_classes=frozenset(sqlite | {b.class_name for b in bindings if b.class_name not in kv}),
        kv_classes=frozenset(kv),
        vars=types.MappingProxyType(dict(vars_)),
        durability=_durability(section.get("durability", "fsync"), file, f"{sub}durability"),
        limits=limits,
        data_dir=data_dir,
        history_retention=_retention(section.get("history_retention", 30.0), file, f"{sub}history_retention"),
        assets=assets,
        migrations=steps,
    )


def _migrations(raw: Any, file: str, key: str) -> tuple[set[str], set[str], set[str], tuple[MigrationStep, ...]]:
    """Apply the ordered migration list; return (sqlite classes, kv classes, deleted classes, the
    steps in order)."""
    sqlite: set[str] = set()
    kv: set[str] = set()
    deleted: set[str] = set()
    tags: dict[str, int] = {}
    steps: list[MigrationStep] = []
    for i, m in enumerate(array(raw, file, key)):
        mk = f"{key}[{i}]"
        m = table(m, file, mk)
        tag = None
        if "tag" in m:
            tag = string(m["tag"], file, f"{mk}.tag")
            if tag in tags:
                raise ConfigError(f"duplicate tag {show(tag)} (also {key}[{tags[tag]}]); every tag must be unique",
                                  file=file, key=f"{mk}.tag")
            tags[tag] = i
        renamed: list[tuple[str, str]] = []
        transferred: list[tuple[str, str, str]] = []
        for directive, target in (("new_sqlite_classes", sqlite), ("new_classes", kv)):
            for cls in string_list(m.get(directive, []), file, f"{mk}.{directive}"):
                if cls in sqlite or cls in kv:
                    raise ConfigError(f"class {cls} already exists (created by an earlier migration)",
                                      file=file, key=f"{mk}.{directive}")
                target.add(cls)
                deleted.discard(cls)
        for j, r in enumerate(array(m.get("renamed_classes", []), file, f"{mk}.renamed_classes")):
            rk = f"{mk}.renamed_classes[{j}]"
            r = table(r, file, rk)
            src, dst = (string(r.get(k), file, f"{rk}.{k}") for k in ("from", "to"))
            _check_move_target(src, dst, sqlite | kv, renamed, transferred, file, rk)
            renamed.append((src, dst))
            for classes in (sqlite, kv):
                if src in classes:
                    classes.discard(src)
                    classes.add(dst)
            deleted.discard(dst)
        gone = string_list(m.get("deleted_classes", []), file, f"{mk}.deleted_classes")
        for cls in gone:
            sqlite.discard(cls)
            kv.discard(cls)
            deleted.add(cls)
        for j, t in enumerate(array(m.get("transferred_classes", []), file, f"{mk}.transferred_classes")):
            tk = f"{mk}.transferred_classes[{j}]"
            t = table(t, file, tk)
            src, script, dst = (string(t.get(k), file, f"{tk}.{k}") for k in ("from", "from_script", "to"))
            _check_move_target(None, dst, sqlite | kv, renamed, transferred, file, tk)
            transferred.append((src, script, dst))
            sqlite.add(dst)
            deleted.discard(dst)
        steps.append(MigrationStep(i, mk, tag, tuple(renamed), tuple(gone), tuple(transferred)))
    return sqlite, kv, deleted, tuple(steps)


def _check_move_target(src: str | None, dst: str, existing: set[str], renamed: list[tuple[str, str]],
                       transferred: list[tuple[str, str, str]], file: str, key: str) -> None:
    """A rename or transfer needs a new class name nothing else in this migration moves to."""
    if src is not None and src == dst:
        raise ConfigError(f"renames class {src} to itself; give a different \"to\"", file=file, key=key)
    if dst in existing and dst != src:
        raise ConfigError(f"class {dst} already exists (created by an earlier migration); a rename or "
                          f"transfer needs a class name that is not in use", file=file, key=f"{key}.to")
    if any(d == dst for _, d in renamed) or any(d == dst for _, _, d in transferred):
        raise ConfigError(f"class {dst} is the target of two moves in the same migration", file=file,
                          key=f"{key}.to")
    if src is not None and any(s == src for s, _ in renamed):
        raise ConfigError(f"class {src} is renamed twice in the same migration", file=file, key=f"{key}.from")


def _main(root: pathlib.Path, v: Any, file: str, key: str) -> pathlib.Path:
    path = root / string(v, file, key)
    if path.suffix != ".py":
        raise ConfigError(f"{show(v)} is not a Python file; duro runs Python entry modules (*.py)", file=file, key=key)
    if not path.is_file():
        raise ConfigError(f"entry file {path} does not exist", file=file, key=key)
    return path


def _durability(v: Any, file: str | None, key: str) -> Literal["fsync", "os"]:
    if not isinstance(v, str) or v not in _DURABILITY:
        raise ConfigError(f'must be "fsync" or "os", not {show(v)}', file=file, key=key)
    return v  # type: ignore[return-value]


def _retention(v: Any, file: str | None, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v) or v < 0:
        raise ConfigError(f"must be a number of days >= 0 (0 turns history off), not {show(v)}", file=file, key=key)
    return float(v)


def _limits(raw: Any, base: Limits, file: str, key: str) -> Limits:
    raw = table(raw, file, key)
    check_keys(raw, tuple(_LIMIT_KINDS), file, key)
    return _limit_values(raw, base, file, key)


def _limit_values(raw: dict[str, Any], base: Limits, file: str | None, key: str) -> Limits:
    changes: dict[str, Any] = {}
    for k, v in raw.items():
        lk = f"{key}.{k}" if key else k
        if _LIMIT_KINDS[k] is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise ConfigError(f"must be a number of seconds, not {show(v)}", file=file, key=lk)
            if v < 0:
                raise ConfigError(f"must be >= 0 seconds, not {v}", file=file, key=lk)
            if v == 0 and k in _ZERO_NOT_ALLOWED:
                raise ConfigError(f"must be > 0 seconds, not {v}", file=file, key=lk)
            if k in _LIMIT_MAX and v > _LIMIT_MAX[k][0]:
                top, why = _LIMIT_MAX[k]
                raise ConfigError(f"must be at most {top} seconds ({why}), not {v}", file=file, key=lk)
            changes[k] = float(v)
        else:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"must be a whole number, not {show(v)}", file=file, key=lk)
            if v < 1 and not (v == 0 and k in _ZERO_MEANS_DERIVED):
                raise ConfigError(f"must be a positive whole number (>= 1), not {v}", file=file, key=lk)
            if k in _LIMIT_MAX and v > _LIMIT_MAX[k][0]:
                top, why = _LIMIT_MAX[k]
                raise ConfigError(f"must be at most {top} ({why}), not {v}", file=file, key=lk)
            changes[k] = v
    return dataclasses.replace(base, **changes)


def _no_config_message(root: pathlib.Path) -> str:
    entry = next((c for c in _ENTRY_CANDIDATES if (root / c).is_file()), None)
    pyproject = root / "pyproject.toml"
    lines = [
        f"no duro configuration in {root}",
        f"looked for: {', '.join(WRANGLER_FILES)}, and a [tool.duro] table in pyproject.toml"
        + (" (pyproject.toml exists but has no [tool.duro])" if pyproject.is_file() else ""),
        f"found entry file {entry}; add to pyproject.toml:" if entry else "add to pyproject.toml, for example:",
        "",
        "    [tool.duro]",
        f'    main = "{entry or "app.py"}"',
        "",
        "    [tool.duro.bindings]      # env name = Durable Object class",
        '    COUNTER = "Counter"',
    ]
    return "\n".join(lines)
