"""An application: the runtime wired to a project's classes, bindings and entrypoint.

``App`` registers every bound ``DurableObject`` class with the runtime, builds ``env``, runs the
project's ``WorkerEntrypoint`` for each request and its ``scheduled`` handler for each cron trigger
(the scheduler is ``runtime/cron.py``). It knows nothing of sockets or of config files.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core.cron import CronExpression, CronSyntaxError
from ..errors import ConfigError, UnsupportedBindingError
from ..runtime import Activation, Runtime
from ..runtime import portal
from ..runtime.cron import CronScheduler
from .forwarding import install_forwarding
from ..runtime.tasks import drain_tasks
from .fetch import Request, Response
from .namespace import DurableObjectNamespace, call_handler, find_handler, fit_args
from .objects import DurableObject, ExecutionContext, WorkerEntrypoint, construct
from .outbound import entry_runtime, sockets_for
from .scheduled import find_scheduled_handler, run_scheduled
from .schedules import install as install_schedules

WAIT_UNTIL_GRACE_S = 5.0  # what the runtime gives objects' wait_until work at shutdown

__all__ = ["App", "Env", "ObjectClass"]

log = logging.getLogger("duro.app")


class Env:
    """``env``: one attribute per binding and variable. Also readable as ``env["NAME"]``."""

    def __init__(self, values: Mapping[str, Any], unsupported: Mapping[str, str] | None = None) -> None:
        self.__dict__.update(values)
        self._unsupported = dict(unsupported or {})  # name -> what it is, for the error

    def __getattr__(self, name: str) -> Any:
        what = self.__dict__.get("_unsupported", {}).get(name)
        if what is not None:
            raise UnsupportedBindingError(
                f"env.{name} is {what}, a Cloudflare service duro does not provide "
                f"(see docs/cloudflare.md#not-implemented)")
        raise AttributeError(f"'Env' object has no attribute {name!r}")

    def __getitem__(self, name: str) -> Any:
        return self.__dict__[name]

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__

    def __repr__(self) -> str:
        return f"Env({', '.join(sorted(k for k in self.__dict__ if k != '_unsupported'))})"


@dataclass(frozen=True)
class ObjectClass:
    binding: str
    cls: type
    unique_key: str


@dataclass
class App:
    """The runtime plus the project's classes. ``start()`` before use, ``close()`` after."""

    runtime: Runtime
    objects: list[ObjectClass]
    entrypoint: Any = None  # a WorkerEntrypoint subclass, or a module-level fetch function
    vars: Mapping[str, Any] = field(default_factory=dict)
    namespaces: dict[str, DurableObjectNamespace] = field(default_factory=dict)
    crons: tuple[str, ...] = ()  # the cron triggers (wrangler ``triggers.crons``), fired in UTC
    unsupported: Mapping[str, str] = field(default_factory=dict)  # bindings duro cannot provide -> what
    _tasks: set["asyncio.Task[Any]"] = field(default_factory=set)

    def __post_init__(self) -> None:
        values: dict[str, Any] = dict(self.vars)
        for oc in self.objects:
            if not (isinstance(oc.cls, type) and issubclass(oc.cls, DurableObject)) and not _looks_like_object(oc.cls):
                raise ConfigError(f"class {oc.cls.__name__} bound to {oc.binding} is not a DurableObject subclass",
                                  key=f"bindings.{oc.binding}")
            ns = self.namespaces.get(oc.unique_key)
            if ns is None:
                ns = DurableObjectNamespace(self.runtime, oc.unique_key, oc.cls.__name__, oc.binding)
                self.namespaces[oc.unique_key] = ns
                self.runtime.register(oc.unique_key, oc.cls.__name__, self._factory(oc.cls), oc.cls)
            values[oc.binding] = ns
        self.env = Env(values, self.unsupported)
        install_schedules(self.runtime.alarms, invoke_alarm)  # alarm() and the named schedules
        sockets_for(self.runtime)  # outbound WebSockets: closed when the runtime closes
        install_forwarding(self.runtime)  # calls from other worker processes, if there are any
        self.cron_scheduler: CronScheduler | None = None
        if self.crons and self.runtime.first_worker:  # one process fires the triggers
            self.cron_scheduler = self._cron_scheduler()
            self.runtime.add_service(self.cron_scheduler)

    def _cron_scheduler(self) -> CronScheduler:
        expressions = []
        for i, text in enumerate(self.crons):
            try:
                expressions.append(CronExpression.parse(text))
            except CronSyntaxError as e:
                raise ConfigError(str(e), key=f"triggers.crons[{i}]") from None
        if find_scheduled_handler(self.entrypoint) is None:
            log.warning("triggers.crons is set, but the entrypoint has no scheduled() handler: "
                        "every trigger will fail until one is added")
        return CronScheduler(self.runtime, expressions, self.scheduled)

    def _factory(self, cls: type) -> Any:
        env_ref = self

        def build(activation: Activation) -> Any:
            return construct(cls, activation, env_ref.env)
        return build

    async def start(self) -> None:
        await self.runtime.start()

    async def close(self) -> None:
        # The entrypoint's wait_until work gets the same grace period as the objects' (5 s), then
        # is cancelled: a task that never ends must not keep the server from shutting down.
        await drain_tasks(self._tasks, WAIT_UNTIL_GRACE_S)
        await self.runtime.close()

    async def handle(self, request: Request) -> Response:
        """Run the project's entrypoint for one request (in a portal once ``run_sync`` is in use)."""
        if portal.enabled():
            return await portal.run(self._handle(request))
        return await self._handle(request)

    async def _handle(self, request: Request) -> Response:
        ep = self.entrypoint
        if ep is None:
            return Response("this project has no WorkerEntrypoint", status=500)
        # For outbound WebSockets opened by entrypoint code (object code finds its runtime through
        # its activation). Each request runs in a task of its own, so no reset is needed.
        entry_runtime.set(self.runtime)
        if isinstance(ep, type):
            instance = ep(ExecutionContext(self._tasks), self.env)
            resp = await call_handler(instance, "fetch", request, self.env, instance.ctx)
        else:  # a module-level ``on_fetch(request, env)`` / ``fetch(request, env, ctx)``
            result = ep(*fit_args(ep, (request, self.env, ExecutionContext(self._tasks))))
            resp = await result if inspect.isawaitable(result) else result
        if not isinstance(resp, Response):
            raise TypeError(f"the entrypoint's fetch() must return a Response, not {type(resp).__name__}")
        return resp


    async def scheduled(self, cron: str, scheduled_time: int | None = None) -> None:
        """Run the entrypoint's ``scheduled(controller, env, ctx)`` once for ``cron`` (any string:
        the dev endpoint passes what it is given), at ``scheduled_time`` epoch ms (default: now).
        Returns when the handler and its ``wait_until`` work have finished; raises what failed."""
        if scheduled_time is None:
            scheduled_time = self.runtime.clock.now_ms()
        entry_runtime.set(self.runtime)
        run = run_scheduled(self.entrypoint, self.env, cron, int(scheduled_time))
        await (portal.run(run) if portal.enabled() else run)


async def invoke_alarm(instance: Any, info: Any) -> bool:
    """The scheduler's way into user code: ``alarm(info)`` (or ``alarm()``, or ``on_alarm``).
    False if the class has no alarm handler."""
    if find_handler(instance, "alarm") is None:
        return False
    await call_handler(instance, "alarm", info)
    return True




def _looks_like_object(cls: Any) -> bool:
    # Cloudflare-style classes from the ``workers`` shim are DurableObject subclasses too; a plain
    # class with a fetch handler is accepted as well (older Python Workers examples).
    return isinstance(cls, type) and any(hasattr(cls, n) for n in ("fetch", "on_fetch"))


def find_entrypoint(module: Any, name: str) -> Any:
    """The WorkerEntrypoint subclass called ``name`` in ``module``, or a module-level fetch."""
    ep = getattr(module, name, None)
    if isinstance(ep, type) and issubclass(ep, WorkerEntrypoint):
        return ep
    if ep is not None and isinstance(ep, type):
        return ep
    for fn_name in ("on_fetch", "fetch"):
        fn = getattr(module, fn_name, None)
        if fn is not None and inspect.isfunction(fn) and fn.__module__ == module.__name__:
            return fn
    return None
