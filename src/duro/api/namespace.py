"""Namespaces, stubs and RPC: how code reaches an object.

``env.NS.get_by_name("x")`` returns a stub; ``await stub.fetch(...)`` is delivered to the object's
``fetch`` handler, ``await stub.method(*args, **kwargs)`` to a public method. Arguments and results
are copied through the value codec in its RPC mode (which, unlike storage, carries ``Request`` and
``Response``); an exception raised in the object reaches the caller with its type, message and the
``remote`` / ``retryable`` / ``overloaded`` flags. Outgoing calls from an
object wait at its output gate first.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import functools
import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable

from .. import codec, errors
from ..core.limits import RESERVED_RPC_NAMES, missing_method_text, reserved_method_text
from ..ids import DurableObjectId, NamespaceKey
from ..runtime import current_activation
from ..runtime.calls import Failed, Pending
from ..runtime.router import TakenHere, failure_state
from .fetch import FetchResponse, Request, Response, as_fetch_response

if TYPE_CHECKING:
    from ..runtime import Activation, Runtime

__all__ = ["DurableObjectNamespace", "DurableObjectStub", "call_handler", "fit_args"]

_ROUTING_MODES = {None, "primary-only"}
# On a 101 answer from the worker that owns the object: the id of the WebSocket bridge it made.
BRIDGE_HEADER = "x-duro-bridge"

log = logging.getLogger("duro.rpc")


def _unawaited_rpc(stub: "DurableObjectStub", error: BaseException, name: str) -> None:
    """An RPC call failed and nobody awaited it: say so once (the callee's own rules decided
    whether the object was reset; the caller is not)."""
    log.error("RPC call %s() on %r failed and was never awaited: %s", name, stub, error,
              exc_info=error)


class DurableObjectNamespace:
    """A binding to one Durable Object class (``env.MY_DO``)."""

    def __init__(self, runtime: "Runtime", unique_key: str, class_name: str, binding: str | None = None) -> None:
        self._runtime = runtime
        self.unique_key = unique_key
        self.class_name = class_name
        self.binding = binding
        self._sub_key: NamespaceKey | None = None  # a jurisdictional subnamespace's own key

    @property
    def _key(self) -> NamespaceKey:
        # Asked of the runtime each time: a migration at start may give the namespace the key of
        # the class it was renamed from.
        return self._sub_key or self._runtime.namespace_key(self.unique_key)

    def id_from_name(self, name: str) -> DurableObjectId:
        return self._key.id_from_name(name)

    def new_unique_id(self, options: Any = None, *, jurisdiction: str | None = None) -> DurableObjectId:
        if isinstance(options, dict):
            jurisdiction = options.get("jurisdiction", jurisdiction)
        if jurisdiction is None or jurisdiction == self._key.jurisdiction:
            return self._key.new_unique_id()
        if self._key.jurisdiction is not None:
            raise TypeError(f"newUniqueId() on the {self._key.jurisdiction!r} jurisdictional subnamespace "
                            f"cannot make an ID in jurisdiction {jurisdiction!r}")
        return self._key.for_jurisdiction(jurisdiction).new_unique_id()

    def id_from_string(self, text: str) -> DurableObjectId:
        return self._key.id_from_string(text)

    def get(self, object_id: DurableObjectId, options: Any = None, **kwargs: Any) -> "DurableObjectStub":
        if not isinstance(object_id, DurableObjectId):
            raise TypeError(f"get() takes a DurableObjectId, not {type(object_id).__name__}; "
                            "use get_by_name() for a name or id_from_string() for a hex ID")
        if object_id.namespace != self.unique_key:
            object_id = self._key.id_from_string(str(object_id))
        if self._key.jurisdiction is not None and object_id.jurisdiction != self._key.jurisdiction:
            raise TypeError("get called on jurisdictional subnamespace with an ID from a different jurisdiction")
        opts = dict(options or {}, **kwargs)
        mode = opts.get("routingMode", opts.get("routing_mode"))
        if mode not in _ROUTING_MODES:
            raise ValueError(f"unknown routingMode: {mode}")
        return DurableObjectStub(self, object_id)

    def get_by_name(self, name: str, options: Any = None, **kwargs: Any) -> "DurableObjectStub":
        return self.get(self.id_from_name(name), options, **kwargs)

    def jurisdiction(self, name: str | None) -> "DurableObjectNamespace":
        """The sub-namespace whose IDs are pinned to jurisdiction ``name`` (None: this one)."""
        if name is None or name == self._key.jurisdiction:
            return self
        if self._key.jurisdiction is not None:
            raise TypeError(f"jurisdiction({name!r}) called on the {self._key.jurisdiction!r} jurisdictional "
                            "subnamespace; call it on the top-level namespace")
        sub = copy.copy(self)
        sub._sub_key = self._key.for_jurisdiction(name)
        return sub

    idFromName = id_from_name  # noqa: N815
    newUniqueId = new_unique_id  # noqa: N815
    idFromString = id_from_string  # noqa: N815
    getByName = get_by_name  # noqa: N815

    def __repr__(self) -> str:
        return f"<DurableObjectNamespace {self.class_name} ({self.unique_key})>"


class DurableObjectStub:
    """A client for one object. Any attribute not defined here is an RPC method."""

    def __init__(self, namespace: DurableObjectNamespace, object_id: DurableObjectId) -> None:
        self._ns = namespace
        self.id = object_id
        self.name = object_id.name
        self._act: "Activation | None" = None
        self._last: "asyncio.Future[None] | None" = None  # set once the last call was delivered
        self._reset: BaseException | None = None  # the reset another worker's object reported

    def _target(self) -> "Activation":
        act = self._ns._runtime.activation(self._ns.unique_key, self.id)
        prev = self._act
        if prev is not None and prev is not act and prev.broken is not None:
            prev.check_usable()  # a stub that saw a reset stays broken
        self._act = act
        return act

    async def _deliver(self, event: Callable[[Any], Any], after: "asyncio.Future[None] | None" = None,
                       delivered: "asyncio.Future[None] | None" = None, size: int = 0, kind: str = "other",
                       label: str = "", forward: Callable[[], tuple[str, bytes]] | None = None) -> Any:
        """Run ``event`` on the object, here, or on the worker that owns it: then ``forward()``
        gives the call's kind and payload for that worker, and the answer is its bytes."""
        try:
            if after is not None and not after.done():
                await asyncio.wait((after,))  # the call made before this one on this stub goes first
            caller = current_activation()
            if caller is not None:
                await caller.output_gate()
            router = self._ns._runtime.router
            if router is not None and forward is not None:
                hex_id = str(self.id)
                owner = router.owner(hex_id)
                if owner != router.slot.index:
                    if self._reset is not None:  # a stub that saw a reset stays broken, as locally
                        raise self._reset
                    op, payload = forward()
                    try:
                        return await self._forward(router, owner, op, label, payload, delivered)
                    except TakenHere:
                        pass  # a cluster node just took the object nobody owned: it runs here
            act = self._target()
        except BaseException as e:
            raise _translate(e) from None
        finally:
            if delivered is not None and not delivered.done():
                delivered.set_result(None)
        try:
            return await act.run(event, size=size, kind=kind, label=label)
        except BaseException as e:
            raise _translate(e) from None

    async def _forward(self, router: Any, owner: int, op: str, label: str, payload: bytes,
                       delivered: "asyncio.Future[None] | None") -> bytes:
        def sent() -> None:
            if delivered is not None and not delivered.done():
                delivered.set_result(None)
        try:
            return await router.call(owner, op, self._ns.unique_key, str(self.id), self.id.name, label, payload,
                                     sent=sent)  # type: ignore[no-any-return]
        except BaseException as e:
            state = failure_state(e)
            if state is not None:
                error = rebuild_exception(state)
                if state.get("reset"):
                    self._reset = error
                raise error from None
            raise

    async def fetch(self, input: "str | Request", init: Any = None, **kwargs: Any) -> FetchResponse:
        """Deliver an HTTP request to the object's ``fetch`` handler."""
        opts = dict(init or {}, **kwargs)
        if isinstance(input, Request):
            request = Request(input, **opts) if opts else input
        else:
            request = Request(str(input), **opts)

        event = fetch_event(request)
        delivered = asyncio.get_running_loop().create_future()
        after, self._last = self._last, delivered
        resp = await self._deliver(event, after, delivered, len(request.body), "fetch",
                                   f"{request.method} {request.url}",
                                   forward=lambda: ("fetch", codec.encode(request, rpc=True)))
        if isinstance(resp, bytes):  # the answer of the worker that owns the object
            resp = self._remote_response(codec.decode(resp))
        if not isinstance(resp, Response):
            raise TypeError(f"fetch() of {self._ns.class_name} must return a Response, not {type(resp).__name__}")
        return as_fetch_response(resp)

    def _remote_response(self, resp: Any) -> Any:
        """A 101 from the owner's worker names a WebSocket bridge: the client end returned here
        is fed by the connection this worker will hold, bridged to the object's socket there."""
        if not isinstance(resp, Response) or resp.status != 101 or BRIDGE_HEADER not in resp.headers:
            return resp
        router = self._ns._runtime.router
        token = resp.headers.get(BRIDGE_HEADER) or ""
        resp.headers.delete(BRIDGE_HEADER)
        if router is None or router.bridge_proxy is None:  # pragma: no cover - the front installs it
            raise RuntimeError("a WebSocket from another worker process needs the HTTP front")
        channel = router.bridge_proxy(*router.bridge_link(router.owner(str(self.id)), token))
        from .websocket import WebSocket
        resp.web_socket = WebSocket(None, peer=WebSocket(channel))
        return resp

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def rpc(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        rpc.__name__ = name
        return rpc

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An RPC call starts when it is made, awaited or not, after the calls made before it on
        this stub (E-order). The result is awaitable; a failure nobody awaits is logged."""
        report = functools.partial(_unawaited_rpc, self)
        try:
            payload = codec.encode((args, kwargs), rpc=True)
        except Exception as e:  # refused in the caller, before anything is delivered
            return Failed(e, name, report)

        event = rpc_event(name, payload)
        loop = asyncio.get_running_loop()
        delivered = loop.create_future()
        after, self._last = self._last, delivered
        task = loop.create_task(self._rpc(event, after, delivered, len(payload), name, payload))
        task.add_done_callback(lambda _: _settle(delivered))
        caller = current_activation()
        if caller is not None:
            caller.own(task, io=True)
        else:
            self._ns._runtime.own_call(task)
        return Pending(task, name, report)

    async def _rpc(self, event: Callable[[Any], Any], after: "asyncio.Future[None] | None",
                   delivered: "asyncio.Future[None]", size: int, name: str, payload: bytes) -> Any:
        return codec.decode(await self._deliver(event, after, delivered, size, "rpc", name,
                                                forward=lambda: ("rpc", payload)))

    def __repr__(self) -> str:
        return f"<DurableObjectStub {self._ns.class_name} {self.id!r}>"


def fetch_event(request: Request) -> Callable[[Any], Any]:
    """The event that delivers ``request`` to an instance's ``fetch`` handler (here, or on the
    worker that owns the object)."""
    async def event(instance: Any) -> Response:
        return await call_handler(instance, "fetch", request)  # type: ignore[no-any-return]
    return event


def rpc_event(name: str, payload: bytes) -> Callable[[Any], Any]:
    """The event that runs RPC method ``name`` on an instance with the encoded ``(args, kwargs)``
    and returns its encoded result (here, or on the worker that owns the object)."""
    async def event(instance: Any) -> bytes:
        method = _resolve_rpc(instance, name)
        a, kw = codec.decode(payload)
        result = method(*a, **kw)
        if inspect.isawaitable(result):
            result = await result
        return codec.encode(result, rpc=True)
    return event


def _settle(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _resolve_rpc(instance: Any, name: str) -> Callable[..., Any]:
    if name in RESERVED_RPC_NAMES:
        raise TypeError(reserved_method_text(name))
    if name.startswith("_"):
        raise TypeError(missing_method_text(name))
    attr = inspect.getattr_static(type(instance), name, None)
    if attr is None or not (inspect.isfunction(attr) or isinstance(attr, (staticmethod, classmethod))):
        raise TypeError(missing_method_text(name))
    return getattr(instance, name)


_HANDLER_ALIASES = {
    "fetch": ("fetch", "on_fetch"),
    "alarm": ("alarm", "on_alarm"),
    "websocket_message": ("websocket_message", "webSocketMessage", "on_webSocketMessage", "on_websocket_message"),
    "websocket_close": ("websocket_close", "webSocketClose", "on_webSocketClose", "on_websocket_close"),
    "websocket_error": ("websocket_error", "webSocketError", "on_webSocketError", "on_websocket_error"),
}


def find_handler(instance: Any, kind: str) -> Callable[..., Any] | None:
    for name in _HANDLER_ALIASES[kind]:
        fn = getattr(instance, name, None)
        if fn is not None and callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


_ARITY: dict[Any, int | None] = {}


def _arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes (None: any number). Cached per function: this
    runs on every request."""
    key = getattr(fn, "__func__", fn)
    try:
        return _ARITY[key]
    except (KeyError, TypeError):
        pass
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        n: int | None = None
    else:
        n = 0
        for p in sig.parameters.values():
            if p.kind == p.VAR_POSITIONAL:
                n = None
                break
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                n += 1
    try:
        _ARITY[key] = n
    except TypeError:  # unhashable callable
        pass
    return n


