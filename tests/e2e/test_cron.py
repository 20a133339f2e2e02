"""``duro dev`` fires a cron trigger by hand, as ``wrangler dev --test-scheduled`` does:
``GET /__scheduled?cron=...`` (and ``/cdn-cgi/handler/scheduled``) runs ``scheduled()`` and answers
once it has finished; ``duro serve`` does not expose it."""

import pathlib
import shutil

import httpx

from duro.testing import ServerProcess, wait_for

from .dev import dev_process

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "integration" / "projects" / "crons"


def quiet_copy(tmp_path):
    """The project with a trigger that does not come due during a test (Feb 29): the runs seen
    are the ones fired by hand."""
    proj = tmp_path / "proj"
    shutil.copytree(PROJECT, proj, ignore=shutil.ignore_patterns(".duro", "__pycache__"))
    cfg = proj / "wrangler.jsonc"
    text = cfg.read_text()
    start = text.index('"crons": [')
    cfg.write_text(text[:start] + '"crons": ["0 0 29 2 *"]' + text[text.index("]", start) + 1:])
    return proj


def test_dev_scheduled_endpoint_runs_the_handler(tmp_path):
    args = ("--no-reload", "--data", str(tmp_path / "data"), "--durability", "os")
    with dev_process(quiet_copy(tmp_path), tmp_path / "dev.log", *args) as (url, _):
        def up():
            try:
                return httpx.get(url + "/", timeout=2)
            except httpx.HTTPError:
                return None
        wait_for(up, timeout=30, what="duro dev to start")
        r = httpx.get(url + "/__scheduled?cron=*/2+*+*+*+*", timeout=10)
        assert (r.status_code, r.text) == (200, "Ran scheduled event")
        # Answered after the run and its wait_until work: both writes are there.
        runs = httpx.get(url + "/", timeout=10).json()
        assert [(c, v) for c, _, v in runs] == [("*/2 * * * *", "handler"), ("*/2 * * * *", "wait_until")]
        # Any expression may be passed, with a chosen scheduled time (Python Workers' path).
        r = httpx.get(url + "/cdn-cgi/handler/scheduled", params={"cron": "1 2 3 4 5", "time": "1700000000000"},
                      timeout=10)
        assert (r.status_code, r.text) == (200, "Ran scheduled event")
        assert ["1 2 3 4 5", 1700000000000, "handler"] in httpx.get(url + "/", timeout=10).json()
        # A failing handler answers 500 with the error, and the server keeps serving.
        r = httpx.get(url + "/__scheduled", params={"cron": "15 * * * *"}, timeout=10)
        assert r.status_code == 500 and "RuntimeError: the quarter-past job failed" in r.text
        r = httpx.get(url + "/__scheduled", params={"time": "soon"}, timeout=10)
        assert r.status_code == 400
        assert httpx.get(url + "/", timeout=10).status_code == 200


def test_serve_does_not_expose_the_scheduled_endpoint(tmp_path):
    with ServerProcess(quiet_copy(tmp_path), tmp_path / "data", args=["--durability", "os"]) as server:
        r = httpx.get(server.url + "/__scheduled?cron=*+*+*+*+*", timeout=10)
        # The entrypoint's fetch answered (the list of runs), and no run happened.
        assert r.status_code == 200 and r.json() == []
