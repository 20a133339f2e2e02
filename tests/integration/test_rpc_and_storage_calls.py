"""RPC and storage calls in their corners: keyword arguments and defaults, an object calling itself,
an exception after a write and a call, delete_all() then a write, put() without a value."""

import asyncio

import pytest


async def test_exception_after_write_and_call_keeps_write(review):
    stub = review.env.R.get_by_name("exc-a")
    with pytest.raises(ValueError, match="after call"):
        await stub.write_then_call_then_raise("exc-b")
    assert await stub.get("w") == 1


async def test_object_calls_itself(review):
    stub = review.env.R.get_by_name("self")
    assert await asyncio.wait_for(stub.call_self(), 5) == 1


async def test_rpc_kwargs_and_defaults(review):
    stub = review.env.R.get_by_name("kw")
    assert await stub.kw(1) == [1, 2, 3]
    assert await stub.kw(1, c=9) == [1, 2, 9]
    assert await stub.kw(a=5, b=6) == [5, 6, 3]


async def test_delete_all_then_write_same_turn(review):
    stub = review.env.R.get_by_name("del")
    assert await stub.delete_all_then_write() == {"b": 2}
    assert await stub.get("b") == 2


async def test_put_without_a_value_is_refused(review):
    stub = review.env.R.get_by_name("put-undefined")
    assert await stub.put_without_value() == "put() called with undefined value."
    assert await stub.get("forgot") is None
    await stub.put("none", None)  # an explicit None (JavaScript null) is a value: stored, not refused
    assert await stub.stored() == {"none": None}
