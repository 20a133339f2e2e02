"""Durable Object IDs: derivation from names, random IDs, and parsing.

Per namespace, ``key = SHA-256(unique_key)``; a jurisdiction's IDs use a key of their own,
``SHA-256(unique_key + "\0" + jurisdiction)``, so ``idFromName("x")`` and
``jurisdiction("eu").idFromName("x")`` are different objects, as on Cloudflare, and an ID string
tells which jurisdiction it belongs to (the key its tail checks against). ``id_from_name(name)``: ``a = HMAC(key, name)[:16]``,
``b = HMAC(key, a)[:16]``, ``id = hex(a || b)``. Unique IDs use 16 random bytes for ``a``. An ID
string is valid for a namespace only if its second half is the HMAC of its first half, so IDs
cannot be forged and an ID from another namespace is refused.

This module imports nothing of duro but the error tree.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from .errors import InvalidIdError, InvalidInputError

__all__ = ["DurableObjectId", "NamespaceKey", "JURISDICTIONS"]

# Cloudflare's list (the type definition's; the docs name eu, us and fedramp).
JURISDICTIONS = ("eu", "us", "fedramp", "fedramp-high")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

# Cloudflare keeps an object's name (``ctx.id.name``) only up to 1,024 bytes; duro refuses longer
# names outright (``limits.max_name_bytes``) rather than hash megabytes and store them per object.
MAX_NAME_BYTES = 1024


class NamespaceKey:
    """The secret that mints and checks the IDs of one namespace."""

    __slots__ = ("unique_key", "jurisdiction", "id_key", "_key", "_names", "max_name_bytes", "_family")

    _MAX_CACHED_NAMES = 100_000

    def __init__(self, unique_key: str, *, max_name_bytes: int = MAX_NAME_BYTES, id_key: str | None = None,
                 jurisdiction: str | None = None) -> None:
        # ``id_key``: the key IDs are minted with when it is not ``unique_key`` -- a class renamed
        # or transferred by a migration keeps minting the IDs its objects already have.
        check_jurisdiction(jurisdiction)
        self.unique_key = unique_key
        self.jurisdiction = jurisdiction
        self.max_name_bytes = max_name_bytes
        self.id_key = id_key
        base = id_key or unique_key
        seed = base if jurisdiction is None else f"{base}\0{jurisdiction}"
        self._key = hashlib.sha256(seed.encode()).digest()
        self._names: dict[str, str] = {}  # name -> hex; two HMACs per lookup otherwise
        # The keys of the other jurisdictions of the namespace, made when an ID needs them.
        self._family: dict[str | None, NamespaceKey] = {jurisdiction: self}

    def for_jurisdiction(self, jurisdiction: str | None) -> "NamespaceKey":
        """The key of the same namespace in ``jurisdiction`` (None: unrestricted)."""
        key = self._family.get(jurisdiction)
        if key is None:
            key = NamespaceKey(self.unique_key, max_name_bytes=self.max_name_bytes, id_key=self.id_key,
                               jurisdiction=jurisdiction)
            key._family = self._family
            self._family[jurisdiction] = key
        return key

    def _tail(self, head: bytes) -> bytes:
        return hmac.new(self._key, head, hashlib.sha256).digest()[:16]

    def id_from_name(self, name: str) -> "DurableObjectId":
        if not isinstance(name, str):
            raise TypeError(f"id_from_name() takes a str, not {type(name).__name__}")
        hex_id = self._names.get(name)
        if hex_id is None:
            limit = self.max_name_bytes
            # Checked before hashing, and before encoding a name whose length alone is too much.
            if len(name) > limit or len(encoded := name.encode()) > limit:
                raise InvalidInputError(
                    f"Durable Object name is longer than the limit of {limit} bytes (UTF-8): "
                    f"{len(name)} characters given. Use a shorter name, or a hash of it.")
            head = hmac.new(self._key, encoded, hashlib.sha256).digest()[:16]
            hex_id = (head + self._tail(head)).hex()
            if len(self._names) >= self._MAX_CACHED_NAMES:
                self._names.clear()
            self._names[name] = hex_id
        return DurableObjectId(hex_id, name=name, namespace=self.unique_key, jurisdiction=self.jurisdiction)

    def new_unique_id(self) -> "DurableObjectId":
        head = os.urandom(16)
        return DurableObjectId((head + self._tail(head)).hex(), name=None, namespace=self.unique_key,
                               jurisdiction=self.jurisdiction)

    def id_from_string(self, text: str) -> "DurableObjectId":
        """The ID ``text`` names, in whichever jurisdiction of this namespace minted it (its
        ``jurisdiction`` says which: it survives ``toString()``, unlike ``name``)."""
        if not isinstance(text, str) or not _HEX64.fullmatch(text):
            raise InvalidIdError("Invalid Durable Object ID: must be 64 hex digits")
        raw = bytes.fromhex(text)
        head, tail = raw[:16], raw[16:]
        for j in dict.fromkeys((self.jurisdiction, None, *JURISDICTIONS)):
            key = self.for_jurisdiction(j)
            if hmac.compare_digest(tail, key._tail(head)):
                return DurableObjectId(text.lower(), name=None, namespace=self.unique_key, jurisdiction=j)
        raise InvalidIdError("Durable Object ID is not valid for this namespace.")

    def is_valid(self, text: str) -> bool:
        try:
            self.id_from_string(text)
        except InvalidIdError:
            return False
        return True


def check_jurisdiction(jurisdiction: str | None) -> None:
    """Refuse a jurisdiction Cloudflare does not have (None: unrestricted)."""
    if jurisdiction is not None and jurisdiction not in JURISDICTIONS:
        raise InvalidInputError(f"Unknown jurisdiction {jurisdiction!r}: expected one of "
                                f"{', '.join(JURISDICTIONS)} (or None for no restriction).")


class DurableObjectId:
    """An object's identity: 64 lower-case hex digits, plus its name when it was derived from one."""

    __slots__ = ("_hex", "name", "namespace", "jurisdiction")

    def __init__(self, hex_id: str, *, name: str | None, namespace: str, jurisdiction: str | None = None) -> None:
        self._hex = hex_id
        self.name = name
        self.namespace = namespace
        self.jurisdiction = jurisdiction  # None for an unrestricted namespace

    def __str__(self) -> str:
        return self._hex

    def to_string(self) -> str:
        return self._hex

    toString = to_string  # noqa: N815 - Cloudflare spelling

    def equals(self, other: object) -> bool:
        return self == other

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DurableObjectId):
            return self._hex == other._hex and self.namespace == other.namespace
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._hex)

    def __repr__(self) -> str:
        label = f" name={self.name!r}" if self.name is not None else ""
        if self.jurisdiction is not None:
            label += f" jurisdiction={self.jurisdiction}"
        return f"<DurableObjectId {self._hex[:12]}…{label}>"
