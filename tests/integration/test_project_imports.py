"""Loading a project: its own modules never stand in for duro's dependencies (even with the
project's folder as the current directory), a failing import is reported once with the project's
traceback and one summary line, and Python 3.12 syntax in a project runs on 3.12+."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import httpx
import pytest

from duro.compat import ProjectImportError
from duro.testing import LocalApp, ServerProcess

PROJECTS = pathlib.Path(__file__).parent / "projects"


def test_stub_modules_named_like_duros_dependencies_do_not_break_the_server(tmp_path, monkeypatch):
    # Served from the project's folder, as users run it; the stubs sit next to the entry module
    # (src/), which goes first on sys.path when the project loads.
    monkeypatch.chdir(PROJECTS / "shadow")
    srv = ServerProcess(PROJECTS / "shadow", tmp_path / "data", log_path=tmp_path / "server.log")
    with srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/").json() == ["hello notes"]
            assert c.get("/").json() == ["hello notes", "hello notes"]
    log = srv.log()
    assert "was imported" not in log and "Traceback" not in log
    assert "uvicorn.py" in log and "websockets.py" in log and "gets duro's, not the project's file" in log


async def test_stub_modules_in_process(tmp_path):
    async with LocalApp(PROJECTS / "shadow", tmp_path / "data") as app:
        assert await (await app.fetch("/")).json() == ["hello notes"]
    import uvicorn
    import websockets
    assert "site-packages" in uvicorn.__file__ and "site-packages" in websockets.__file__


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failing_import_is_reported_once_and_serve_exits_non_zero(tmp_path, workers):
    """One process, or a supervisor whose first worker cannot start: one error, then the server
    exits (the supervisor does not start the other workers, nor restart this one forever)."""
    proc = subprocess.run([sys.executable, "-m", "duro", "serve", str(PROJECTS / "failing"),
                           "--data", str(tmp_path / "data"), "--port", "0", "--workers", workers],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert err.count("Traceback (most recent call last)") == 1, err
    # an ImportError from the project used to start it a second time (and print it twice)
    assert err.count("import a_package_that_is_not_installed") == 1, err
    assert 'File "' + str(PROJECTS / "failing" / "src" / "settings.py") + '", line 2' in err
    assert "/duro/" not in err.split("Traceback", 1)[1].split("duro: ")[0], err  # no frames of duro's
    said = ("duro: cannot import the project's entry module src/entry.py: "
            "ModuleNotFoundError: No module named 'a_package_that_is_not_installed'")
    if workers == "1":
        assert err.strip().splitlines()[-1] == said, err
    else:  # then the supervisor's own line: which worker could not start, and that it stops
        assert err.count(said) == 1 and "worker 0 (pid" in err and "could not start" in err, err


def test_a_failing_import_in_process_is_one_error_with_the_cause(tmp_path):
    with pytest.raises(ProjectImportError) as info:
        LocalApp(PROJECTS / "failing", tmp_path / "data")
    e = info.value
    assert isinstance(e.__cause__, ModuleNotFoundError)
    assert e.summary == "src/entry.py: ModuleNotFoundError: No module named 'a_package_that_is_not_installed'"
    assert "settings.py" in e.details and "import settings" in e.details
    assert "entry" not in sys.modules or "failing" not in str(getattr(sys.modules["entry"], "__file__", ""))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 syntax needs Python 3.12+")
async def test_python_312_syntax_in_a_project(tmp_path):
    async with LocalApp(PROJECTS / "py312", tmp_path / "data") as app:
        assert await (await app.fetch("/a")).json() == {"items": ["a"], "first": "a", "alias": "Item"}
        assert await (await app.fetch("/b")).json() == {"items": ["a", "b"], "first": "a", "alias": "Item"}
