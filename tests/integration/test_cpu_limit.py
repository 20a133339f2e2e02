"""The CPU limit of an event, in-process (the real runtime and its profiling timer, on pytest's
loop in the main thread): the caller gets Cloudflare's error even when the code swallowed the
exception, a spinning ``wait_until`` task is stopped too, and the object comes back fresh."""

import asyncio
import pathlib

import pytest

from duro.errors import ObjectResetError
from duro.runtime import RuntimeLimits
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "e2e" / "projects" / "cpu"
TEXT = "Durable Object exceeded its CPU time limit and was reset."


@pytest.fixture
async def cpu(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data", limits=RuntimeLimits(cpu_ms=50)) as app:
        yield app


@pytest.mark.parametrize("method", ["spin", "swallow", "stubborn", "sql_forever"])
async def test_the_caller_gets_cloudflares_error_and_the_object_is_fresh_again(cpu, method):
    stub = cpu.env.SPIN.get_by_name("a")
    before = await stub.hello()
    with pytest.raises(ObjectResetError) as info:
        await getattr(stub, method)()
    assert str(info.value) == TEXT
    assert info.value.durable_object_reset and info.value.remote
    assert await cpu.env.SPIN.get_by_name("a").hello() != before


async def test_a_spinning_wait_until_task_is_stopped_and_its_object_reset(cpu):
    stub = cpu.env.SPIN.get_by_name("b")
    before = await stub.hello()
    assert await stub.spin_later() == "started"
    # The task spins in the loop thread: the next call is served only once it was stopped.
    async with asyncio.timeout(30):
        while (await cpu.env.SPIN.get_by_name("b").hello()) == before:
            await asyncio.sleep(0.01)
