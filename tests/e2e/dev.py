"""``duro dev`` as a subprocess for the e2e tests: started in its own session (it runs a reloader
and a server process), stopped with SIGINT as a user's Ctrl-C would, then SIGKILL if it hangs."""

import contextlib
import os
import pathlib
import signal
import subprocess
import sys

from duro.testing import free_port


@contextlib.contextmanager
def dev_process(project: pathlib.Path, log_path: pathlib.Path, *args: str):
    """Yield ``(url, proc)`` of ``duro dev PROJECT --port N ARGS``; output goes to ``log_path``."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "duro", "dev", str(project), "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield f"http://127.0.0.1:{port}", proc
        finally:
            with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
