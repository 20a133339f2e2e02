"""The embedded default never imports the cluster client: without ``--cluster`` nothing of nats-py
is loaded (it is an optional extra), and ``duro.cluster`` itself imports nothing of it."""

import subprocess
import sys

PROBE = """
import sys
import duro, duro.cli.main, duro.http.server, duro.runtime.catalog, duro.runtime.nodejournal, duro.cluster
import duro.api, duro.compat.workers, duro.testing
loaded = sorted(m for m in sys.modules if m == "nats" or m.startswith("nats."))
print(",".join(loaded))
"""


def test_the_embedded_path_imports_nothing_of_nats():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"loaded by the embedded path: {out.stdout.strip()}"


def test_the_probe_sees_an_import_of_nats():
    # Guard against a probe that cannot see anything: the cluster modules do load it.
    out = subprocess.run([sys.executable, "-c", "import sys, duro.cluster.leases; print('nats' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
