"""``duro serve`` and ``duro dev``: run a project's HTTP front on a real socket."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import pathlib
import sys
from typing import Any

from ..errors import ConfigError, StorageError
from .reload import Retirement, ignore_reload_signal
from .stopping import INFLIGHT_SHARE, StopWatch
from .worker import WorkerProcess
from .workers import bind, parse_size, run_supervisor

log = logging.getLogger("duro.cli")


def add_serve_args(p: argparse.ArgumentParser, *, dev: bool) -> None:
    p.add_argument("project", nargs="?", default=".", metavar="PROJECT_DIR",
                   help="folder with pyproject.toml ([tool.duro]) or wrangler.jsonc/.toml (default: current folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port to listen on (default: 8787)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="data directory for object databases "
                        + ("(default: PROJECT_DIR/.duro)" if dev else "(default: the config's data_dir, else PROJECT_DIR/.duro)"))
    p.add_argument("--durability", choices=["fsync", "os"], default=None,
                   help="fsync: a response leaves only after its writes are fsync'd (survives power loss; default); "
                        "os: after they reach the OS (survives a crash of duro, not of the machine)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="evict an object's instance after this many idle seconds (default from config: 70)")
    p.add_argument("--hibernation-timeout", type=float, default=None, metavar="SECONDS",
                   help="drop the instance of an object whose only work is hibernatable WebSockets after this many idle seconds (default 10)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="open HTTP/WebSocket connections; past it 503 + Retry-After (default from config, else "
                        "derived from the open-file limit, leaving descriptors for the databases; never above that)")
    g = p.add_argument_group(
        "admin listener",
        "The admin API (duro objects --server, duro tail), /metrics and the dashboard are served on a "
        "separate listener, never on the serving port. It needs the token the server writes to "
        "DATA/admin.token (0600) and writes its address to DATA/admin.url; `duro dashboard` prints "
        "the dashboard's URL. Defaults come from the config's [admin] table.")
    g.add_argument("--admin-host", metavar="ADDR", default=None,
                   help="address of the admin listener (default: 127.0.0.1; anything else exposes it "
                        "beyond this machine, token or not)")
    g.add_argument("--admin-port", metavar="PORT", type=int, default=None,
                   help="port of the admin listener (default: 0, a free port chosen at start; "
                        "set one for a stable dashboard URL or a Prometheus scrape target)")
    g.add_argument("--no-admin", action="store_true",
                   help="no admin listener: no admin API, no /metrics, no dashboard, no duro tail; "
                        "writing `duro objects` commands then need the server stopped")
    g.add_argument("--admin-import-dir", metavar="DIR", default=None,
                   help="the only folder whose files `duro objects import --server` may make the "
                        "server read (default: the config's admin.import_dir; none: imports refused)")
    p.add_argument("--otel", action="store_true",
                   help="OpenTelemetry traces: a span per request and per object event, exported as the "
                        "OTEL_* environment says (needs pip install 'duro[otel]'; off by default)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log verbosity (default: info)")
    if dev:
        p.add_argument("--no-reload", action="store_true", help="do not restart when project files change")
    else:
        p.add_argument("--workers", default="auto", metavar="N",
                       help="worker processes: N, or 'auto' for one per CPU core (the default). With more than "
                            "one, a supervisor starts them, each owns a share of the objects, any of them "
                            "accepts any connection, and one that dies or hangs is restarted; 1 runs one "
                            "process, as duro dev does (docs/workers.md)")
        p.add_argument("--memory-limit", default=None, metavar="SIZE",
                       help="resident memory per worker process, such as 512M or 2G (default: none). Past it the "
                            "worker's running events fail with Cloudflare's memory-limit error and it is restarted; "
                            "the other workers keep serving")
        p.add_argument("--worker-slot", default=None, help=argparse.SUPPRESS)  # set by the supervisor
        c = p.add_argument_group(
            "cluster mode",
            "Join a cluster of duro nodes on NATS JetStream (docs/cluster.md): every node serves every "
            "object, each object has one owner at a time, commits are replicated before a response "
            "leaves. Defaults come from the config's [cluster] table.")
        c.add_argument("--cluster", metavar="URLS", default=None,
                       help="the NATS servers, nats://HOST:PORT[,nats://HOST:PORT...] (nats-server >= 2.12 with "
                            "JetStream and sync_interval: always)")
        c.add_argument("--node", metavar="NAME", default=None,
                       help="this node's name, unique in the cluster (letters, digits, '-', '_')")
        c.add_argument("--nats-monitor", metavar="URLS", default=None,
                       help="the NATS servers' monitoring endpoints, http://HOST:PORT[,...] (nats-server's http "
                            "setting): read at start, and the node refuses to start on a server that does not "
                            "fsync before it acknowledges. Default: each server's host on port 8222, where an "
                            "unanswered check is only a warning")
        c.add_argument("--lease-ttl", metavar="SECONDS", default=None,
                       help="seconds a node's registration outlives its last renewal (default 3): a dead "
                            "node's objects move after about this long; choose it above the NATS servers' "
                            "leader-election time (4-10 s measured) if nodes must keep writing through one")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _run(args: argparse.Namespace) -> None:
    from ..config import apply_overrides, load_project

    cfg = load_project(args.project)
    overrides: dict[str, Any] = {}
    if args.durability:
        overrides["durability"] = args.durability
    limits: dict[str, Any] = {}
    if args.idle_timeout is not None:
        limits["idle_timeout"] = args.idle_timeout
    if args.hibernation_timeout is not None:
        limits["hibernation_timeout"] = args.hibernation_timeout
    if args.max_connections is not None:
        limits["max_connections"] = args.max_connections
    overrides.update(limits)  # Limits field names replace single limits
    admin = _admin_flags(args)
    if admin:
        overrides["admin"] = admin
    if overrides:
        cfg = apply_overrides(cfg, **overrides)
    _check_admin_port(cfg.admin, args.host, args.port)
    slot = getattr(args, "worker_slot", None)
    worker = None
    if slot is not None:
        worker = WorkerProcess.from_arg(slot, getattr(args, "memory_limit_bytes", 0))
        worker.begin()
    # One process holds its port before it starts anything: uvicorn binds only after the app's
    # start, and the admin listener started there on port 0 could otherwise be given this port.
    own = bind(args.host, args.port, listen=False) if worker is None else None
    try:
        await _serve_app(args, cfg, worker, own)
    finally:
        if own is not None:
            own.close()


def _admin_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The admin listener's settings given as flags (they replace the config's)."""
    admin: dict[str, Any] = {}
    if args.no_admin:
        admin["enabled"] = False
    if args.admin_host is not None:
        admin["host"] = args.admin_host
    if args.admin_port is not None:
        admin["port"] = args.admin_port
    if args.admin_import_dir is not None:
        admin["import_dir"] = str(pathlib.Path(args.admin_import_dir).absolute())
    return admin


