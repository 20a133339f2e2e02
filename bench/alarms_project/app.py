"""For bench/alarms_server.py: objects that each arm one alarm; each firing appends its lateness
(ms after the due time) to a file of its worker process, read by the bench afterwards."""

import os
import time

from duro import DurableObject, Response, WorkerEntrypoint

_OUT = None


def _record(line: str) -> None:
    global _OUT
    if _OUT is None:
        folder = os.environ["DURO_BENCH_ALARMS_OUT"]
        _OUT = open(os.path.join(folder, f"lateness-{os.getpid()}.txt"), "a", buffering=1)
    _OUT.write(line)


class Timer(DurableObject):
    async def arm(self, when: int) -> None:
        await self.ctx.storage.put("due", when)
        await self.ctx.storage.set_alarm(when)

    async def alarm(self, info=None) -> None:
        due = await self.ctx.storage.get("due")
        _record(f"{self.ctx.id.name} {time.time() * 1000 - due:.3f}\n")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        # /arm/<name>?<due ms>
        name = request.path.rsplit("/", 1)[-1]
        await self.env.TIMER.get_by_name(name).arm(int(request.query))
        return Response("ok")
