"""Public names are pinned: removing or renaming one is a deliberate, visible change."""

import duro
import duro.compat.workers as workers


def test_top_level_exports():
    assert set(duro.__all__) >= {
        "DurableObject", "WorkerEntrypoint", "Request", "Response", "DurableObjectId",
        "DurableObjectNamespace", "DurableObjectStub", "DurableObjectState", "DurableObjectStorage",
        "DuroError", "DurableObjectAbort", "ObjectResetError", "OverloadedError", "RemoteError",
    }
    for name in duro.__all__:
        assert getattr(duro, name) is not None


def test_workers_shim_exports():
    for name in ("DurableObject", "WorkerEntrypoint", "Request", "Response", "FetchResponse", "fetch"):
        assert hasattr(workers, name)
    assert workers.DurableObject is duro.DurableObject