def _check_admin_port(admin: Any, host: str, port: int) -> None:
    """The admin listener never shares the serving port (on one address, or on every address)."""
    wild = ("0.0.0.0", "::", "")
    if (admin.enabled and port and admin.port == port
            and (admin.host == host or admin.host in wild or host in wild)):
        raise ConfigError(f"the admin listener cannot use the serving port {port}: give --admin-port "
                          "(or [tool.duro.admin] port) another port, or 0 for a free one")


async def _serve_app(args: argparse.Namespace, cfg: Any, worker: Any, own: Any) -> None:
    from ..compat import load_app
    from ..http import AsgiFront, serve
    from ..http.guard import FrontLimits
    from ..http.websocket import websocket_handler

    cluster = None
    if not getattr(args, "dev", False):
        from .cluster import cluster_settings
        cluster = cluster_settings(args, cfg)
    app = load_app(cfg.root, data_dir=args.data, config=cfg, worker=worker.slot if worker else None)
    if getattr(args, "otel", False):
        _tracing(app, cfg.name)
    if cluster is not None:
        from .cluster import join_cluster
        await join_cluster(app, cluster)
    front: Any = AsgiFront(app, debug=getattr(args, "dev", False), websocket_handler=websocket_handler,
                           limits=FrontLimits.from_limits(cfg.limits), admin=cfg.admin)
    if getattr(args, "dev", False):
        from .scheduled import ScheduledEndpoint
        front = ScheduledEndpoint(front)  # GET /__scheduled?cron=... fires scheduled() by hand
    if worker is None:
        log.info("duro serving %s on http://%s:%d (data: %s, durability: %s%s)", cfg.root, args.host,
                 own.getsockname()[1],
                 app.runtime.data_dir, app.runtime.durability,
                 f", cluster node {cluster.node}" if cluster is not None else "")
    tune_gc()
    watch = StopWatch(cfg.limits.drain_timeout)
    retire = Retirement(app.runtime, worker.slot.index, max_delay=cfg.limits.code_update_max_delay,
                        drain_timeout=cfg.limits.drain_timeout) if worker is not None else None

    def started() -> None:
        watch.install()
        if retire is not None:
            retire.install()
        else:
            ignore_reload_signal()
        if worker is not None:
            worker.started()

    try:
        await serve(front, host=args.host, port=args.port, log_level=args.log_level,
                    drain_timeout=cfg.limits.drain_timeout * INFLIGHT_SHARE, on_started=started,
                    sock=worker.socket() if worker is not None else own,
                    on_server=(lambda server: setattr(retire, "server", server)) if retire is not None else None)
    finally:
        if retire is not None:
            await retire.close()
        watch.close()
        if worker is not None:
            worker.close()


