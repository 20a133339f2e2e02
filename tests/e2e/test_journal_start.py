"""The node journal at start: an unusable journal directory is one clear error (no traceback), and
after a SIGKILL the objects' files are redone from the journal before anything is served."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import httpx

from duro.testing import ServerProcess

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "counter"


def test_a_journal_directory_that_cannot_be_written_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "journal").write_text("a file where the journal's folder should be")
    proc = subprocess.run([sys.executable, "-m", "duro", "serve", str(COUNTER), "--data", str(data),
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "the journal directory" in proc.stderr and "is not writable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_after_sigkill_every_acknowledged_write_is_redone_from_the_journal(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(COUNTER, data, log_path=tmp_path / "first.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for i in range(50):
                for _ in range(3):
                    assert c.post(f"/counters/k{i}").status_code == 200
    finally:
        srv.kill()  # SIGKILL: the object files were never synced, the journal was
    back = ServerProcess(COUNTER, data, log_path=tmp_path / "second.log").start()
    try:
        with httpx.Client(base_url=back.url, timeout=10) as c:
            assert [c.get(f"/counters/k{i}").json()["value"] for i in range(50)] == [3] * 50
        assert "objects redone from the journal" in back.log()
    finally:
        back.stop()
