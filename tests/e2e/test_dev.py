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
