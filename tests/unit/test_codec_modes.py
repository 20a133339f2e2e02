"""The codec's two modes (storage and RPC), exceptions as values, Cloudflare's refusal text, and
the promise that bytes written by an earlier duro still decode."""

import datetime as dt

import pytest

from duro import codec
from duro.api import Request, Response
from duro.api.fetch import FetchResponse

# Written by the codec before it had exceptions or registered types (a KV value on disk).
OLD_BYTES = bytes.fromhex(
    "d0018fa16ec0a162c3a169fba3626967c7160831313830353931363230373137343131333033343234a166cb3ff8"
    "000000000000a173a668c3a96c6c6fa26279c40200ffa16c9201c70301920203a3736574d5029101a26673c70303"
    "91a178a26474c72004323032362d30312d30325430333a30343a30352e3030303030362b30303a3030a164c70a05"
    "323032362d30312d3032a174d70630313a30323a3033a27464d60793ff050707a7696e74206b6579")
OLD_VALUE = {
    "n": None, "b": True, "i": -5, "big": 2**70, "f": 1.5, "s": "héllo", "by": b"\x00\xff", "l": [1, (2, 3)],
    "set": {1}, "fs": frozenset({"x"}), "dt": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
    "d": dt.date(2026, 1, 2), "t": dt.time(1, 2, 3), "td": dt.timedelta(days=-1, seconds=5, microseconds=7),
    7: "int key",
}


def test_bytes_written_before_still_decode_and_encode_the_same():
    assert codec.decode(OLD_BYTES) == OLD_VALUE
    assert codec.encode(OLD_VALUE) == OLD_BYTES  # the on-disk format of existing types is unchanged
    assert codec.encode(OLD_VALUE, rpc=True) == OLD_BYTES


@pytest.mark.parametrize("value", [bytearray(b"\x01\x02"), memoryview(b"\x01\x02")])
def test_buffers_arrive_as_bytes(value):
    for rpc in (False, True):
        out = codec.decode(codec.encode(value, rpc=rpc))
        assert out == b"\x01\x02" and type(out) is bytes


class AppError(Exception):
    pass


def test_exceptions_round_trip_with_type_and_args():
    out = codec.copy({"e": [KeyError("k"), AppError("bad", 3)]})
    err, app = out["e"]
    assert type(err) is KeyError and err.args == ("k",)
    assert type(app) is AppError and app.args == ("bad", 3)
    assert type(codec.decode(codec.encode(ValueError("stored")))) is ValueError  # storable, as in structured clone


def test_an_exception_whose_class_is_not_loaded_is_a_plain_exception():
    def local():
        class Hidden(Exception):
            pass
        return Hidden("gone")
    out = codec.copy(local())
    assert type(out) is Exception
    assert str(out) == "test_an_exception_whose_class_is_not_loaded_is_a_plain_exception.<locals>.local.<locals>.Hidden: gone"


def test_exception_args_that_cannot_be_copied_become_the_message():
    out = codec.copy(RuntimeError("x", object()))
    assert type(out) is RuntimeError and out.args[0].startswith("('x', <object object")


class Widget:
    pass


@pytest.mark.parametrize("value, name", [
    (Widget(), "Widget"), (lambda: 1, "function"), (object(), "object"), (complex(1, 2), "complex"),
    (range(3), "range"),
])
def test_refusals_use_cloudflares_text(value, name):
    for rpc in (False, True):
        with pytest.raises(codec.DataCloneError) as info:
            codec.encode({"nested": [value]}, rpc=rpc)
        assert str(info.value) == f'Could not serialize object of type "{name}". This type does not support serialization.'
        assert isinstance(info.value, TypeError)  # code that caught TypeError keeps working


def test_request_and_response_cross_rpc_but_are_not_storable():
    req = Request("https://example.com/a?b=1", method="POST", headers=[("x-a", "1"), ("x-a", "2")], body=b"hi")
    resp = Response("created", status=201, status_text="Created", headers={"x-r": "y"})
    for value in (req, resp):
        with pytest.raises(codec.DataCloneError, match=f'^Could not serialize object of type "{type(value).__name__}"'):
            codec.encode({"v": value})
    r2, s2 = codec.decode(codec.encode([req, resp], rpc=True))
    assert type(r2) is Request and r2 is not req
    assert (r2.url, r2.method, r2.headers.get_all("x-a"), r2.body) == (req.url, "POST", ["1", "2"], b"hi")
    assert isinstance(s2, Response) and type(s2) is FetchResponse  # as stub.fetch returns it: await resp.json()
    assert (s2.status, s2.status_text, s2.headers.get("x-r"), s2.body) == (201, "Created", "y", b"created")
    assert s2.headers.get("content-type") == "text/plain;charset=UTF-8"


def test_a_response_holding_a_websocket_is_refused():
    from duro.api.websocket import WebSocketPair
    client, server = WebSocketPair()
    with pytest.raises(codec.DataCloneError, match='^Could not serialize object of type "WebSocket"'):
        codec.encode(Response(None, status=101, web_socket=client), rpc=True)
