"""wait_until(): any awaitable is accepted (workers.wait_until too), and closing the app does not
wait forever for work that never ends."""

import asyncio
import pathlib

from duro.testing import LocalApp

from ..waiting import wait_until

PROJECT = pathlib.Path(__file__).parent / "projects" / "review"


async def test_close_does_not_wait_forever_for_entrypoint_wait_until(tmp_path):
    app = LocalApp(PROJECT, tmp_path / "data")
    await app.__aenter__()
    assert (await app.fetch("/forever")).status == 200
    # Objects' wait_until work gets a grace period and is then cancelled; the entrypoint's too.
    await asyncio.wait_for(app.__aexit__(None, None, None), 10)


async def test_workers_wait_until_takes_any_awaitable(review):
    stub = review.env.R.get_by_name("module-wait-until")
    assert await stub.module_wait_until() == "scheduled"
    assert await wait_until(lambda: stub.get("from_coroutine"), what="the coroutine's write") == 1
    assert await wait_until(lambda: stub.get("from_task"), what="the task's write") == 1
