"""The systemd unit and the Dockerfile of docs/deploy.md, checked as far as this machine allows:
the unit by ``systemd-analyze verify`` and by running its ExecStart / ExecReload / KillSignal; the
Dockerfile by parsing it, running its ``pip install`` in a fresh virtualenv and its ENTRYPOINT from
there. Neither a running systemd nor a Docker daemon is assumed; what stays unchecked is listed in
the guide."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from duro.testing import free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
PROJECT = ROOT / "tests" / "e2e" / "projects" / "deploys"


def _block(lang: str) -> str:
    found = re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(found) == 1, f"docs/deploy.md should have one {lang} block, has {len(found)}"
    return found[0]


def _unit() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in _block("ini").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {line!r}"
        assert key not in current, f"{key} twice"
        current[key] = value
    return sections


def _run(cmd: list[str], log: pathlib.Path, cwd: pathlib.Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.slow
def test_the_systemd_unit_verifies_and_its_commands_run(tmp_path):
    unit = _unit()
    service = unit["Service"]
    assert unit["Unit"]["After"] == "network-online.target" and unit["Install"]["WantedBy"] == "multi-user.target"
    assert service["KillMode"] == "mixed" and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The stop timeout outlasts the drain (limits.drain_timeout, default 40 s) and the supervisor's 5 s.
    from duro.config import Limits
    assert float(service["TimeoutStopSec"]) > Limits().drain_timeout + 5

    project, data = tmp_path / "srv" / "myapp", tmp_path / "var" / "lib" / "myapp"
    shutil.copytree(PROJECT, project)
    venv = pathlib.Path(sys.prefix)  # the virtualenv running these tests has duro installed
    port, admin = free_port(), free_port()

    def moved(text: str) -> str:
        text = text.replace("/srv/myapp/.venv", str(venv)).replace("/srv/myapp", str(project))
        text = text.replace("/var/lib/myapp", str(data)).replace("0.0.0.0", "127.0.0.1")
        return text.replace("--port 8787", f"--port {port}").replace("--admin-port 9100", f"--admin-port {admin}")

    # systemd's own check of the unit, with its paths pointing at things that exist here.
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    unit_file = tmp_path / "myapp.service"
    unit_file.write_text(moved(_block("ini")))
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_file)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr

    # Its commands, as systemd would run them.
    log = tmp_path / "service.log"
    proc = _run(shlex.split(moved(service["ExecStart"])), log, pathlib.Path(moved(service["WorkingDirectory"])))
    try:
        wait_for(lambda: "reload" not in log.read_text() and _answers(port) == "v0", timeout=60,
                 interval=0.1, what="ExecStart to serve")
        (project / "version.txt").write_text("v1\n")
        reload = shlex.split(service["ExecReload"].replace("$MAINPID", str(proc.pid)))
        assert subprocess.run(reload, timeout=10).returncode == 0
        wait_for(lambda: "reload: done" in log.read_text(), timeout=90, interval=0.1, what="the reload")
        assert _answers(port) == "v1"
        started = time.monotonic()
        code = _stop(proc, getattr(signal, service["KillSignal"]), float(service["TimeoutStopSec"]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0 and time.monotonic() - started < float(service["TimeoutStopSec"]), log.read_text()[-3000:]
    assert "all workers stopped" in log.read_text()


def _answers(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text
    except httpx.HTTPError:
        return None


def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", _block("dockerfile"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.slow
def test_the_dockerfile_installs_and_serves_without_docker(tmp_path):
    steps = _dockerfile()
    ops = [op for op, _ in steps]
    assert ops[0] == "FROM" and set(ops) <= {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE",
                                             "STOPSIGNAL", "ENTRYPOINT"}, ops
    args = dict((op, rest) for op, rest in steps if op not in ("RUN", "COPY"))
    image = re.fullmatch(r"python:(\d+)\.(\d+)-slim", args["FROM"])
    assert image and (int(image[1]), int(image[2])) >= (3, 11), args["FROM"]  # requires-python >= 3.11
    assert args["USER"] != "root" and args["STOPSIGNAL"] == "SIGTERM"
    entry = json.loads(args["ENTRYPOINT"])
    assert entry[:2] == ["duro", "serve"], entry

    # / of the image, here: WORKDIR and the volume moved under tmp_path.
    image_root = tmp_path / "image"
    workdir = image_root / args["WORKDIR"].lstrip("/")
    data = image_root / args["VOLUME"].lstrip("/")
    workdir.mkdir(parents=True)
    data.mkdir(parents=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.update(dict(kv.split("=", 1) for kv in shlex.split(args["ENV"])))
    (tmp_path / "context").mkdir()
    shutil.copytree(PROJECT, tmp_path / "context", dirs_exist_ok=True)
    (tmp_path / "context" / "requirements.txt").write_text(f"duro @ {ROOT.as_uri()}\n")
    for op, rest in steps:
        if op == "COPY":
            src, dest = rest.split()
            target = workdir if dest in (".", "./") else workdir / dest
            if src == ".":
                shutil.copytree(tmp_path / "context", target, dirs_exist_ok=True)
            else:
                shutil.copy(tmp_path / "context" / src, target)
        elif op == "RUN" and rest.startswith("pip "):
            done = subprocess.run(shlex.split(rest), cwd=workdir, env=dict(os.environ, **env), capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        elif op == "RUN":
            assert rest.startswith("useradd "), rest  # the only other RUN: not run here (it would change this machine)
    assert (venv / "bin" / "duro").exists()

    port = free_port()
    cmd = [str(venv / "bin" / "duro")] + [
        str(workdir) if a == args["WORKDIR"] else str(data) if a == args["VOLUME"] else
        "127.0.0.1" if a == "0.0.0.0" else str(port) if a == args["EXPOSE"] else a for a in entry[1:]]
    log = tmp_path / "container.log"
    proc = _run(cmd, log, workdir, env)
    try:
        wait_for(lambda: _answers(port) == "v0", timeout=60, interval=0.1, what="the ENTRYPOINT to serve")
        code = _stop(proc, getattr(signal, args["STOPSIGNAL"]), 50)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log.read_text()[-3000:]
    assert any(data.iterdir()), "nothing was written to the volume"
