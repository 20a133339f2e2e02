"""How the code is put together, in numbers: module sizes, private reaches across modules, and the
path of one durable SQL increment from the socket to the fsync.

    python bench/structure.py                 # all three, as text
    python bench/structure.py --json          # the same as JSON
    python bench/structure.py --src OTHER/src # another checkout's tree (to compare before/after)

*Private reaches across modules*: an attribute ``x._name`` (one leading underscore, not a dunder)
read on anything but ``self``/``cls``, in a module where no class or function of that module defines
``_name`` (as a method, a ``self._name = …`` assignment, a slot, or a module-level name); and every
``from … import _name`` of another duro module. NamedTuple's ``_replace``/``_asdict``/… are public
API and not counted. That is a static approximation: it counts reaches
into another module's object, and ignores a module's helper classes using each other's fields.

*Hops of one request*: the same path as ``duro serve`` runs in-process: duro's ASGI front
(:class:`duro.http.AsgiFront`) is called with the request uvicorn would hand it (uvicorn's own HTTP
parsing is not duro's code and is left out): one ``GET /obj/hot`` on the benchmark project (a SQL
UPSERT counter, durability ``fsync``). A profiler
hook counts the distinct duro functions called and the files they live in, from the request's
arrival until the barrier's fdatasync ran for it.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import pathlib
import sys
import tempfile
import threading

HERE = pathlib.Path(__file__).resolve().parent


def module_sizes(src: pathlib.Path) -> list[tuple[str, int]]:
    out = []
    for p in sorted(src.rglob("*.py")):
        out.append((str(p.relative_to(src)), sum(1 for _ in p.open(encoding="utf-8"))))
    return sorted(out, key=lambda t: -t[1])


_NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})  # public API


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Constant,)) and isinstance(node.value, str) and node.value.startswith("_"):
            names.add(node.value)  # __slots__ entries
    return names


def private_reaches(src: pathlib.Path) -> list[str]:
    found = []
    for p in sorted(src.rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        own = _defined_names(tree)
        rel = str(p.relative_to(src))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                a = node.attr
                if not a.startswith("_") or a.startswith("__"):
                    continue
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                if a in own or a in _NAMEDTUPLE_API:
                    continue
                found.append(f"{rel}:{node.lineno} .{a}")
            elif isinstance(node, ast.ImportFrom) and node.module and (node.module.startswith("duro") or node.level):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{rel}:{node.lineno} import {alias.name}")
    return found


def request_hops(src: pathlib.Path) -> dict[str, object]:
    sys.path.insert(0, str(src))
    from duro.http import AsgiFront  # noqa: PLC0415
    from duro.testing import LocalApp  # noqa: PLC0415

    project = HERE / "project"
    duro_root = str(src / "duro")
    calls: set[tuple[str, str]] = set()
    order: list[tuple[str, str]] = []
    synced = threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced.set()

    def prof(frame, event, arg):  # noqa: ANN001
        if event == "call":
            f = frame.f_code.co_filename
            if f.startswith(duro_root):
                key = (os.path.relpath(f, duro_root), frame.f_code.co_qualname)
                if key not in calls:
                    calls.add(key)
                    order.append(key)

    async def request(front: "AsgiFront") -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/obj/hot", "raw_path": b"/obj/hot", "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 8787)}
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
        await front(scope, receive, send)
        return int(sent[0]["status"])  # type: ignore[call-overload]

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            async with LocalApp(project, pathlib.Path(d) / "data", durability="fsync") as app:
                front = AsgiFront(app.app)
                assert await request(front) == 200  # warm: the object exists, its file is open
                await asyncio.sleep(0.05)
                synced.clear()
                os.fdatasync = fdatasync
                threading.setprofile(prof)
                sys.setprofile(prof)
                try:
                    await request(front)
                    for _ in range(200):
                        if synced.is_set():
                            break
                        await asyncio.sleep(0.005)
                finally:
                    sys.setprofile(None)
                    threading.setprofile(None)  # type: ignore[arg-type]
                    os.fdatasync = real_fdatasync

    asyncio.run(main())
    files = sorted({f for f, _ in order})
    return {"files": len(files), "calls": len(order), "file_list": files,
            "call_list": [f"{f}:{q}" for f, q in order], "fsync_seen": synced.is_set()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=pathlib.Path, default=HERE.parent / "src", help="the src/ folder to measure")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("--no-hops", action="store_true", help="skip the in-process request trace")
    ap.add_argument("--verbose", action="store_true", help="list every reach and every call")
    args = ap.parse_args()
    src = args.src.resolve()
    sizes = module_sizes(src)
    reaches = private_reaches(src)
    result: dict[str, object] = {
        "largest": sizes[:5], "over_600": [s for s in sizes if s[1] > 600],
        "private_reaches": len(reaches),
    }
    if args.verbose:
        result["private_reach_list"] = reaches
    if not args.no_hops:
        hops = request_hops(src)
        if not args.verbose:
            hops.pop("call_list")
        result["hops"] = hops
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print("largest modules:", ", ".join(f"{n} ({c})" for n, c in sizes[:5]))
    print("modules over 600 lines:", len(result["over_600"]))  # type: ignore[arg-type]
    print("private reaches across modules:", len(reaches))
    if args.verbose:
        for r in reaches:
            print("   ", r)
    if "hops" in result:
        h = result["hops"]
        print(f"one durable SQL increment: {h['files']} files, {h['calls']} distinct duro functions"  # type: ignore[index]
              f" (fsync seen: {h['fsync_seen']})")  # type: ignore[index]
        if args.verbose:
            for c in h["call_list"]:  # type: ignore[index]
                print("   ", c)


if __name__ == "__main__":
    main()