def fit_args(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` without the trailing ones ``fn`` does not take (Cloudflare's relaxed calls:
    ``scheduled(self, controller)`` and ``fetch(request)`` are valid handlers)."""
    n = _arity(fn)
    return args if n is None else args[:n]


async def call_handler(instance: Any, kind: str, *args: Any) -> Any:
    """Call a handler with "relaxed call" semantics: extra trailing arguments are dropped if the
    handler does not take them (legacy ``on_fetch(self, request, env, ctx)`` gets all three)."""
    fn = find_handler(instance, kind)
    if fn is None:
        if kind == "fetch":
            raise TypeError(f"{type(instance).__name__} has no fetch() handler")
        raise TypeError(f"{type(instance).__name__} has no {kind}() handler")
    name = getattr(fn, "__name__", "")
    if name.startswith("on_") and kind == "fetch":
        args = (args[0], instance.env, instance.ctx)
    result = fn(*fit_args(fn, args))
    if inspect.isawaitable(result):
        result = await result
    return result


# ---------------------------------------------------------------------- errors across the boundary
def _translate(exc: BaseException) -> BaseException:
    """Rebuild ``exc`` for the caller: same type when it can be rebuilt, else ``RemoteError``,
    always with the Cloudflare flags. Cancellation passes through untouched."""
    import asyncio
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return exc
    if getattr(exc, "remote", False) and getattr(exc, "_duro_translated", False):
        return exc
    state = describe_exception(exc)
    out = rebuild_exception(state)
    out.__traceback__ = None
    return out


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """A codec-safe description of an exception (for crossing processes too)."""
    try:
        args = codec.copy(list(exc.args), rpc=True)
    except TypeError:
        args = [str(exc)]
    return {
        "module": type(exc).__module__, "qualname": type(exc).__qualname__, "args": args,
        "message": str(exc),
        "retryable": bool(getattr(exc, "retryable", False)),
        "overloaded": bool(getattr(exc, "overloaded", False)),
        "reset": bool(getattr(exc, "durable_object_reset", False)),
        # Raised inside the callee (its code, its storage, its constructor): remote. Refused before
        # delivery because of overload: not remote.
        "remote": not isinstance(exc, errors.OverloadedError),
        "attrs": _plain_attrs(exc),
    }


_FLAG_ATTRS = {"remote", "retryable", "overloaded", "durable_object_reset", "_duro_translated"}


def _plain_attrs(exc: BaseException) -> dict[str, Any]:
    """Instance attributes that the codec can carry (``SqlError.code`` and the like)."""
    out: dict[str, Any] = {}
    for k, v in vars(exc).items():
        if k in _FLAG_ATTRS or k.startswith("__"):
            continue
        try:
            out[k] = codec.copy(v, rpc=True)
        except TypeError:
            continue
    return out


def rebuild_exception(state: dict[str, Any]) -> BaseException:
    cls: Any = None
    module, qualname = state["module"], state["qualname"]
    if module == "builtins":
        cls = getattr(builtins, qualname, None)
    else:
        try:
            mod = importlib.import_module(module)
            cls = mod
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except Exception:
            cls = None
    out: BaseException | None = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            out = cls(*state["args"])
        except Exception:
            try:
                out = cls.__new__(cls)
                out.args = tuple(state["args"])
            except Exception:
                out = None
    if out is None:
        out = errors.RemoteError(qualname, state["message"])
    else:
        for k, v in state.get("attrs", {}).items():
            try:
                setattr(out, k, v)
            except (AttributeError, TypeError):
                pass
    errors.mark_remote(out, retryable=state["retryable"], overloaded=state["overloaded"])
    if not state["remote"]:
        out.remote = False  # type: ignore[attr-defined]
    if state["reset"]:
        try:
            out.durable_object_reset = True  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover
            pass
    out._duro_translated = True  # type: ignore[attr-defined]
    return out
