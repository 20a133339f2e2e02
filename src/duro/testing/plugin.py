"""duro's pytest plugin, loaded by the ``pytest11`` entry point ``duro`` wherever duro is installed.

Fixtures, all prefixed ``duro_`` so they never shadow a project's own: ``duro_project`` (the project
folder), ``duro_clock`` (a :class:`~duro.clock.VirtualClock`), ``duro_app`` (the project running
in-process on that clock, with its data in the test's ``tmp_path``: one isolated app per test),
``duro_env``, ``duro_websocket`` (opens in-process WebSockets, closed after the test) and
``duro_run_in_object`` (runs a function inside an object, as one of its events). Documented in
docs/testing.md. Importing this module must stay cheap: duro itself is imported by the fixtures.
"""

from __future__ import annotations

import inspect
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures below then say what to install
    pytest_asyncio = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from duro.clock import VirtualClock
    from duro.testing import LocalApp
    from duro.testing.websocket import LocalWebSocket

__all__ = ["run_in_object"]

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("duro_project", "the duro project folder duro_app runs, relative to the rootdir "
                                  "(default: the rootdir itself)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "duro_project(path): the project folder duro_app runs for this test "
                                       "(relative to the test file's folder)")


@pytest.fixture
def duro_project(request: pytest.FixtureRequest) -> pathlib.Path:
    """The project folder: a ``duro_project("path")`` marker (relative to the test file), else the
    ``duro_project`` ini option (relative to the rootdir), else the rootdir."""
    marker = request.node.get_closest_marker("duro_project")
    if marker is not None:
        if len(marker.args) != 1:
            raise pytest.UsageError("@pytest.mark.duro_project takes one argument, the project folder")
        folder = (request.path.parent / str(marker.args[0])).resolve()
    else:
        ini = request.config.getini("duro_project")
        folder = (request.config.rootpath / ini).resolve() if ini else request.config.rootpath
    if not folder.is_dir():
        raise pytest.UsageError(f"duro_project: {folder} is not a folder")
    return folder


@pytest.fixture
def duro_clock() -> "VirtualClock":
    """A virtual clock: time moves only with ``await duro_app.advance(seconds)`` (alarms and
    schedules that come due run during it) or ``await duro_clock.advance(seconds)``."""
    from duro.clock import VirtualClock
    return VirtualClock()


@pytest.fixture
def duro_data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where ``duro_app`` keeps its objects' databases: a fresh folder per test."""
    return tmp_path / "duro-data"


async def run_in_object(stub: Any, fn: Callable[..., T | Awaitable[T]]) -> T:
    """Run ``fn(instance, ctx)`` inside the object ``stub`` points at, as one event of its own: it
    waits its turn at the input gate, its writes commit at the end of the turn, and its result
    is returned once they are durable (Cloudflare's ``runInDurableObject``). ``fn`` may be sync
    or async; what it returns or raises is what the call returns or raises."""
    deliver = getattr(stub, "_deliver", None)
    if deliver is None:
        raise TypeError(f"run_in_object() takes a stub (env.NS.get_by_name(...)), not {type(stub).__name__}")

    async def event(instance: Any) -> T:
        result = fn(instance, instance.ctx)
        return await result if inspect.isawaitable(result) else result  # type: ignore[no-any-return]

    return await deliver(event, kind="other", label=getattr(fn, "__name__", "run_in_object"))  # type: ignore[no-any-return]


@pytest.fixture
def duro_run_in_object() -> Callable[..., Awaitable[Any]]:
    """``await duro_run_in_object(stub, fn)``: see :func:`run_in_object`."""
    return run_in_object


if pytest_asyncio is not None:
    @pytest_asyncio.fixture
    async def duro_app(duro_project: pathlib.Path, duro_data_dir: pathlib.Path,
                       duro_clock: "VirtualClock") -> AsyncIterator["LocalApp"]:
        """The project running in-process on ``duro_clock`` (``durability="os"``: no fsync), started
        before the test and closed after it. ``duro_app.env``, ``await duro_app.fetch(path)``,
        ``await duro_app.advance(seconds)``."""
        from duro.testing import LocalApp
        async with LocalApp(duro_project, duro_data_dir, clock=duro_clock, durability="os") as app:
            yield app

    @pytest_asyncio.fixture
    async def duro_websocket(duro_app: "LocalApp") -> AsyncIterator[Callable[..., Awaitable["LocalWebSocket"]]]:
        """``ws = await duro_websocket("/path")`` opens an in-process WebSocket through the real
        front; any still open are closed after the test."""
        opened: list[LocalWebSocket] = []

        async def connect(path: str, headers: list[tuple[str, str]] | None = None) -> "LocalWebSocket":
            ws = await duro_app.websocket(path, headers)
            opened.append(ws)
            return ws
        yield connect
        for ws in opened:
            await ws.close()  # a no-op wait for one already closed
else:  # pragma: no cover
    @pytest.fixture
    def duro_app() -> None:
        raise pytest.UsageError("the duro_app fixture needs pytest-asyncio: pip install pytest-asyncio")

    @pytest.fixture
    def duro_websocket() -> None:
        raise pytest.UsageError("the duro_websocket fixture needs pytest-asyncio: pip install pytest-asyncio")


@pytest.fixture
def duro_env(duro_app: "LocalApp") -> Any:
    """The project's ``env`` (``duro_env.COUNTER.get_by_name("a")``)."""
    return duro_app.env
