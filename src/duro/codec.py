"""The value codec: how KV values, RPC arguments and results, and WebSocket attachments are copied.

A safe, versioned binary format built on msgpack (never pickle). These round-trip exactly:
None, bool, int (any size), float, str, bytes, list, tuple, dict (any encodable keys, insertion
order kept), set, frozenset, datetime, date, time, timedelta, exceptions, and nested mixes of them.
``bytearray`` and ``memoryview`` arrive as ``bytes``; dict subclasses (such as rows returned by duro)
as plain dicts.

Two modes, because Cloudflare's storage and its RPC accept different things. Storage (the default)
is structured clone: no ``Request`` or ``Response``. RPC (``rpc=True``) also carries the types that
an upper layer registers with :func:`register` (``duro.api.fetch`` registers ``Request`` and
``Response``). Anything neither mode accepts is a :class:`DataCloneError` with Cloudflare's text.

The format only ever gains extension types: bytes written by an older duro still decode. Decoding
never imports a module (an exception whose class is not loaded comes back as a plain ``Exception``).

This module imports nothing of duro.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import sys
from typing import Any, Callable, NamedTuple

import msgpack

from .errors import JsException

__all__ = ["encode", "decode", "copy", "register", "DataCloneError", "VERSION"]

VERSION = 1
_HEADER = bytes([0xD0, VERSION])  # 0xD0 is never the first byte of a msgpack int8 we would write

# Extension type codes. Never renumber: stored data depends on them.
_EXT_TUPLE = 1
_EXT_SET = 2
_EXT_FROZENSET = 3
_EXT_DATETIME = 4
_EXT_DATE = 5
_EXT_TIME = 6
_EXT_TIMEDELTA = 7
_EXT_BIGINT = 8
_EXT_EXCEPTION = 9  # [module, qualname, message, packed args]
_EXT_REGISTERED = 10  # [registered name, plain state]: Request, Response (RPC only)

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


class DataCloneError(TypeError, JsException):
    """A value that cannot be stored or sent (a class instance, a function, a ``Request`` put into
    storage). Raised by the encoder before anything is stored or delivered; the message is
    Cloudflare's: ``Could not serialize object of type "Widget". This type does not support
    serialization.``"""

    js_name = "DataCloneError"


def _refusal(obj: Any, name: str | None = None) -> DataCloneError:
    own = getattr(type(obj), "__duro_clone_refusal__", None)  # a type with Cloudflare's own text
    if isinstance(own, str):
        return DataCloneError(own)
    return DataCloneError(f'Could not serialize object of type "{name or type(obj).__name__}". '
                          "This type does not support serialization.")


class _Registered(NamedTuple):
    name: str
    cls: type
    to_plain: Callable[[Any], Any]
    from_plain: Callable[[Any], Any]
    storable: bool
    refusal: str | None = None


_BY_CLASS: dict[type, _Registered] = {}
_BY_NAME: dict[str, _Registered] = {}


def register(cls: type, name: str, to_plain: Callable[[Any], Any], from_plain: Callable[[Any], Any],
             *, storable: bool = False, refusal: str | None = None) -> None:
    """Let instances of ``cls`` (and its subclasses) cross RPC: ``to_plain(obj)`` gives a value
    the codec carries, ``from_plain(value)`` rebuilds it on the other side. ``name`` is written
    into the encoded bytes; never rename it. ``storable=True`` would let storage keep them too
    (Cloudflare's storage refuses ``Request``/``Response``, so they are not). ``refusal``: the
    message of the DataCloneError for storing one, where Cloudflare has its own."""
    entry = _Registered(name, cls, to_plain, from_plain, storable, refusal)
    _BY_CLASS[cls] = entry
    _BY_NAME[name] = entry


def _registered_for(obj: Any) -> _Registered | None:
    for klass in type(obj).__mro__:
        entry = _BY_CLASS.get(klass)
        if entry is not None:
            return entry
    return None


def _default(obj: Any, rpc: bool) -> Any:
    # strict_types=True sends subclasses and tuples here; rebuild them as their base shape.
    if isinstance(obj, bool):  # pragma: no cover - msgpack handles bool itself
        return obj
    if isinstance(obj, int):
        if type(obj) is not int:
            return int(obj)
        if obj < _INT64_MIN or obj > _UINT64_MAX:
            return msgpack.ExtType(_EXT_BIGINT, str(obj).encode())
        return obj  # pragma: no cover
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj), rpc))
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, frozenset):
        return msgpack.ExtType(_EXT_FROZENSET, _pack(list(obj), rpc))
    if isinstance(obj, set):
        return msgpack.ExtType(_EXT_SET, _pack(list(obj), rpc))
    if isinstance(obj, _dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, _dt.time):
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, _dt.timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA, _pack([obj.days, obj.seconds, obj.microseconds], rpc))
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, Exception):
        return msgpack.ExtType(_EXT_EXCEPTION, _pack_exception(obj, rpc))
    entry = _registered_for(obj)
    if entry is None:
        raise _refusal(obj)
    if not (rpc or entry.storable):
        if entry.refusal is not None:
            raise DataCloneError(entry.refusal)
        raise _refusal(obj, entry.name)  # "Response", as Cloudflare names it, for a FetchResponse too
    return msgpack.ExtType(_EXT_REGISTERED, _pack([entry.name, entry.to_plain(obj)], rpc))


def _default_storage(obj: Any) -> Any:
    return _default(obj, False)


def _default_rpc(obj: Any) -> Any:
    return _default(obj, True)


def _pack(obj: Any, rpc: bool) -> bytes:
    return msgpack.packb(obj, default=_default_rpc if rpc else _default_storage, strict_types=True,
                         use_bin_type=True, datetime=False)


def _pack_exception(exc: Exception, rpc: bool) -> bytes:
    # Like structured clone of an Error: the type and the message always cross; the args too when
    # they can (else the message stands in for them).
    try:
        args = _pack(list(exc.args), rpc)
    except TypeError:
        args = _pack([str(exc)], rpc)
    cls = type(exc)
    return _pack([cls.__module__, cls.__qualname__, str(exc), args], rpc)


def _rebuild_exception(module: str, qualname: str, message: str, args: list[Any]) -> Exception:
    """The exception of class ``module.qualname`` if that class is loaded (decoding never imports),
    else a plain ``Exception("<qualname>: <message>")``, as Cloudflare's Python code receives an
    Error it cannot map to a Python type."""
    cls: Any = builtins if module == "builtins" else sys.modules.get(module)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(*args)  # type: ignore[no-any-return]
        except Exception:
            try:
                out = cls.__new__(cls)
                out.args = tuple(args)
                return out  # type: ignore[no-any-return]
            except Exception:
                pass
    return Exception(f"{qualname}: {message}" if message else qualname)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_SET:
        return set(_unpack(data))
    if code == _EXT_FROZENSET:
        return frozenset(_unpack(data))
    if code == _EXT_DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return _dt.time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        d, s, us = _unpack(data)
        return _dt.timedelta(days=d, seconds=s, microseconds=us)
    if code == _EXT_BIGINT:
        return int(data.decode())
    if code == _EXT_EXCEPTION:
        module, qualname, message, args = _unpack(data)
        return _rebuild_exception(module, qualname, message, _unpack(args))
    if code == _EXT_REGISTERED:
        name, plain = _unpack(data)
        entry = _BY_NAME.get(name)
        if entry is None:
            raise ValueError(f"value of registered type {name!r} cannot be decoded: nothing registered that name")
        return entry.from_plain(plain)
    raise ValueError(f"unknown value extension type {code}; was this written by a newer duro?")


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                           use_list=True, timestamp=0)


def encode(value: Any, *, rpc: bool = False) -> bytes:
    """Encode ``value`` for storage (default) or for RPC (``rpc=True``, which also carries
    registered types); raise :class:`DataCloneError` naming the first type that cannot be encoded."""
    return _HEADER + _pack(value, rpc)


def decode(data: bytes | memoryview) -> Any:
    """Decode bytes produced by :func:`encode` (either mode)."""
    data = bytes(data)
    if data[:1] != _HEADER[:1]:
        raise ValueError("not a duro-encoded value")
    if data[1] != VERSION:
        raise ValueError(f"value was encoded with codec version {data[1]}; this duro reads version {VERSION}")
    return _unpack(data[2:])


def copy(value: Any, *, rpc: bool = False) -> Any:
    """Deep-copy ``value`` through the codec, as an RPC argument or stored value is copied."""
    return _unpack(_pack(value, rpc))
