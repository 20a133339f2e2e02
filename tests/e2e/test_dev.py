"""`duro dev` serves a project and restarts it when its code changes; stored data is kept."""

import pathlib
import shutil

import httpx

from duro.testing import wait_for

from .dev import dev_process

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"


def test_dev_reloads_on_code_change_and_keeps_data(tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(COUNTER, proj, ignore=shutil.ignore_patterns(".duro", "__pycache__", "test_*.py"))
    # dev_process stops it with SIGINT: run_process stops and joins its server before `duro dev`
    # exits, so there is nothing to wait for afterwards.
    with dev_process(proj, tmp_path / "dev.log") as (url, _):
        def get(path):
            try:
                return httpx.get(url + path, timeout=2)
            except httpx.HTTPError:
                return None
        wait_for(lambda: get("/nothing"), timeout=30, what="duro dev to start")
        assert httpx.post(url + "/counters/a").json()["value"] == 1
        app = proj / "app.py"
        app.write_text(app.read_text().replace("try POST", "reloaded: POST"))
        wait_for(lambda: (r := get("/nothing")) is not None and "reloaded" in r.text, timeout=30,
                 what="the change to be served")
        assert httpx.post(url + "/counters/a").json()["value"] == 2
        assert (proj / ".duro").is_dir()


def test_ctrl_c_stops_dev_at_once_and_closes_the_app(tmp_path):
    """A Ctrl-C reaches the reloader and the server (one process group); the reloader passes it on
    to the server as well. The two SIGINTs are one stop request: the server runs the app's shutdown
    (databases closed) and both exit, instead of the second forcing an exit mid-shutdown."""
    import os
    import signal
    import subprocess
    import time

    proj = tmp_path / "proj"
    shutil.copytree(COUNTER, proj, ignore=shutil.ignore_patterns(".duro", "__pycache__", "test_*.py"))
    log = tmp_path / "dev.log"
    with dev_process(proj, log) as (url, proc):
        wait_for(lambda: _get(url + "/nothing"), timeout=30, what="duro dev to start")
        assert httpx.post(url + "/counters/a").json()["value"] == 1
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:  # say where it was: the reloader, the server, or both
            raise AssertionError(f"duro dev still running 15 s after Ctrl-C; its output:\n{log.read_text()}") from None
        assert code == 0
        took = time.monotonic() - t0
    text = log.read_text()
    assert "Application shutdown complete" in text, text
    assert "Traceback" not in text, text
    assert took < 10, took


def _get(url):
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
