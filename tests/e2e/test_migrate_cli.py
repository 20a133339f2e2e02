"""End-to-end: ``duro migrate`` as a subprocess on a real data directory made by ``duro serve``:
the dry run says what would move and changes nothing, a run killed with SIGKILL in the middle is
finished by the next one, and the server then finds every object under its new class."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import httpx

from duro.ids import NamespaceKey
from duro.testing import ServerProcess

APP = '''
from duro import DurableObject, Response, WorkerEntrypoint


class Base(DurableObject):
    async def add(self, by=1):
        n = (self.ctx.storage.kv.get("n") or 0) + by
        self.ctx.storage.kv.put("n", n)
        return n


class Counter(Base):
    pass


class Tally(Base):
    pass


class Junk(Base):
    pass


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        binding, name, by = request.path.strip("/").split("/")
        return Response(str(await getattr(self.env, binding).get_by_name(name).add(int(by))))
'''

V1 = '''[project]
name = "shop"
[tool.duro]
main = "app.py"
[tool.duro.bindings]
COUNTER = "Counter"
JUNK = "Junk"
[[tool.duro.migrations]]
tag = "v1"
new_sqlite_classes = ["Counter", "Junk"]
'''

V2 = '''[project]
name = "shop"
[tool.duro]
main = "app.py"
[tool.duro.bindings]
COUNTER = "Tally"
[[tool.duro.migrations]]
tag = "v1"
new_sqlite_classes = ["Counter", "Junk"]
[[tool.duro.migrations]]
tag = "v2"
renamed_classes = [{ from = "Counter", to = "Tally" }]
deleted_classes = ["Junk"]
'''

NAMES = ["apples", "pears", "plums"]
FILLER = 4000  # files added to the deleted namespace, so that removing it takes a while


def migrate(project, data, *args, **kw):
    cmd = [sys.executable, "-m", "duro", "migrate", str(project), "--data", str(data), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith("-shm")}


def make_data(tmp_path):
    proj = tmp_path / "shop"
    proj.mkdir()
    (proj / "app.py").write_text(APP)
    (proj / "pyproject.toml").write_text(V1)
    data = tmp_path / "data"
    with ServerProcess(proj, data, log_path=tmp_path / "v1.log") as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i, name in enumerate(NAMES):
                assert c.get(f"/COUNTER/{name}/{i + 1}").text == str(i + 1)
            assert c.get("/JUNK/x/1").status_code == 200
    junk = data / "do" / "shop-Junk"
    for i in range(FILLER):
        (junk / f"filler-{i}.bin").write_bytes(b"x" * 512)
    (proj / "pyproject.toml").write_text(V2)
    return proj, data


def test_dry_run_shows_the_moves_and_changes_nothing(tmp_path):
    proj, data = make_data(tmp_path)
    before = {p: snapshot(p) for p in (data / "do").iterdir()}
    proc = migrate(proj, data, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would apply v2" in proc.stdout and "dry run: nothing is changed" in proc.stdout
    assert "rename class Counter to Tally (rename shop-Counter -> shop-Tally: 3 objects" in proc.stdout
    assert "delete class Junk (delete shop-Junk: 1 object" in proc.stdout
    out = json.loads(migrate(proj, data, "--dry-run", "--json").stdout)
    assert out["pending"] == ["v2"] and out["applied"] == ["v1"]
    assert [(c["kind"], c["objects"], c["done"]) for c in out["changes"]] == [("rename", 3, False), ("delete", 1, False)]
    assert {p: snapshot(p) for p in (data / "do").iterdir()} == before
    assert "--dry-run" in migrate(proj, data, "--help").stdout


def test_refused_while_the_server_runs(tmp_path):
    proj, data = make_data(tmp_path)
    (proj / "pyproject.toml").write_text(V1)
    with ServerProcess(proj, data, log_path=tmp_path / "again.log") as srv:
        (proj / "pyproject.toml").write_text(V2)
        proc = migrate(proj, data)
        assert proc.returncode == 4
        assert f"pid {srv.proc.pid}" in proc.stderr and "Nothing was changed" in proc.stderr
    assert (data / "do" / "shop-Counter").is_dir()


def test_sigkill_in_the_middle_then_the_next_run_finishes(tmp_path):
    proj, data = make_data(tmp_path)
    counter = data / "do" / "shop-Counter"
    originals = {n: v for n, v in snapshot(counter).items() if not n.endswith("-wal")}
    tombs = data / ".deleting"
    cmd = [sys.executable, "-m", "duro", "migrate", str(proj), "--data", str(data)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tombs.is_dir() and any(tombs.iterdir())):  # the delete has begun
            assert proc.poll() is None, "finished before it could be killed: raise FILLER"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Killed mid-migration: the rename is done, the delete is not, and v2 is not recorded.
    record = json.loads((data / "migrations.json").read_text())
    assert [e["tag"] for e in record["scripts"]["shop"]] == ["v1"]
    assert not counter.exists()
    moved = data / "do" / "shop-Tally"
    assert {n: v for n, v in snapshot(moved).items() if n in originals} == originals
    assert any(tombs.iterdir())

    again = migrate(proj, data)
    assert again.returncode == 0, again.stderr
    assert "already moved (an earlier run was interrupted)" in again.stdout
    assert "applied v2" in again.stdout
    assert list(tombs.iterdir()) == []
    assert not (data / "do" / "shop-Junk").exists()
    record = json.loads((data / "migrations.json").read_text())
    assert [e["tag"] for e in record["scripts"]["shop"]] == ["v1", "v2"]
    assert "nothing to migrate" in migrate(proj, data).stdout

    key = NamespaceKey("shop-Counter")  # the IDs the objects were created with
    for name in NAMES:
        assert (moved / f"{key.id_from_name(name)}.sqlite").is_file()
    with ServerProcess(proj, data, log_path=tmp_path / "v2.log") as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i, name in enumerate(NAMES):
                assert c.get(f"/COUNTER/{name}/10").text == str(i + 1 + 10)
