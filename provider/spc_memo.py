"""The SPC's resolved objects, remembered by the exact parameters they were resolved from.

Resolving and checking an SPC's objects (field spellings, backend inference, paths, modes, each
backend's schema) is a third of a sealed Mount's CPU, and rotation polls re-send the same
attributes every two minutes per pod. :func:`provider.spc.parse_objects` is a pure function of
the parameters and the daemon's fixed registry, so its result can be reused for identical
parameters: the key is a SHA-256 over every parameter (names and values, the pod's attributes
included), so a hit is exactly the answer a fresh parse would give. Keying by a digest keeps no
token or other attribute text in memory. Refusals are not remembered; the cache is bounded by
entries and bytes, and SPCs whose objects are large are resolved every time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from provider.bounded_cache import BoundedCache, approx_size
from provider.domain import SecretObject
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
        key = parameters_digest(parameters)
        hit = self._cache.get(key)
        if hit is not None:
            return list(hit)
        objects = parse_objects(parameters, self.registry)
        frozen = tuple(objects)
        self._cache.put(key, frozen, size=approx_size(frozen, MAX_ENTRY_BYTES) + 64)
        return objects

    def clear(self) -> None:
        self._cache.clear()
