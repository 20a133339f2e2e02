"""KV storage of one object: get/put/delete, multi-key variants, list() ranges, UTF-8 order, the
2 MB row limit and the synchronous ctx.storage.kv API. Real SQLite files in tmp_path."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duro.errors import InvalidInputError, StorageError, StorageLimitError
from duro.storage import KV_LIST_INVALIDATED_MESSAGE, ObjectDatabase


@pytest.fixture
def db(tmp_path):
    database = ObjectDatabase(tmp_path / "obj.sqlite")
    yield database
    database.close()


def fill(db, keys):
    db.kv_put_many({k: i for i, k in enumerate(keys)})


# ---- single key ------------------------------------------------------------------------------


def test_get_missing_is_none(db):
    assert db.kv_get("nope") is None


def test_put_get_delete(db):
    db.kv_put("a", {"n": 1, "l": [1, 2]})
    assert db.kv_get("a") == {"n": 1, "l": [1, 2]}
    assert db.kv_delete("a") is True
    assert db.kv_get("a") is None
    assert db.kv_delete("a") is False


def test_put_replaces(db):
    db.kv_put("a", 1)
    db.kv_put("a", 2)
    assert db.kv_get("a") == 2


@pytest.mark.parametrize("value", [
    0, -5, 2**70, 1.5, "text", b"\x00\xff", True, [1, "a"], (1, 2), {"a": {"b": None}}, {1, 2},
    frozenset({"x"}), dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2), dt.timedelta(seconds=3),
])
def test_values_round_trip(db, value):
    db.kv_put("k", value)
    got = db.kv_get("k")
    assert got == value and type(got) is type(value)


def test_none_is_stored_as_a_value(db):
    db.kv_put("n", None)
    assert db.kv_get("n") is None
    assert db.kv_get_many(["n", "missing"]) == {"n": None}
    assert db.kv_list() == {"n": None}


def test_key_must_be_str(db):
    for bad in (1, b"a", None, ("a",)):
        with pytest.raises(TypeError, match="keys must be str"):
            db.kv_put(bad, 1)
        with pytest.raises(TypeError):
            db.kv_get(bad)
        with pytest.raises(TypeError):
            db.kv_delete(bad)


def test_unencodable_value_is_type_error_and_stores_nothing(db):
    with pytest.raises(TypeError, match="object"):
        db.kv_put("a", object())
    assert not db.exists()
    db.kv_put("b", 1)
    with pytest.raises(TypeError):
        db.kv_put("b", lambda: 1)
    assert db.kv_get("b") == 1


def test_lone_surrogate_key_is_rejected(db):
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        db.kv_put("\ud800", 1)
    db.kv_put("ok", 1)
    assert db.kv_get("ok") == 1


def test_large_keys_and_values_have_no_kv_backed_limits(db):
    # §13.1: no 2,048-byte key limit and no 128 KiB value limit on SQLite-backed objects.
    key = "k" * 3000
    db.kv_put(key, b"v" * 200 * 1024)
    assert len(db.kv_get(key)) == 200 * 1024


# ---- the 2 MB row limit -------------------------------------------------------------------------


def test_value_just_under_two_megabytes_is_stored(db):
    db.kv_put("big", b"x" * 1_999_900)
    assert len(db.kv_get("big")) == 1_999_900
    assert db.commit() is True


def test_value_over_two_megabytes_fails_and_stores_nothing(db):
    db.kv_put("before", 1)
    with pytest.raises(StorageLimitError) as info:
        db.kv_put("big", b"x" * 2_000_000)
    assert str(info.value) == "string or blob too big: SQLITE_TOOBIG"
    assert info.value.code == "SQLITE_TOOBIG"
    assert db.kv_get("big") is None
    # The object is still usable and the earlier write of this turn survives.
    db.kv_put("after", 2)
    assert db.commit() is True
    assert db.kv_list() == {"after": 2, "before": 1}


def test_key_plus_value_over_limit_fails(db):
    with pytest.raises(StorageLimitError, match=r"^string or blob too big: SQLITE_TOOBIG$"):
        db.kv_put("k" * 1_000_000, b"v" * 1_000_000)
    assert db.kv_list() == {}


# ---- many keys ----------------------------------------------------------------------------------


def test_get_many_omits_missing_and_sorts(db):
    db.kv_put_many({"b": 2, "a": 1, "c": 3})
    got = db.kv_get_many(["c", "zz", "a", "a"])
    assert got == {"a": 1, "c": 3}
    assert list(got) == ["a", "c"]


def test_put_many_and_delete_many(db):
    db.kv_put_many({"a": 1, "b": 2, "c": 3})
    assert db.kv_delete_many(["a", "c", "nope", "a"]) == 2
    assert db.kv_list() == {"b": 2}
    assert db.kv_delete_many([]) == 0


def test_more_than_128_keys_per_call(db):
    # §13.2: the 128-key limit is not enforced on SQLite-backed objects.
    entries = {f"k{i:04}": i for i in range(300)}
    db.kv_put_many(entries)
    assert db.kv_get_many(list(entries)) == entries
    assert db.kv_delete_many(list(entries)) == 300


def test_put_many_is_atomic_on_bad_value(db):
    with pytest.raises(TypeError):
        db.kv_put_many({"a": 1, "b": object()})
    assert db.kv_get("a") is None


def test_put_many_is_atomic_on_too_big_row(db):
    db.kv_put("x", 0)
    with pytest.raises(StorageLimitError):
        db.kv_put_many({"a": 1, "b": b"v" * 2_100_000, "c": 3})
    assert db.kv_list() == {"x": 0}
    db.kv_put_many({"a": 1, "c": 3})
    assert db.commit() is True
    assert db.kv_list() == {"a": 1, "c": 3, "x": 0}


def test_put_many_rejects_non_mapping_and_bad_keys(db):
    with pytest.raises(TypeError):
        db.kv_put_many([("a", 1)])
    with pytest.raises(TypeError):
        db.kv_put_many({1: "a"})
    with pytest.raises(TypeError):
        db.kv_get_many("ab")


# ---- list() -------------------------------------------------------------------------------------

KEYS = ["a", "aa", "ab", "abc", "b", "ba", "c"]


@pytest.mark.parametrize("options, expected", [
    ({}, KEYS),
    ({"start": "ab"}, ["ab", "abc", "b", "ba", "c"]),
    ({"start_after": "ab"}, ["abc", "b", "ba", "c"]),
    ({"end": "b"}, ["a", "aa", "ab", "abc"]),
    ({"start": "aa", "end": "b"}, ["aa", "ab", "abc"]),
    ({"start_after": "aa", "end": "ba"}, ["ab", "abc", "b"]),
    ({"prefix": "a"}, ["a", "aa", "ab", "abc"]),
    ({"prefix": "ab"}, ["ab", "abc"]),
    ({"prefix": "a", "start": "ab"}, ["ab", "abc"]),
    ({"prefix": "a", "start": "0"}, ["a", "aa", "ab", "abc"]),
    ({"prefix": "a", "end": "ab"}, ["a", "aa"]),
    ({"prefix": "a", "end": "z"}, ["a", "aa", "ab", "abc"]),
    ({"prefix": "a", "start_after": "a"}, ["aa", "ab", "abc"]),
    ({"limit": 2}, ["a", "aa"]),
    ({"reverse": True}, KEYS[::-1]),
    ({"reverse": True, "limit": 2}, ["c", "ba"]),
    ({"reverse": True, "start": "ab", "end": "b"}, ["abc", "ab"]),
    ({"reverse": True, "prefix": "a", "limit": 3}, ["abc", "ab", "aa"]),
    ({"prefix": "b", "start": "a", "end": "bb", "reverse": True, "limit": 1}, ["ba"]),
    ({"prefix": ""}, KEYS),
    # empty ranges
    ({"start": "b", "end": "b"}, []),
    ({"start": "c", "end": "a"}, []),
    ({"prefix": "zz"}, []),
    ({"prefix": "b", "end": "a"}, []),
    ({"prefix": "a", "start": "b"}, []),
    ({"start_after": "c"}, []),
])
def test_list_options(db, options, expected):
    fill(db, KEYS)
    assert list(db.kv_list(**options)) == expected
    assert [k for k, _ in db.kv.list(**options)] == expected


def test_list_returns_values(db):
    db.kv_put_many({"x": [1], "y": {"a": 2}})
    assert db.kv_list() == {"x": [1], "y": {"a": 2}}


def test_list_start_and_start_after_is_type_error(db):
    with pytest.raises(TypeError) as info:
        db.kv_list(start="a", start_after="b")
    assert str(info.value) == "list() cannot be called with both start and startAfter values."
    with pytest.raises(TypeError, match=r"^list\(\) cannot be called with both start and startAfter values\.$"):
        db.kv.list(start="a", startAfter="b")


@pytest.mark.parametrize("limit", [0, -1])
def test_list_limit_must_be_positive(db, limit):
    with pytest.raises(TypeError) as info:
        db.kv_list(limit=limit)
    assert str(info.value) == "List limit must be positive."
    with pytest.raises(TypeError, match=r"^List limit must be positive\.$"):
        db.kv.list(limit=limit)


def test_list_option_types(db):
    with pytest.raises(TypeError):
        db.kv_list(start=1)
    with pytest.raises(TypeError):
        db.kv_list(limit="2")
    with pytest.raises(TypeError, match="unknown options"):
        db.kv.list(bogus=1)


# ---- UTF-8 byte order ----------------------------------------------------------------------------

UNICODE_KEYS = ["z", "a", "é", "\u00ff", "\u0100", "\ud7ff", "\ue000", "\uffff", "\U00010000",
                "\U0001f600", "\U0010ffff", "a\x00b", "a\x00", "A", "\x7f", "日本"]


def test_keys_sort_by_utf8_bytes(db):
    fill(db, UNICODE_KEYS)
    by_utf8 = sorted(UNICODE_KEYS, key=lambda k: k.encode("utf-8"))
    assert list(db.kv_list()) == by_utf8
    assert list(db.kv_list(reverse=True)) == by_utf8[::-1]
    assert list(db.kv_get_many(UNICODE_KEYS)) == by_utf8
    # UTF-16 code-unit order would put U+1F600 (a surrogate pair) before U+E000; UTF-8 does not.
    order = list(db.kv_list())
    assert order.index("\ue000") < order.index("\uffff") < order.index("\U0001f600")


def test_prefix_successor_edges(db):
    keys = ["\U0010ffff", "\U0010ffffa", "x\U0010ffff", "x\U0010ffff\U0010ffff", "y",
            "\ud7ff", "\ud7ffz", "\ue000"]
    fill(db, keys)
    assert list(db.kv_list(prefix="\U0010ffff")) == ["\U0010ffff", "\U0010ffffa"]
    assert list(db.kv_list(prefix="x\U0010ffff")) == ["x\U0010ffff", "x\U0010ffff\U0010ffff"]
    assert list(db.kv_list(prefix="\ud7ff")) == ["\ud7ff", "\ud7ffz"]


# ---- ctx.storage.kv ------------------------------------------------------------------------------


def test_sync_kv_get_put_delete(db):
    kv = db.kv
    assert kv.get("a") is None
    kv.put("a", [1])
    assert kv.get("a") == [1]
    assert kv.delete("a") is True
    assert kv.delete("a") is False


def test_sync_kv_list_options_as_mapping_and_aliases(db):
    fill(db, KEYS)
    assert [k for k, _ in db.kv.list({"startAfter": "ab", "limit": 2})] == ["abc", "b"]
    assert [k for k, _ in db.kv.list(start_after="ab", reverse=True)] == ["c", "ba", "b", "abc"]
    assert dict(db.kv.list(prefix="b")) == {"b": 4, "ba": 5}


def test_sync_kv_list_pages_through_many_rows(db):
    keys = [f"k{i:04}" for i in range(1000)]
    fill(db, keys)
    assert [k for k, _ in db.kv.list()] == keys
    assert [k for k, _ in db.kv.list(reverse=True)] == keys[::-1]
    assert [k for k, _ in db.kv.list(limit=300)] == keys[:300]
    assert [k for k, _ in db.kv.list(reverse=True, limit=129, end="k0500")] == keys[371:500][::-1]
    assert [v for _, v in db.kv.list(start="k0998")] == [998, 999]


def test_new_kv_list_invalidates_the_previous_iterator(db):
    fill(db, KEYS)
    first = db.kv.list()
    assert next(first)[0] == "a"
    second = db.kv.list()
    with pytest.raises(StorageError) as info:
        next(first)
    assert str(info.value) == KV_LIST_INVALIDATED_MESSAGE
    assert str(info.value) == (
        "kv.list() iterator was invalidated because a new call to kv.list() was started. "
        "Only one kv.list() iterator can exist at a time."
    )
    assert [k for k, _ in second] == KEYS


def test_reads_of_a_never_written_database_create_no_file(db):
    assert db.kv_get("a") is None
    assert db.kv_get_many(["a"]) == {}
    assert db.kv_list(prefix="a") == {}
    assert list(db.kv.list()) == []
    assert db.kv_delete("a") is False
    assert db.kv_delete_many(["a", "b"]) == 0
    assert not db.exists() and not db.is_open
    assert not db.path.parent.joinpath("obj.sqlite-wal").exists()


def test_kv_table_created_on_first_write_only(db):
    db.sql.exec("CREATE TABLE t(x)")
    names = [r["name"] for r in db.sql.exec("SELECT name FROM sqlite_master")]
    assert "_cf_KV" not in names
    assert db.kv_get("a") is None
    db.kv_put("a", 1)
    names = [r["name"] for r in db.sql.exec("SELECT name FROM sqlite_master")]
    assert "_cf_KV" in names


def test_kv_writes_join_the_implicit_transaction(db):
    db.kv_put("a", 1)
    db.sql.exec("CREATE TABLE t(x)")
    db.kv.put("b", 2)
    db.rollback()
    assert db.kv_list() == {}
    assert db.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 't'").one().n == 0
    db.kv_put("c", 3)  # the KV table is created again after the rollback dropped it
    assert db.commit() is True
    assert db.kv_list() == {"c": 3}


def test_data_survives_reopen(tmp_path):
    path = tmp_path / "nested" / "dir" / "obj.sqlite"
    db = ObjectDatabase(path)
    db.kv_put("a", {"x": 1})
    assert db.commit()
    db.close()
    assert path.exists()
    again = ObjectDatabase(path)
    assert again.kv_get("a") == {"x": 1}
    again.close()


# ---- list() against a model --------------------------------------------------------------------------

_ALPHABET = st.sampled_from(["a", "b", "\x00", "é", "\uffff", "\ue000", "\U0001f600", "\U0010ffff"])
_TEXT = st.text(alphabet=_ALPHABET, max_size=3)


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(_TEXT, unique=True, max_size=12), start=st.none() | _TEXT,
       start_after=st.none() | _TEXT, end=st.none() | _TEXT, prefix=st.none() | _TEXT,
       reverse=st.booleans(), limit=st.none() | st.integers(1, 5))
def test_list_matches_a_model(tmp_path_factory, keys, start, start_after, end, prefix, reverse, limit):
    if start is not None:
        start_after = None
    expected = sorted(
        (k for k in keys
         if (start is None or k >= start) and (start_after is None or k > start_after)
         and (end is None or k < end) and (prefix is None or k.startswith(prefix))),
        key=lambda k: k.encode("utf-8"), reverse=reverse)[:limit]
    db = ObjectDatabase(tmp_path_factory.mktemp("model") / "obj.sqlite")
    try:
        db.kv_put_many({k: k for k in keys})
        options = dict(start=start, start_after=start_after, end=end, prefix=prefix,
                       reverse=reverse, limit=limit)
        assert list(db.kv_list(**options)) == expected
        assert [k for k, v in db.kv.list(**options) if k == v] == expected
    finally:
        db.close()
