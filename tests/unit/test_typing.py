"""The public API is typed, and the examples type-check against it (mypy, as CI runs it).

The public modules are checked with every function annotated (``--disallow-untyped-defs``);
the examples with their function bodies checked (``--check-untyped-defs``), each example on its
own (every one has an ``app.py``). The mypy cache goes to a temporary folder.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "duro"

PUBLIC = ["__init__.py", "api", "compat/workers.py", "compat/pyodide_ffi.py", "compat/pyodide_pkg.py",
          "compat/js.py", "compat/asgi.py", "compat/wsgi.py", "ids.py", "errors.py", "testing"]
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/app.py"))

pytest.importorskip("mypy")


def _mypy(args: list[str], cwd: pathlib.Path, cache: pathlib.Path,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary",
                           "--hide-error-context", "--show-error-codes", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One mypy cache for the module: duro is analysed once, not once per example."""
    return tmp_path_factory.mktemp("mypy-cache")


def test_py_typed_is_shipped() -> None:
    assert (SRC / "py.typed").is_file()


@pytest.mark.timeout(300)
def test_public_api_is_fully_annotated_and_type_checks(cache: pathlib.Path) -> None:
    r = _mypy(["--disallow-untyped-defs", "--disallow-incomplete-defs", *(str(SRC / p) for p in PUBLIC)],
              ROOT, cache)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_type_checks(example: pathlib.Path, cache: pathlib.Path) -> None:
    r = _mypy(["--check-untyped-defs", "app.py"], example, cache)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_a_wrong_call_into_the_api(tmp_path: pathlib.Path, cache: pathlib.Path) -> None:
    """The check has teeth: code that misuses the typed API fails it."""
    (tmp_path / "app.py").write_text(
        "from duro import DurableObject, Response\n"
        "class C(DurableObject):\n"
        "    async def fetch(self, request):\n"
        "        self.ctx.storage.set_alarm('soon', 1, 2, 3)\n"
        "        return Response(status='two hundred')\n")
    r = _mypy(["--check-untyped-defs", "app.py"], tmp_path, cache)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "set_alarm" in r.stdout and "Response" in r.stdout, r.stdout


def test_cloudflare_code_type_checks_through_the_workers_stub(tmp_path: pathlib.Path, cache: pathlib.Path) -> None:
    """docs/testing.md's recipe: a one-line ``workers.pyi`` lets mypy check ``from workers import ...``."""
    (tmp_path / "typings").mkdir()
    (tmp_path / "typings" / "workers.pyi").write_text(
        "from duro.compat.workers import *\nfrom duro.compat.workers import __all__ as __all__\n")
    (tmp_path / "entry.py").write_text(
        "from workers import DurableObject, Response\n"
        "class C(DurableObject):\n"
        "    async def fetch(self, request):\n"
        "        when = await self.ctx.storage.get_alarm()\n"
        "        return Response(str(when), status='x')\n")
    r = _mypy(["--check-untyped-defs", "--config-file", "/dev/null", "entry.py"], tmp_path, cache,
              env={"MYPYPATH": str(tmp_path / "typings")})
    assert r.returncode == 1 and 'Argument "status" to "Response"' in r.stdout, r.stdout + r.stderr
