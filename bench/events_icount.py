"""Instructions per event of ``Activation.run`` (the seam on, as in a server): run it under
callgrind twice, with 0 and with N events; the difference over N is the cost of one event, free of
the timing noise of a shared machine.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/events_icount.py 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/events_icount.py 20000

(compare the two "Collected" lines).
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "e2e" / "projects" / "observe"


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalApp(PROJECT, pathlib.Path(tmp) / "data") as app:
            act = app.runtime.activation(app.env.COUNTER.unique_key, app.env.COUNTER.id_from_name("bench"))

            async def event(instance):
                return 1

            for _ in range(1000 + n):  # the first thousand in both runs: construction, warm-up
                await act.run(event, kind="rpc", label="bench")


if __name__ == "__main__":
    import uvloop
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
