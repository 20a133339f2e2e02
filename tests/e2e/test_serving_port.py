"""One process holds its serving port before it starts the app. uvicorn binds only after the app's
start, where the admin listener starts on port 0: the system could give the admin listener the very
port the server was told to serve on, and the project's requests were then answered by the admin
("no such admin path"). It happened once in a full test run.

The test makes it certain rather than rare: in a network namespace of its own whose ephemeral range
is two ports, the serving port being the one the system hands out first."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COUNTER = ROOT / "examples" / "counter"

# Runs inside the namespace: loopback up, ephemeral ports 40000-40001 while the server starts, told
# to serve on the one bind() hands out first; then the usual range, so that clients can connect.
HELPER = r'''
import fcntl, json, pathlib, socket, struct, subprocess, sys, time

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
RANGE = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range")
RANGE.write_text("40000 40001")
with socket.socket() as s:  # the port bind() hands out first (the kernel's parity preference)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    first = s.getsockname()[1]
project, data = sys.argv[1], pathlib.Path(sys.argv[2])
proc = subprocess.Popen([sys.executable, "-m", "duro", "serve", project, "--port", str(first), "--workers", "1",
                         "--data", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
try:
    deadline = time.monotonic() + 60
    while not (data / "admin.url").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    admin = (data / "admin.url").read_text().strip() if (data / "admin.url").exists() else None
    RANGE.write_text("32768 60999")
    reply = None
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", first), timeout=10) as c:
                c.sendall(b"POST /counters/apples HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                reply = b""
                while chunk := c.recv(65536):
                    reply += chunk
            break
        except OSError:
            time.sleep(0.05)
finally:
    proc.terminate()
    err = proc.communicate(timeout=30)[1]
print(json.dumps({"serving": first, "admin": admin, "reply": reply.decode(errors="replace") if reply is not None else None,
                  "stderr": err[-2000:]}))
'''


def test_the_admin_listener_is_never_given_the_serving_port(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare for a network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    run = subprocess.run(["unshare", "--net", sys.executable, "-c", HELPER, str(COUNTER), str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["admin"] == f"http://127.0.0.1:{40000 + 40001 - out['serving']}", out
    assert out["reply"] is not None and out["reply"].startswith("HTTP/1.1 200"), out
    assert '"value": 1' in out["reply"] or '"value":1' in out["reply"], out
