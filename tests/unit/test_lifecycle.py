"""The activation lifecycle table, and an activation that changes state only through it."""

import ast
import pathlib
import re

import pytest

from duro.core.lifecycle import ActivationState, DeactivationReason, check_transition
from duro.errors import ObjectResetError
from duro.ids import NamespaceKey
from duro.runtime import Runtime

LIFECYCLE = pathlib.Path(__file__).resolve().parents[2] / "src" / "duro" / "core" / "lifecycle.py"


def _documented_next_states() -> dict[str, set[str]]:
    """Each state's docstring, as written in the source: the states after "Next:" (none if "Terminal")."""
    tree = ast.parse(LIFECYCLE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ActivationState")
    found: dict[str, set[str]] = {}
    for stmt, doc in zip(cls.body, cls.body[1:]):
        if isinstance(stmt, ast.Assign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            text = doc.value.value
            assert ("Next:" in text) != ("Terminal" in text), text
            names = re.sub(r"\([^)]*\)", "", text.split("Next:", 1)[1]) if "Next:" in text else ""
            found[stmt.targets[0].id] = set(re.findall(r"\b[A-Z]{3,}\b", names))
    return found


def test_every_state_is_upper_case_and_documents_exactly_its_legal_next_states():
    documented = _documented_next_states()
    assert set(documented) == {s.name for s in ActivationState}
    for old in ActivationState:
        assert old.name.isupper()
        legal = set()
        for new in ActivationState:
            try:
                check_transition(old, new)
            except RuntimeError:
                continue
            legal.add(new.name)
        assert legal == documented[old.name], old


def test_an_illegal_transition_is_refused():
    with pytest.raises(RuntimeError, match="illegal activation transition BROKEN -> ACTIVE"):
        check_transition(ActivationState.BROKEN, ActivationState.ACTIVE)


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(tmp_path / "data")  # not started: no loop, no sweeper; nothing here opens a database
    rt.register("ns", "C", lambda act: object())
    yield rt


def _activation(rt):
    return rt.activation("ns", NamespaceKey("ns").id_from_name("a"))


def test_a_reset_enters_broken_keeps_its_first_error_and_leaves_the_catalog(runtime):
    act = _activation(runtime)
    first = ValueError("commit failed")
    act.reset(first, DeactivationReason.COMMIT_FAILED)
    act.reset(KeyError("later"), DeactivationReason.ABORT)
    assert act.state is ActivationState.BROKEN and act.broken is first
    assert runtime.find("ns", str(act.id)) is None
    with pytest.raises(ObjectResetError, match="commit failed"):
        act.check_usable()
    act.close(DeactivationReason.SHUTDOWN)  # closing a reset activation changes nothing
    assert act.state is ActivationState.BROKEN


def test_an_evicted_activation_can_still_be_reset(runtime):
    # A commit made just before the eviction may fail to become durable afterwards.
    act = _activation(runtime)
    act.close(DeactivationReason.IDLE)
    assert act.state is ActivationState.CLOSED and act.broken is None
    act.close(DeactivationReason.SHUTDOWN)
    assert act.state is ActivationState.CLOSED
    act.reset(OSError("fsync failed"), DeactivationReason.COMMIT_FAILED)
    assert act.state is ActivationState.BROKEN and isinstance(act.broken, OSError)


def test_broken_and_the_broken_state_agree(runtime):
    act = _activation(runtime)
    assert act.state is ActivationState.CREATED and act.broken is None
    act.reset(ValueError("x"), DeactivationReason.ABORT)
    assert (act.state is ActivationState.BROKEN) == (act.broken is not None)


def test_the_runtime_offers_everything_an_activation_needs_from_its_host(runtime):
    from duro.runtime.activation import ActivationHost
    needed = {name for name in vars(ActivationHost) if not name.startswith("_")}
    assert needed == {"limits", "barrier", "journal", "alarms", "history", "offload", "forget"}
    assert all(hasattr(runtime, name) for name in needed)
    assert isinstance(runtime.limits.max_queued_events, int) and callable(runtime.barrier.submit)
