"""The front's pieces that need no socket: the name limit, the burst log, the log-line cap, the
connection cap, and the new limit keys in the configuration."""

import logging
import resource

import pytest

from duro.config import Limits, load_project
from duro.errors import ConfigError, InvalidInputError
from duro.http.guard import SPARE_FDS, BurstLog, FrontGuard, FrontLimits, LineCap, connection_cap
from duro.ids import MAX_NAME_BYTES, NamespaceKey


def test_a_name_past_the_limit_is_refused_with_the_limit():
    key = NamespaceKey("ns")
    assert key.id_from_name("n" * MAX_NAME_BYTES).name == "n" * MAX_NAME_BYTES
    with pytest.raises(InvalidInputError, match="longer than the limit of 1024 bytes"):
        key.id_from_name("n" * (MAX_NAME_BYTES + 1))
    # Bytes, not characters: 342 three-byte characters are 1,026 bytes.
    with pytest.raises(InvalidInputError, match="limit of 1024 bytes"):
        key.id_from_name("€" * 342)
    with pytest.raises(InvalidInputError, match="limit of 10 bytes"):
        NamespaceKey("ns", max_name_bytes=10).id_from_name("x" * 11)


def test_a_huge_name_is_refused_without_being_encoded_or_echoed():
    with pytest.raises(InvalidInputError) as err:
        NamespaceKey("ns").id_from_name("n" * 10_000_000)
    assert len(str(err.value)) < 300


def test_burst_log_logs_one_line_per_burst(caplog):
    now = [0.0]
    burst = BurstLog(logging.getLogger("t.burst"), quiet=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.burst"):
        for i in range(100):
            now[0] = i * 0.01
            burst.note("k", "overloaded")
        now[0] = 100.0
        burst.note("k", "overloaded")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "previous burst had 100" in lines[1]


def test_line_cap_cuts_message_and_traceback():
    cap = LineCap(1000)
    try:
        raise KeyError("k" * 50_000)
    except KeyError:
        rec = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "name %s", ("n" * 50_000,),
                                                 __import__("sys").exc_info())
    assert cap.filter(rec)
    text = logging.Formatter().format(rec)
    assert len(text) <= 1000 and "characters cut" in text and text.startswith("name nnn")


def test_connection_cap_leaves_descriptors_for_the_databases():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit")
    derived = connection_cap(0, 500)
    assert derived == max(16, soft - 500 - SPARE_FDS)
    assert connection_cap(10, 500) == 10  # a smaller configured cap stands
    assert connection_cap(10 ** 9, 500) == derived  # a larger one is lowered


def test_body_budget_is_all_or_nothing():
    guard = FrontGuard(FrontLimits(max_body_bytes_in_flight=10), logging.getLogger("t"))
    assert guard.reserve_body(6) and not guard.reserve_body(5) and guard.body_bytes_in_flight == 6
    guard.release_body(6)
    assert guard.reserve_body(10)


def _project(tmp_path, limits: str):
    (tmp_path / "app.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(f'[tool.duro]\nname = "p"\nmain = "app.py"\n\n[tool.duro.limits]\n{limits}\n')
    return load_project(tmp_path)


def test_front_limits_come_from_the_project_limits(tmp_path):
    cfg = _project(tmp_path, "header_timeout = 2.5\nmax_header_count = 7\nmax_connections = 0")
    front = FrontLimits.from_limits(cfg.limits)
    assert (front.header_timeout, front.max_header_count, front.max_connections) == (2.5, 7, 0)
    assert FrontLimits.from_limits(Limits()) == FrontLimits()  # the same defaults in both places


@pytest.mark.parametrize("line, message", [
    ("max_header_count = 0", "tool.duro.limits.max_header_count: must be a positive whole number (>= 1), not 0"),
    ("header_timeout = -1", "tool.duro.limits.header_timeout: must be >= 0 seconds, not -1"),
    ("max_connections = -1", "tool.duro.limits.max_connections: must be a positive whole number (>= 1), not -1"),
])
def test_limit_values_are_checked(tmp_path, line, message):
    with pytest.raises(ConfigError) as err:
        _project(tmp_path, line)
    assert str(err.value).endswith(message)
