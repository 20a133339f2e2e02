"""The real server on a real socket: bad HTTP, user errors, the data-directory lock, bad config, the
admin endpoint's token."""

import pathlib
import subprocess
import sys

import httpx
import pytest

from duro.testing import ServerProcess

from .net import exchange

ROOT = pathlib.Path(__file__).resolve().parents[2]
GATES = ROOT / "tests" / "integration" / "projects" / "gates"
COUNTER = ROOT / "examples" / "counter"
REVIEW = ROOT / "tests" / "integration" / "projects" / "review"


def test_malformed_http_gets_400_and_server_keeps_serving(serve):
    srv = serve(COUNTER)
    assert exchange(srv.port, b"THIS IS NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert httpx.post(srv.url + "/counters/a").json()["value"] == 1


def test_user_exception_is_500_and_logged(serve):
    srv = serve(GATES)
    r = httpx.get(srv.url + "/boom")
    assert r.status_code == 500 and "entrypoint exploded" not in r.text  # no internals leak by default
    assert httpx.get(srv.url + "/fine").text == "1"
    assert "AppError: entrypoint exploded" in srv.log()


def test_oversized_body_is_refused(serve, tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "app.py").write_text(
        "from duro import WorkerEntrypoint, Response\n"
        "class Default(WorkerEntrypoint):\n"
        "    async def fetch(self, request):\n"
        "        return Response(str(len(await request.bytes())))\n")
    (proj / "pyproject.toml").write_text(
        '[tool.duro]\nmain = "app.py"\n[tool.duro.limits]\nmax_request_body = 1000\n')
    srv = serve(proj)
    assert httpx.post(srv.url, content=b"x" * 1000).text == "1000"
    r = httpx.post(srv.url, content=b"x" * 5000)
    assert r.status_code == 413 and "1000 bytes" in r.text


def test_second_server_on_same_data_dir_is_refused(serve, tmp_path):
    data = tmp_path / "shared"
    serve(COUNTER, data=data)
    other = ServerProcess(COUNTER, data, log_path=tmp_path / "other.log")
    with pytest.raises(RuntimeError, match="in use by another duro process"):
        other.start(timeout=20)


def test_config_error_names_file_and_key(tmp_path):
    proj = tmp_path / "bad"
    proj.mkdir()
    (proj / "app.py").write_text("")
    (proj / "pyproject.toml").write_text('[tool.duro]\nmain = "app.py"\ndurability = "fast"\n')
    r = subprocess.run([sys.executable, "-m", "duro", "serve", str(proj), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pyproject.toml" in r.stderr and "tool.duro.durability" in r.stderr and "fast" in r.stderr


def test_every_command_has_help():
    for cmd in (["--help"], ["serve", "--help"], ["dev", "--help"], ["tail", "--help"], ["dashboard", "--help"]):
        r = subprocess.run([sys.executable, "-m", "duro", *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: duro" in r.stdout


def test_admin_needs_the_token(serve):
    srv = serve(REVIEW)
    assert httpx.post(srv.admin_url + "/__duro/admin/ping").status_code == 403
    assert httpx.post(srv.admin_url + "/__duro/admin/ping", headers={"authorization": "Bearer nope"}).status_code == 403
    token = (pathlib.Path(srv.data_dir) / "admin.token").read_text()
    r = httpx.post(srv.admin_url + "/__duro/admin/ping", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["ok"] is True
