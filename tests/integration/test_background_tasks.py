"""Every long-lived background task of the runtime has one owner: a task that crashes is logged
with its traceback when it happens, shown in ``Runtime.statistics()``, and raised again when the
runtime closes, after everything else was closed. It is never lost."""

import logging
import pathlib

import pytest

from duro.clock import VirtualClock
from duro.runtime.pruning import HistoryPruner
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "alarms"


async def test_a_crashed_pruner_is_logged_shown_and_raised_at_close(tmp_path, caplog, monkeypatch):
    clock = VirtualClock()
    local = LocalApp(PROJECT, tmp_path / "data", clock=clock)
    await local.__aenter__()
    runtime = local.runtime
    try:
        assert "duro-history-pruner" in runtime.statistics()["tasks"]["running"]

        async def broken_pass(self):
            # A bug, not a storage failure (those are counted per object and the pass goes on).
            raise RuntimeError("a bug in the pruner")

        monkeypatch.setattr(HistoryPruner, "prune_all", broken_pass)
        with caplog.at_level(logging.ERROR, logger="duro.runtime"):
            await clock.advance(3601)  # the next hourly pass
            await runtime.alarms.wait_idle()
        stats = runtime.statistics()["tasks"]
        assert stats["crashed"] == ["duro-history-pruner"]
        assert "duro-history-pruner" not in stats["running"]
        [record] = [r for r in caplog.records if "duro-history-pruner crashed" in r.getMessage()]
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError  # with its traceback
        # The rest of the runtime keeps working.
        a = local.env.ALARMED.get_by_name("still-works")
        t = clock.now_ms() + 1000
        await a.set(t)
        await clock.advance(1)
        await runtime.alarms.wait_idle()
        assert [e["scheduled"] for e in await a.log()] == [t]
    finally:
        with pytest.raises(RuntimeError, match="a bug in the pruner"):
            await local.__aexit__(None, None, None)
    assert not runtime.started
    async with LocalApp(PROJECT, tmp_path / "data", clock=VirtualClock()):
        pass  # closed all the same: the data directory was released
