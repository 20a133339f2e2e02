"""The modes of the files a real server creates in its data directory: every data file 0600 and
every directory 0700 by default (objects, their -wal/-shm and .history, the node journal, the
alarm index, the lock, the admin files), 0640/0750 with ``file_mode = "0640"`` (the admin token
and address stay 0600); an offline
``duro objects import`` creates its file with the same mode. Checked under the usual umask 022,
which would let SQLite and a plain open() make them 0644."""

import os
import pathlib
import shutil
import stat
import subprocess
import sys

import httpx
import pytest

SHOP = pathlib.Path(__file__).resolve().parents[1] / "browser" / "projects" / "shop"


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # the server subprocess inherits it
    yield
    os.umask(old)


def _modes(data: pathlib.Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(data):
        for name in dirnames + filenames:
            p = pathlib.Path(dirpath) / name
            out[str(p.relative_to(data)) + ("/" if p.is_dir() else "")] = stat.S_IMODE(p.lstat().st_mode)
    return out


def _exercise(serve, project, data):
    srv = serve(project, data=data)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for shop in ("north", "south"):
            assert c.post(f"/stock/{shop}?item=apple&qty=2").status_code == 200  # SQL, KV, an alarm
    modes = _modes(data)  # while it runs: -wal, -shm, the admin files, the journal
    srv.stop()
    return modes


def _check(modes, file_mode, dir_mode, *, running=True):
    kinds = {"do/shop-Shop/": 0, ".sqlite-wal": 0, ".sqlite-shm": 0, ".history": 0, "alarms.sqlite": 0,
             "journal/": 0, "duro.lock": 0, "admin.token": 0, "admin.url": 0}
    for name, mode in modes.items():
        # The admin token (and the listener's address) stay the owner's only: they are secrets.
        want = dir_mode if name.endswith("/") else 0o600 if name.startswith("admin.") else file_mode
        assert mode == want, f"{name} is {oct(mode)}, not {oct(want)}"
        for k in kinds:
            if name.endswith(k):
                kinds[k] += 1
    if running:
        assert all(kinds.values()), kinds  # every kind of file was there to check


def test_data_files_are_the_owners_only(serve, tmp_path):
    _check(_exercise(serve, SHOP, tmp_path / "data"), 0o600, 0o700)


def test_file_mode_0640_lets_the_group_read(serve, tmp_path):
    project = tmp_path / "shop"
    shutil.copytree(SHOP, project)
    toml = project / "pyproject.toml"
    toml.write_text(toml.read_text().replace('main = "app.py"', 'main = "app.py"\nfile_mode = "0640"'))
    data = tmp_path / "data"
    _check(_exercise(serve, project, data), 0o640, 0o750)

    # Offline, the CLI creates what it imports with the project's mode too.
    export = tmp_path / "north.sqlite"

    def objects(*args):
        r = subprocess.run([sys.executable, "-m", "duro", "objects", *args, "--data", str(data), "--project",
                            str(project)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    objects("export", "north", str(export))
    objects("import", str(export), "--to", "west")
    after = _modes(data)
    _check(after, 0o640, 0o750, running=False)
    assert len([n for n in after if n.endswith(".sqlite") and n.startswith("do/")]) == 3  # west is new
