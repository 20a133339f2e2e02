"""The gates' bookkeeping (``core/gates.py``) as plain state: no event loop, no database."""

import ast
import pathlib
import re

import pytest

from duro.core.gates import InputGate, OutputGate
from duro.core.limits import MAX_BCW_DEPTH, TEXT_BCW_NESTED
from duro.errors import ObjectResetError

CORE = pathlib.Path(__file__).resolve().parents[2] / "src" / "duro" / "core"


# ---------------------------------------------------------------------- input gate: locks
def test_a_new_input_gate_is_open_and_not_broken():
    gate = InputGate()
    assert gate.locks == 0 and gate.owner is None and gate.foreign_use is False and gate.broken is None


def test_the_gate_opens_when_its_last_lock_is_released():
    gate = InputGate()
    gate.lock()
    gate.lock()
    assert gate.unlock() is False and gate.locks == 1
    assert gate.unlock() is True and gate.locks == 0


def test_locks_nest_only_to_the_limit_and_a_refused_lock_takes_nothing():
    gate = InputGate()
    for _ in range(MAX_BCW_DEPTH):
        gate.lock()
    with pytest.raises(RuntimeError, match=re.escape(TEXT_BCW_NESTED)):
        gate.lock()
    with pytest.raises(RuntimeError, match=re.escape(TEXT_BCW_NESTED)):
        gate.enter_critical_section(object())
    assert gate.locks == MAX_BCW_DEPTH and gate.owner is None


# ---------------------------------------------------------------------- input gate: critical sections
def test_a_critical_section_locks_the_gate_and_names_its_owner():
    gate, me = InputGate(), object()
    saved = gate.enter_critical_section(me)
    assert gate.locks == 1 and gate.owner is me
    assert gate.is_foreign(me) is False and gate.is_foreign(None) is True and gate.is_foreign(object()) is True
    assert gate.leave_critical_section(saved) is True
    assert gate.locks == 0 and gate.owner is None and gate.is_foreign(None) is False


def test_storage_use_by_anyone_but_the_owner_is_foreign_use():
    gate, me = InputGate(), object()
    gate.note_use(None)  # outside any critical section nothing is foreign
    assert gate.foreign_use is False
    gate.enter_critical_section(me)
    gate.note_use(me)
    assert gate.foreign_use is False
    gate.note_use(None)  # an event that is not part of the section
    assert gate.foreign_use is True


def test_foreign_use_inside_a_nested_section_is_the_outer_sections_too():
    gate, outer, inner = InputGate(), object(), object()
    saved_outer = gate.enter_critical_section(outer)
    saved_inner = gate.enter_critical_section(inner)
    assert gate.owner is inner and gate.foreign_use is False
    gate.note_use(outer)  # the outer section's own task is foreign to the inner one
    assert gate.leave_critical_section(saved_inner) is False
    assert gate.owner is outer and gate.foreign_use is True
    assert gate.leave_critical_section(saved_outer) is True


def test_a_clean_inner_section_keeps_the_outer_sections_foreign_use():
    gate, outer, inner = InputGate(), object(), object()
    saved_outer = gate.enter_critical_section(outer)
    gate.note_use(None)
    saved_inner = gate.enter_critical_section(inner)
    assert gate.foreign_use is False  # the inner section starts clean ...
    gate.leave_critical_section(saved_inner)
    assert gate.foreign_use is True  # ... and hands the outer one back its own
    gate.leave_critical_section(saved_outer)


def test_foreign_use_is_forgotten_once_the_gate_opens():
    gate, me = InputGate(), object()
    gate.lock()  # a block_concurrency_while outlives the section
    saved = gate.enter_critical_section(me)
    gate.note_use(None)
    gate.leave_critical_section(saved)
    assert gate.foreign_use is True and gate.locks == 1
    assert gate.unlock() is True
    assert gate.foreign_use is False


# ---------------------------------------------------------------------- input gate: broken
def test_a_broken_gate_stays_broken_with_its_first_error():
    gate = InputGate()
    first, second = ValueError("commit failed"), KeyError("later")
    assert gate.break_with(first) is True
    assert gate.break_with(second) is False
    gate.lock()
    gate.unlock()
    assert gate.broken is first


def test_every_caller_of_a_broken_gate_gets_its_own_reset_error():
    gate = InputGate()
    gate.break_with(ValueError("disk full"))
    a, b = gate.reset_error(), gate.reset_error()
    assert isinstance(a, ObjectResetError) and a is not b
    assert str(a) == "disk full" and a.remote is True and a.retryable is False


def test_a_reset_caused_by_a_retryable_failure_is_retryable():
    # A cluster node's object that moved (its append fenced): the write was never acknowledged,
    # and a retry reaches the new owner.
    class Moved(Exception):
        retryable = True

    gate = InputGate()
    gate.break_with(Moved("object x moved to another owner"))
    err = gate.reset_error()
    assert isinstance(err, ObjectResetError) and err.retryable is True and err.durable_object_reset is True


# ---------------------------------------------------------------------- output gate
def test_an_opened_transaction_gates_outputs_and_schedules_one_commit_turn():
    gate = OutputGate()
    assert gate.gated is False and gate.commit_scheduled is False
    assert gate.transaction_opened() is True
    assert gate.gated is True and gate.commit_scheduled is True
    assert gate.transaction_opened() is False  # the turn already queued commits it too
    assert gate.commit_turn() is True and gate.commit_scheduled is False


def test_a_held_transaction_is_committed_once_the_last_hold_is_released():
    gate = OutputGate()
    gate.hold()
    gate.hold()
    assert gate.transaction_opened() is False  # no turn while a critical section holds commits
    assert gate.release(transaction_open=True) is False and gate.holds == 1
    assert gate.release(transaction_open=True) is True and gate.commit_scheduled is True
    assert gate.commit_turn() is True


def test_a_commit_turn_that_runs_during_a_hold_does_not_commit():
    gate = OutputGate()
    assert gate.transaction_opened() is True
    gate.hold()  # transaction() began in the same turn as the write
    assert gate.commit_turn() is False and gate.commit_scheduled is False
    assert gate.release(transaction_open=True) is True  # the release queues the commit instead


def test_releasing_schedules_nothing_without_an_open_transaction_or_with_a_turn_queued():
    gate = OutputGate()
    gate.hold()
    assert gate.release(transaction_open=False) is False
    gate.transaction_opened()
    gate.hold()
    assert gate.release(transaction_open=True) is False  # the queued turn will commit


# ---------------------------------------------------------------------- Sans-I/O
@pytest.mark.parametrize("module", ["gates.py", "lifecycle.py"])
def test_the_bookkeeping_does_no_io(module):
    tree = ast.parse((CORE / module).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert not imported & {"asyncio", "sqlite3", "apsw", "time", "socket", "threading", "os"}
