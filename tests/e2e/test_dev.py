"""`duro dev` serves a project and restarts it when its code changes; stored data is kept."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys

import httpx

from duro.testing import free_port, wait_for

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"


def test_dev_reloads_on_code_change_and_keeps_data(tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(COUNTER, proj, ignore=shutil.ignore_patterns(".duro", "__pycache__", "test_*.py"))
    port = free_port()
    log = open(tmp_path / "dev.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "duro", "dev", str(proj), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def get(path):
        try:
            return httpx.get(url + path, timeout=2)
        except httpx.HTTPError:
            return None
    try:
        wait_for(lambda: get("/nothing"), timeout=30, what="duro dev to start")
        assert httpx.post(url + "/counters/a").json()["value"] == 1
        app = proj / "app.py"
        app.write_text(app.read_text().replace("try POST", "reloaded: POST"))
        wait_for(lambda: (r := get("/nothing")) is not None and "reloaded" in r.text, timeout=30,
                 what="the change to be served")
        assert httpx.post(url + "/counters/a").json()["value"] == 2
        assert (proj / ".duro").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()  # run_process stops and joins its server before `duro dev` exits: nothing to wait for
