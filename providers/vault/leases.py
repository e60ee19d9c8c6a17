"""Dynamic secrets kept for reuse (``vaultDynamicSecrets: reuse``), so rotation polls do not churn.

The driver re-mounts every rotation poll (two minutes by default). Re-reading a database role or
a PKI issue endpoint each time would create a database user or a certificate per poll. Instead
each pod's dynamic answer is kept (in memory) while most of its lease remains; when that part
has passed, a renewable lease is renewed (``sys/leases/renew``, same secret, same files) and
any other is issued anew. A renewal that no longer extends the lease (its max TTL is reached)
or fails also means a new secret. Bounded by entries and bytes, like every cache.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from provider.bounded_cache import BoundedCache
from provider.errors import KeygateError
from providers.vault.client import REUSE_FRACTION, Result

MAX_BYTES = 64 * 1024 * 1024
MAX_ENTRY_BYTES = 1024 * 1024
MIN_EXTENSION = 1.0

Renew = Callable[[str], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class Lease:
    """A dynamic answer with when its lease ends (monotonic) and whether it may be renewed."""

    result: Result
    expires: float
    renewable: bool
    lease_id: str = field(default="", repr=False)


def lease_of(result: Result, now: float) -> Lease | None:
    """The lease facts of a dynamic answer, or None when there is nothing worth keeping."""
    if not result.dynamic or result.reuse_until <= now:
        return None
    body = result.body or {}
    lease_id = str(body.get("lease_id") or "")
    duration = _seconds(body.get("lease_duration"))
    if lease_id and duration > 0:
        return Lease(result, now + duration, bool(body.get("renewable")), lease_id)
    return Lease(result, result.reuse_until, False)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if value > 0 else 0.0


class Leases:
    """Each pod's dynamic answers by (identity, read), until reuse ends or the lease does."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cache: BoundedCache[Hashable, Lease] = BoundedCache(
            "vault leases",
            max_entries=max_entries,
            max_bytes=MAX_BYTES,
            max_entry_bytes=MAX_ENTRY_BYTES,
            clock=clock,
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def bytes(self) -> int:
        return self._cache.bytes

    def keep(self, key: Hashable, result: Result) -> None:
        lease = lease_of(result, self._clock())
        if lease is not None:
            self._cache.put(key, lease, expires=lease.expires)

    async def current(self, key: Hashable, renew: Renew) -> Result | None:
        """The kept answer if still mostly valid, or renewed now; None means read a new one."""
        lease = self._cache.get(key)
        if lease is None:
            return None
        now = self._clock()
        if now < lease.result.reuse_until:
            return lease.result
        if not (lease.renewable and lease.lease_id) or now >= lease.expires:
            self._cache.pop(key)
            return None
        try:
            status, data = await renew(lease.lease_id)
        except KeygateError:
            status, data = 0, None
        duration = _seconds(data.get("lease_duration")) if status == 200 and isinstance(data, dict) else 0.0
        now = self._clock()
        if now + duration < lease.expires + MIN_EXTENSION:
            self._cache.pop(key)  # refused, or capped at the max TTL: time for a new secret
            return None
        assert isinstance(data, dict)
        renewed = Lease(
            replace(lease.result, reuse_until=now + duration * REUSE_FRACTION),
            now + duration,
            bool(data.get("renewable")),
            lease.lease_id,
        )
        self._cache.put(key, renewed, expires=renewed.expires)
        return renewed.result

    def clear(self) -> None:
        self._cache.clear()
