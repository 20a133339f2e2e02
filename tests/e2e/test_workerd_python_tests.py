"""Cloudflare's own Python Worker tests from workerd (``src/workerd/server/tests/python/``), run on
duro unchanged: only how they are started is adapted.

They are not part of this repository: set ``DURO_WORKERD=/path/to/a/workerd/checkout`` to run
them; without it every test here is skipped (CI has no network). Each test's ``worker.py`` is
copied into a fresh project with a ``wrangler.jsonc`` carrying the bindings of its ``.wd-test``
file. workerd calls a Worker's ``test`` handler; duro has none, so a small entry module serves
one request by calling it (``test(ctrl, env, ctx)``, trimmed to the arguments it takes) and
answers ``passed`` — or the test's exception, with the server log, fails here. Tests whose
``tester.js`` drives the Worker are driven by the same steps in Python.
"""

import json
import os
import pathlib
import shutil

import httpx
import pytest
import websockets.sync.client

CHECKOUT = os.environ.get("DURO_WORKERD")
pytestmark = pytest.mark.skipif(
    not CHECKOUT, reason="set DURO_WORKERD to a workerd checkout to run Cloudflare's Python tests on duro")

TESTS = "src/workerd/server/tests/python"

RUNNER = '''\
import inspect

import worker as _tested
from worker import *  # noqa: F403 - the Durable Object classes the bindings name
from workers import Response, WorkerEntrypoint

_original = getattr(_tested, "Default", None)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if isinstance(_original, type):
            test = _original(self.ctx, self.env).test
        else:
            test = _tested.test
        args = (None, self.env, self.ctx)  # ctrl, env, ctx, as workerd calls a test handler
        params = inspect.signature(test).parameters.values()
        if not any(p.kind == p.VAR_POSITIONAL for p in params):
            args = args[:len(params)]
        result = test(*args)
        if inspect.isawaitable(result):
            await result
        return Response("passed")
'''


def _project(tmp_path, name, bindings=(), vars=None, runner=True):
    src = pathlib.Path(CHECKOUT) / TESTS / name
    project = tmp_path / name
    project.mkdir()
    shutil.copy(src / "worker.py", project / "worker.py")
    config = {"name": name, "main": "worker.py", "compatibility_date": "2025-08-14",
              "compatibility_flags": ["python_workers", "python_no_global_handlers"]}
    if runner:
        (project / "runner.py").write_text(RUNNER)
        config["main"] = "runner.py"
    if bindings:
        config["durable_objects"] = {"bindings": [{"name": b, "class_name": c} for b, c in bindings]}
        config["migrations"] = [{"tag": "v1", "new_sqlite_classes": [c for _, c in bindings]}]
    if vars:
        config["vars"] = vars
    (project / "wrangler.jsonc").write_text(json.dumps(config, indent=2))
    return project


def _run_test_handler(serve, project):
    srv = serve(project)
    r = httpx.get(srv.url + "/", timeout=60)
    assert (r.status_code, r.text) == (200, "passed"), srv.log()


def test_durable_object(serve, tmp_path):
    _run_test_handler(serve, _project(tmp_path, "durable-object", [("ns", "DurableObjectExample")]))


def test_jspi(serve, tmp_path):
    _run_test_handler(serve, _project(tmp_path, "jspi"))


def test_env_param(serve, tmp_path):
    _run_test_handler(serve, _project(tmp_path, "env-param", vars={"secret": "thisisasecret"}))


def test_default_class_with_legacy_global_handlers(serve, tmp_path):
    _run_test_handler(serve, _project(tmp_path, "default-class-with-legacy-global-handlers"))


@pytest.mark.xfail(strict=True, reason="its test() starts a second asyncio event loop inside the handler "
                   "(run_until_complete); CPython refuses that while duro's loop runs in the thread")
def test_stack_switching_state(serve, tmp_path):
    _run_test_handler(serve, _project(tmp_path, "stack-switching-state"))


def test_durable_object_websocket(serve, tmp_path):
    # tester.js's steps: fetch /websocket with Upgrade, send "test", wait for the answer, close.
    srv = serve(_project(tmp_path, "durable-object-websocket", [("ns", "DurableObjectWebSocket")], runner=False))
    url = srv.url.replace("http://", "ws://") + "/websocket"
    with websockets.sync.client.connect(url, open_timeout=30) as ws:
        ws.send("test")
        assert ws.recv(timeout=30) == "hello"
    assert "Received in Python DO WS message:  test" in srv.log()
