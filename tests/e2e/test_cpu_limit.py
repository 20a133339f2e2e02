"""The CPU limit of an event (limits.cpu_ms) on the real server: a handler spinning in Python, one
that catches the exception and spins on, and an endless SQL statement are stopped; their object is
reset and its caller gets Cloudflare's error; other objects answer meanwhile; the object works
again afterwards. SIGTERM ends the server within limits.drain_timeout even while a handler spins,
in Python or in C."""

import pathlib
import shutil
import threading
import time

import httpx
import pytest

from duro.testing import wait_for

PROJECT = pathlib.Path(__file__).resolve().parent / "projects" / "cpu"
CPU_ERROR = "ObjectResetError reset=True: Durable Object exceeded its CPU time limit and was reset."


def _call_in_thread(url):
    out = {}

    def run():
        started = time.monotonic()
        try:
            r = httpx.get(url, timeout=60)
            out["r"] = (r.status_code, r.text)
        except httpx.HTTPError as e:
            out["e"] = e
        out["seconds"] = time.monotonic() - started

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def _wait_spinning(srv, seconds=0.5):
    """Until the server has burnt ``seconds`` more CPU: the handler is spinning."""
    base = _cpu_seconds(srv.proc.pid)
    wait_for(lambda: _cpu_seconds(srv.proc.pid) > base + seconds, timeout=20, what="the handler to spin")


@pytest.mark.parametrize("method", ["spin", "stubborn", "sql_forever"])
def test_an_event_past_its_cpu_limit_is_stopped_and_its_object_reset(serve, method):
    srv = serve(PROJECT)
    get = lambda path: httpx.get(srv.url + path, timeout=30)  # noqa: E731
    before = get("/hello/a").text
    other = get("/hello/other").text
    t, out = _call_in_thread(srv.url + f"/{method}/a")
    _wait_spinning(srv, 0.1)
    # Another object answers meanwhile (once the limit has stopped the spinning event), and is
    # the same instance: it was not reset.
    assert get("/hello/other").text == other
    t.join(30)
    assert out.get("r") == (500, CPU_ERROR), (out, srv.log())
    assert out["seconds"] < 10, out  # 300 ms of CPU, a few ticks, on a shared machine
    assert "an event ran past its CPU limit" in srv.log()
    # The object works again, as a fresh instance.
    after = get("/hello/a")
    assert after.status_code == 200 and after.text != before
    assert get("/hello/other").text == other


def _project_with(tmp_path, **limits):
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root)
    conf = root / "pyproject.toml"
    text = conf.read_text().replace("cpu_ms = 300\n", "".join(f"{k} = {v}\n" for k, v in limits.items()))
    conf.write_text(text)
    return root


@pytest.mark.parametrize("method", ["spin", "spin_in_c"])
def test_sigterm_ends_the_server_within_its_drain_timeout_while_a_handler_spins(serve, tmp_path, method):
    drain = 4.0
    # A CPU limit far beyond the drain time: only the stop itself can end the spin.
    srv = serve(_project_with(tmp_path, cpu_ms=300000, drain_timeout=drain))
    assert httpx.get(srv.url + "/hello/a", timeout=30).status_code == 200
    t, out = _call_in_thread(srv.url + f"/{method}/a")
    _wait_spinning(srv)
    started = time.monotonic()
    code = srv.stop(timeout=drain + 20)
    elapsed = time.monotonic() - started
    t.join(30)
    log = (tmp_path / "server0.log").read_text()
    assert elapsed < drain + 1.5, (elapsed, log)  # the drain time, and the exit itself
    if method == "spin":
        # Python code: stopped three quarters into the drain time; then a clean shutdown.
        assert code == -15, log
        assert "Application shutdown complete" in log
    else:
        # C code never gives the loop (nor the GIL) back: the helper kills it at the drain time,
        # saying where it was stuck.
        assert code == -9, log
        assert "still not stopped 4 s after SIGTERM" in log and "spin_in_c" in log
