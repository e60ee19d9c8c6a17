"""The SPC's resolved objects, remembered by the SPC parameters they were resolved from.

Resolving and checking an SPC's objects (field spellings, backend inference, paths, modes, each
backend's schema) is a third of a sealed Mount's CPU, and every pod of a Deployment sends the
same SPC, as does every rotation poll. Resolution reads the SPC, never the pod: the driver's
per-pod attributes (``csi.storage.k8s.io/...``: pod name, UID, namespace, service account,
tokens) are left out of what :func:`provider.spc.parse_objects` and each backend's ``validate``
see, so the result is a pure function of the SPC parameters and the daemon's fixed registry,
and 200 replicas share one entry. Anything that depends on the pod reads the attested
identity later (``FetchContext.pod``), never these unverified attributes.

The key is a SHA-256 over the SPC parameters (names and values, length-prefixed), so a hit is
exactly the answer a fresh parse would give; keying by a digest keeps no parameter text in
memory. Refusals are not remembered; the cache is bounded by entries and bytes, and SPCs whose
objects are large are resolved every time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from provider.bounded_cache import BoundedCache, approx_size
from provider.domain import SecretObject
from provider.request import POD_ATTRIBUTE_PREFIX
from provider.spc import parse_objects
from providers.registry import Registry

MAX_ENTRIES = 256
MAX_BYTES = 1024 * 1024
MAX_ENTRY_BYTES = 64 * 1024


def parameters_digest(parameters: Mapping[str, str]) -> bytes:
    """A collision-resistant digest of a string map (length-prefixed, in key order)."""
    digest = hashlib.sha256()
    for key in sorted(parameters):
        for part in (key, parameters[key]):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.digest()


def spc_parameters(parameters: Mapping[str, str]) -> dict[str, str]:
    """The SPC's own parameters: the attributes without the driver's per-pod ones."""
    return {k: v for k, v in parameters.items() if not k.startswith(POD_ATTRIBUTE_PREFIX)}


class ObjectsMemo:
    """``parse_objects`` for one registry, with identical parameters answered from memory.

    The objects handed out are shared between Mounts; like every :class:`SecretObject` they
    are read, never changed (selectors and backends build new objects and specs).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: BoundedCache[bytes, tuple[SecretObject, ...]] = BoundedCache(
            "spc resolved objects",
            max_entries=MAX_ENTRIES,
            max_bytes=MAX_BYTES,
            max_entry_bytes=MAX_ENTRY_BYTES,
        )

    def parse(self, parameters: Mapping[str, str]) -> list[SecretObject]:
        spc = spc_parameters(parameters)
        key = parameters_digest(spc)
        hit = self._cache.get(key)
        if hit is not None:
            return list(hit)
        objects = parse_objects(spc, self.registry)
        frozen = tuple(objects)
        self._cache.put(key, frozen, size=approx_size(frozen, MAX_ENTRY_BYTES) + 64)
        return objects

    def clear(self) -> None:
        self._cache.clear()
