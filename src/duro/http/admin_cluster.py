"""The admin API's listing against a cluster (``duro objects list --server`` and the dashboard at
any node): every object of the cluster, not only the files of the node asked.

Which objects: those recorded in the cluster's object directory and those whose lease says which
object it is (:meth:`duro.cluster.leases.Leases.directory`), plus the files of this node (objects
claimed before the directory existed). Each row says its ``owner`` (the live node that holds its
lease now, None for none) and where its summary comes from (``source``):

- ``"owner"``: the owner's own file, asked of it over the cluster router (one call per owner node
  that asks it for its own objects matching the search, at most ``limit``, newest first), or read
  here for the objects this node owns;
- ``"local copy"``: no live owner (released, or its owner died), or an owner that did not answer:
  this node's copy of the file, which may be older than the object (the next owner rebuilds it
  from the replicated journal);
- None: neither: only its namespace and ID are known here (size, name and times are null).

An object with no owner is not claimed by a listing: ``show`` or ``sql`` of it is (answered by the
node asked, which takes it over).
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

from . import admin_views

__all__ = ["objects", "namespaces", "owned_objects"]

_TRIES = 3  # objects of one owner tried, in turn, to reach it (it may have let one go meanwhile)


def _blank(ns: str, hex_id: str, owner: str | None) -> dict[str, Any]:
    return {"namespace": ns, "id": hex_id, "name": None, "size": None, "last_write_ms": None,
            "last_write": None, "alarm_ms": None, "alarm": None, "owner": owner, "source": None}


async def _known(runtime: Any, keys: list[str]) -> dict[tuple[str, str], str]:
    """(namespace, ID) -> the node that owns it now ("" for none) of every object of ``keys``
    known to the cluster or stored here."""
    router = runtime.router
    selected = set(keys)
    known: dict[tuple[str, str], str] = {}
    for entry in await router.node.leases.directory():
        if entry["ns"] in selected:
            known[(entry["ns"], str(entry["id"]).lower())] = entry["node"]
    for key in keys:  # claimed before the cluster kept its directory, or not recorded yet
        for hex_id in await asyncio.to_thread(admin_views.stored_ids, runtime, key):
            known.setdefault((key, hex_id), "")
    me = router.slot.index
    for (ns, hex_id), owner in known.items():
        if router.is_local(hex_id):
            known[(ns, hex_id)] = me  # fresher than the buckets
        elif owner == me:
            known[(ns, hex_id)] = ""  # let go since the buckets were read
    return known


async def namespaces(runtime: Any) -> dict[str, Any]:
    """The namespaces this node serves, with the number of objects the cluster knows in each."""
    known = await _known(runtime, sorted(runtime.classes))
    counts = collections.Counter(ns for ns, _ in known)
    return {"namespaces": [{"namespace": key, "class": entry.class_name, "stored": counts.get(key, 0)}
                           for key, entry in sorted(runtime.classes.items())], "cluster": True}


def owned_objects(runtime: Any, args: dict[str, Any]) -> dict[str, Any]:
    """This node's own objects matching the search (admin_views.objects over the objects it owns),
    each with its owner: what another node's listing asks of it."""
    router = runtime.router
    out = admin_views.objects(runtime, args, keep=router.is_local)
    me = router.slot.index
    for row in out["objects"]:
        row.update(owner=me, source="owner")
    return dict(out, node=me)


async def objects(runtime: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The cluster's objects of one namespace (or all) whose name or ID contains ``q``, newest
    write first; at most ``limit`` (module doc)."""
    from ..runtime.router import PeerGone

    router = runtime.router
    q, limit, keys = admin_views.listing_args(runtime, args)
    known = await _known(runtime, keys)
    me = router.slot.index
    by_owner: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for (ns, hex_id), owner in sorted(known.items()):
        by_owner[owner].append((ns, hex_id))
    search = {"q": q, "limit": limit, **({"namespace": args["namespace"]} if args.get("namespace") else {})}
    body = json.dumps(search).encode()

    async def ask(owner: str) -> tuple[str, dict[str, Any] | None, str]:
        why = ""
        for _, hex_id in by_owner[owner][:_TRIES]:
            try:
                raw = await router.call(router.remote(hex_id), "admin", "", hex_id, None, "owned_objects", body)
                answer = json.loads(raw)
            except PeerGone as e:  # it did not answer within the call timeout: not asked again
                return owner, None, str(e)
            except Exception as e:  # noqa: BLE001 - it let the object go meanwhile: the next one
                why = str(e) or type(e).__name__
                continue
            if answer.get("status") == 200:
                return owner, answer["body"], ""
            why = str(answer.get("body", {}).get("error", answer.get("status")))
        return owner, None, why

    remote = [owner for owner in by_owner if owner and owner != me]
    answers = await asyncio.gather(*(ask(owner) for owner in remote))
    rows: list[dict[str, Any]] = []
    total = 0
    answered: dict[str, dict[str, Any]] = {}
    unreachable: dict[str, str] = {}
    for owner, got, why in answers:
        if got is None:
            unreachable[owner] = why
            continue
        node = str(got.get("node", owner))
        if node == me or node in answered:
            # The object asked moved to a node counted already: this owner's others are unknown here.
            unreachable.setdefault(owner, "its objects moved while they were listed")
        else:
            answered[node] = got
    for owner in remote:
        if owner not in answered:
            unreachable.setdefault(owner, "its objects moved while they were listed")
    seen: set[tuple[str, str]] = set()
    for got in answered.values():
        total += got["total"]
        rows.extend(got["objects"])
        seen.update((r["namespace"], r["id"]) for r in got["objects"])

    def here() -> tuple[list[dict[str, Any]], int]:
        out = admin_views.summaries(runtime, by_owner.get(me, []), q)
        for row in out:
            row.update(owner=me, source="owner")
        n = len(out)
        for owner in ["", *unreachable]:
            listed = [o for o in by_owner.get(owner, []) if o not in seen]
            copies = admin_views.summaries(runtime, listed, q)
            have = {(r["namespace"], r["id"]) for r in copies}
            for row in copies:
                row.update(owner=owner or None, source="local copy")
            blank = [_blank(ns, hex_id, owner or None) for ns, hex_id in listed
                     if (ns, hex_id) not in have and (not q or q in hex_id)]
            out += copies + blank
            n += len(copies) + len(blank)
        return out, n

    mine, n = await asyncio.to_thread(here)
    rows += mine
    total += n
    rows.sort(key=lambda r: r["last_write_ms"] if r["last_write_ms"] is not None else -1, reverse=True)
    return {"objects": rows[:limit], "total": total, "truncated": total > limit, "cluster": True,
            "node": me, "nodes": sorted({me, *answered}),
            "unreachable": [{"node": k, "error": v} for k, v in sorted(unreachable.items())]}
