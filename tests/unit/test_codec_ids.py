import datetime as dt

import pytest

from duro import codec
from duro.errors import InvalidIdError
from duro.ids import NamespaceKey


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**200, -(2**90), 1.5, float("inf"), "", "héllo \U0001f600",
    b"", b"\x00\xff", [], [1, [2, [3]]], (), (1, (2,)), {}, {"a": 1, 2: "b", (1, 2): [None]}, set(), {1, "x"},
    frozenset({1}), dt.datetime(2026, 1, 2, 3, 4, 5, 6), dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
    dt.date(2026, 1, 2), dt.time(1, 2, 3), dt.timedelta(days=-1, seconds=5, microseconds=7),
])
def test_round_trip_is_exact(value):
    out = codec.decode(codec.encode(value))
    assert out == value
    assert type(out) is type(value)


def test_nested_types_survive():
    v = {"t": (1, [2, (3,)]), "s": {4}}
    out = codec.decode(codec.encode(v))
    assert type(out["t"]) is tuple and type(out["t"][1]) is list and type(out["t"][1][1]) is tuple


def test_unencodable_names_the_type():
    class Widget:
        pass
    with pytest.raises(TypeError, match='"Widget"'):
        codec.encode({"a": [Widget()]})


def test_dict_subclass_encodes_as_dict():
    class D(dict):
        pass
    assert type(codec.copy(D(a=1))) is dict


def test_garbage_is_refused():
    with pytest.raises(ValueError):
        codec.decode(b"\x01\x02")


def test_ids_are_deterministic_per_namespace_and_checked():
    a, b = NamespaceKey("app-A"), NamespaceKey("app-B")
    x = a.id_from_name("x")
    assert str(x) == str(a.id_from_name("x")) and len(str(x)) == 64 and str(x) == str(x).lower()
    assert x.name == "x"
    assert str(x) != str(b.id_from_name("x"))
    parsed = a.id_from_string(str(x).upper())
    assert parsed == x and parsed.name is None
    with pytest.raises(InvalidIdError, match="^Durable Object ID is not valid for this namespace.$"):
        b.id_from_string(str(x))
    for bad in ["", "xyz", "0" * 63, "g" * 64, str(x) + "0"]:
        with pytest.raises(InvalidIdError, match="^Invalid Durable Object ID: must be 64 hex digits$"):
            a.id_from_string(bad)
    u = a.new_unique_id()
    assert u.name is None and a.id_from_string(str(u)) == u and u != a.new_unique_id()