def _tracing(app: Any, service: str) -> Any:
    from ..runtime import tracing
    try:
        return tracing.configure(app.runtime, service)
    except (ImportError, ValueError) as e:
        raise ConfigError(str(e)) from None


def tune_gc() -> None:
    """Everything loaded so far (modules, the app) lives for the whole run: keep it out of the
    cyclic collector, and collect the young generation less often, to cut GC pauses from the tail.
    The server calls this once it has loaded the app; benchmarks that run a runtime in-process too."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def run_server(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    from ..compat import ProjectImportError
    try:
        # Only uvloop's own absence picks the plain loop: an ImportError from the project must not
        # start the project a second time.
        try:
            import uvloop
            run: Any = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
            run = asyncio.run
        run(_run(args))
    except ProjectImportError as e:
        print(e.details.rstrip(), file=sys.stderr)
        print(f"duro: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"duro: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    args.dev = False
    try:
        count = _worker_count(args.workers)
        args.memory_limit_bytes = parse_size(args.memory_limit) if args.memory_limit is not None else 0
    except ValueError as e:
        print(f"duro: {e}", file=sys.stderr)
        return 2
    if args.worker_slot is not None:
        return run_server(args)
    if _cluster_wanted(args):
        # A cluster node is one process (more cores: more nodes); the default worker count yields.
        if count > 1 and str(args.workers).strip().lower() != "auto" or args.memory_limit_bytes:
            print("duro: --cluster runs one process per node; --workers and --memory-limit do not combine with it "
                  "yet (run more nodes instead)", file=sys.stderr)
            return 2
        return run_server(args)
    if count == 1 and not args.memory_limit_bytes:
        return run_server(args)
    return _supervise(args, count)


def _cluster_wanted(args: argparse.Namespace) -> bool:
    """``--cluster``/``--node``, or a ``[tool.duro.cluster]`` table in the project's config."""
    if getattr(args, "cluster", None) or getattr(args, "node", None):
        return True
    from ..config import load_project
    try:
        cfg = load_project(args.project)
    except ConfigError:
        return False  # the server reports it
    return bool(getattr(getattr(cfg, "cluster", None), "servers", None))


def _worker_count(text: str) -> int:
    if str(text).strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or n > 256:
        raise ValueError(f"--workers must be a number from 1 to 256, or auto (one per CPU core), not {text!r}")
    return n


# Options the supervisor keeps to itself; every other ``duro serve`` option reaches each worker.
_SUPERVISOR_ONLY = {"project", "data", "workers", "worker_slot", "func", "command", "dev", "memory_limit_bytes"}


