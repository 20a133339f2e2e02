"""The value codec: how KV values, RPC arguments and results, and WebSocket attachments are copied.

A safe, versioned binary format built on msgpack (never pickle). These round-trip exactly:
None, bool, int (any size), float, str, bytes, list, tuple, dict (any encodable keys, insertion
order kept), set, frozenset, datetime, date, time, timedelta and nested mixes of them. Anything else
is a ``TypeError`` that names the type. Dict subclasses (such as rows returned by duro) are encoded
as plain dicts.

This module imports nothing of duro.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import msgpack

__all__ = ["encode", "decode", "copy", "VERSION"]

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

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _default(obj: Any) -> Any:
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
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj)))
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, frozenset):
        return msgpack.ExtType(_EXT_FROZENSET, _pack(list(obj)))
    if isinstance(obj, set):
        return msgpack.ExtType(_EXT_SET, _pack(list(obj)))
    if isinstance(obj, _dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, _dt.time):
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, _dt.timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA, _pack([obj.days, obj.seconds, obj.microseconds]))
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"value of type {type(obj).__name__!r} cannot be stored or sent: "
                    "use None, bool, int, float, str, bytes, list, tuple, dict, set or datetime")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True, datetime=False)


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
    raise ValueError(f"unknown value extension type {code}; was this written by a newer duro?")


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                           use_list=True, timestamp=0)


def encode(value: Any) -> bytes:
    """Encode ``value``; raise ``TypeError`` naming the first type that cannot be encoded."""
    return _HEADER + _pack(value)


def decode(data: bytes | memoryview) -> Any:
    """Decode bytes produced by :func:`encode`."""
    data = bytes(data)
    if data[:1] != _HEADER[:1]:
        raise ValueError("not a duro-encoded value")
    if data[1] != VERSION:
        raise ValueError(f"value was encoded with codec version {data[1]}; this duro reads version {VERSION}")
    return _unpack(data[2:])


def copy(value: Any) -> Any:
    """Deep-copy ``value`` through the codec, as an RPC argument or stored value is copied."""
    return _unpack(_pack(value))
