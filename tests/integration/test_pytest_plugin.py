"""The pytest plugin as a user meets it: the project and the test files of docs/testing.md ("The
pytest plugin") are written into a fresh folder exactly as the doc shows them, and pytest runs
there in a subprocess, with the plugin loaded by its entry point (no conftest). Then the same
fixtures are made to fail a test, so that a passing run means something."""

from __future__ import annotations

import pathlib
import re

import pytest

pytest_plugins = ["pytester"]

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def doc_files() -> dict[str, str]:
    """``{file name: text}`` of the code blocks in the plugin section that start with ``# <name>``."""
    text = DOC.read_text()
    start = text.index("## The pytest plugin")
    section = text[start:text.index("\n## ", start + 1)]
    files = {}
    for lang, body in re.findall(r"```(python|toml)\n(.*?)```", section, re.S):
        first = body.splitlines()[0]
        m = re.fullmatch(r"# (\S+\.(?:py|toml))", first)
        if m:
            files[m.group(1)] = body
    return files


def write_project(pytester: pytest.Pytester, extra: dict[str, str] | None = None) -> None:
    files = doc_files()
    for name, body in {**files, **(extra or {})}.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)


def test_the_doc_shows_each_fixture():
    files = doc_files()
    assert {"pyproject.toml", "app.py", "tests/test_isolated.py", "tests/test_time.py",
            "tests/test_sockets.py", "tests/test_inside.py"} <= set(files)
    tests = "".join(v for k, v in files.items() if k.startswith("tests/"))
    for fixture in ("duro_app", "duro_env", "duro_clock", "duro_websocket", "duro_run_in_object"):
        assert fixture in tests


def test_every_example_in_the_doc_passes(pytester: pytest.Pytester):
    write_project(pytester)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=6)


WRONG = '''
import pytest

async def test_storage_is_real(duro_env):
    assert await duro_env.COUNTER.get_by_name("a").increment() == 2

async def test_time_has_not_moved(duro_app, duro_clock):
    reminder = duro_app.env.REMINDER.get_by_name("r")
    await reminder.alarm_at(duro_clock.now_ms() + 60_000)
    await duro_app.advance(30)
    assert (await reminder.state())["alarm"] is True

async def test_the_socket_answers(duro_websocket):
    ws = await duro_websocket("/echo/room1")
    await ws.send("hi")
    assert await ws.receive() == "hi"

async def test_inside_sees_the_write(duro_env, duro_run_in_object):
    counter = duro_env.COUNTER.get_by_name("x")
    await counter.increment(by=41)
    assert await duro_run_in_object(counter, lambda instance, ctx: ctx.storage.kv.get("n")) == 42
'''


def test_the_fixtures_can_fail_a_test(pytester: pytest.Pytester):
    write_project(pytester, {"tests/test_wrong.py": WRONG})
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "tests/test_wrong.py", timeout=240)
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    assert "assert 1 == 2" in out                 # the counter really counted from an empty store
    assert "assert None is True" in out           # the alarm did not fire before its time
    assert "AssertionError: assert 'echo: hi' == 'hi'" in out
    assert "assert 41 == 42" in out


def test_the_marker_picks_another_project(pytester: pytest.Pytester):
    write_project(pytester)
    other = pytester.path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[tool.duro]\nmain = "app.py"\n[tool.duro.bindings]\nONLY = "Only"\n')
    (other / "app.py").write_text("from duro import DurableObject\n\nclass Only(DurableObject):\n"
                                  "    async def who(self):\n        return 'other'\n")
    pytester.makepyfile(test_marker='''
import pytest

@pytest.mark.duro_project("other")
async def test_other(duro_env):
    assert await duro_env.ONLY.get_by_name("a").who() == "other"
''')
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "test_marker.py", timeout=240)
    result.assert_outcomes(passed=1)