def _worker_options(args: argparse.Namespace) -> list[str]:
    """The command-line options of ``args`` again, for a worker's own ``duro serve``: every option
    of the serve parser whose value is not its default (new options need no code here; each
    option's flag is its name, ``--idle-timeout`` for ``idle_timeout``)."""
    probe = argparse.ArgumentParser(add_help=False)
    add_serve_args(probe, dev=False)
    defaults = vars(probe.parse_args([]))
    out: list[str] = []
    for dest, default in defaults.items():
        value = getattr(args, dest, default)
        if dest in _SUPERVISOR_ONLY or value == default:
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:
            out.append(flag)
        else:
            out += [flag, str(value)]
    return out


def _supervise(args: argparse.Namespace, count: int) -> int:
    """The supervisor of ``count`` workers (each runs this command again, told its slot)."""
    from ..config import apply_overrides, load_project
    _setup_logging(args.log_level)
    try:
        cfg = load_project(args.project)  # a bad config fails here, once, not in N workers
    except ConfigError as e:
        print(f"duro: {e}", file=sys.stderr)
        return 2
    data = pathlib.Path(args.data) if args.data else (cfg.data_dir or cfg.root / ".duro")
    data = data.resolve()
    argv = ["serve", str(cfg.root), "--data", str(data), *_worker_options(args)]
    try:
        flags = _admin_flags(args)
        _check_admin_port(apply_overrides(cfg, admin=flags).admin if flags else cfg.admin, args.host, args.port)
        from ..storage import migrate
        return run_supervisor(argv, count, data, args.host, args.port, cpu_ms=cfg.limits.cpu_ms,
                              memory_limit=args.memory_limit_bytes, drain_timeout=cfg.limits.drain_timeout,
                              history=cfg.history_retention > 0, migrations=migrate.from_config(cfg),
                              max_delay=cfg.limits.code_update_max_delay)
    except ConfigError as e:
        print(f"duro: {e}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"duro: {e}", file=sys.stderr)
        return 1


def _dev_target(argv: list[str]) -> None:
    from .main import build_parser
    args = build_parser().parse_args(argv)
    args.dev = True
    sys.exit(run_server(args))


def cmd_dev(args: argparse.Namespace) -> int:
    root = pathlib.Path(args.project).resolve()
    if args.data is None:
        args.data = str(root / ".duro")
    argv = ["dev", str(root), "--host", args.host, "--port", str(args.port), "--data", args.data,
            "--log-level", args.log_level, "--no-reload"]
    if args.durability:
        argv += ["--durability", args.durability]
    if args.idle_timeout is not None:
        argv += ["--idle-timeout", str(args.idle_timeout)]
    if args.hibernation_timeout is not None:
        argv += ["--hibernation-timeout", str(args.hibernation_timeout)]
    if args.max_connections is not None:
        argv += ["--max-connections", str(args.max_connections)]
    if args.no_admin:
        argv += ["--no-admin"]
    if args.otel:
        argv += ["--otel"]
    if args.admin_host is not None:
        argv += ["--admin-host", args.admin_host]
    if args.admin_port is not None:
        argv += ["--admin-port", str(args.admin_port)]
    if args.admin_import_dir is not None:
        argv += ["--admin-import-dir", str(pathlib.Path(args.admin_import_dir).absolute())]
    if args.no_reload:
        args.dev = True
        return run_server(args)
    import watchfiles

    data = pathlib.Path(args.data).resolve()

    def watch_filter(change: Any, path: str) -> bool:
        p = pathlib.Path(path)
        if data in p.parents or any(part in {".venv", "__pycache__", ".git", "node_modules", ".duro"} for part in p.parts):
            return False
        return p.suffix in {".py", ".toml", ".json", ".jsonc", ".html", ".js", ".css"}

    print(f"duro dev: serving {root} on http://{args.host}:{args.port}, restarting on changes (Ctrl-C to stop)",
          file=sys.stderr)
    watchfiles.run_process(root, target=_dev_target, args=(argv,), watch_filter=watch_filter,
                           sigint_timeout=10, sigkill_timeout=5)
    return 0
