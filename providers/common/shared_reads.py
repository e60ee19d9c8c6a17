"""Shared reads: identical backend reads of concurrent Mounts go to the backend once.

When 100 replicas start on a node they ask for the same objects with the same identity. A read
is keyed by everything that decides what the backend would answer: backend, endpoint, the
identity the backend sees (see :func:`identity`), the object and its version selector, and any
per-read arguments. Mounts with equal keys are answered by one request (single flight, on by
default); with ``shared_read_ttl`` the answer is also reused for that many seconds (off by
default), from memory only, bounded by entries and bytes.

Only the fetch is shared: every Mount is attested on its own before its backend runs, and its
own deadline applies while it waits. The shared request runs as its own task, so a leader whose
Mount is cancelled does not fail the others; it is cancelled only when nobody waits any more.
Errors are shared too (a copy each, so one Mount's log fields never show in another's).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from provider import metrics
from provider.bounded_cache import BoundedCache, approx_size
from provider.domain import FetchContext
from provider.errors import DeadlineExceeded, KeygateError
from providers.common.rate_limit import RUNTIME_KEY

T = TypeVar("T")

MAX_TTL = 60.0
MAX_ENTRIES = 4096
MAX_BYTES = 64 * 1024 * 1024
MAX_ENTRY_BYTES = 4 * 1024 * 1024


def identity(ctx: FetchContext, *, verified: bool, token: str, per_pod: bool = False) -> tuple[str, ...]:
    """Who the backend sees, as far as its access decision goes.

    With attestation on, keygate has verified the pod's namespace and service account, and the
    backends' identities (a Vault kubernetes role, an IAM role trusted for a service account, a
    federated credential) are granted per service account, so replicas share. ``per_pod`` adds
    the pod (for identities a backend may grant per pod, e.g. Vault jwt roles binding any
    claim). Without attestation nothing about the pod is verified, so only requests carrying
    the very same token share (its digest is part of the key; the token itself never is).
    """
    pod = ctx.pod
    who: tuple[str, ...] = (pod.namespace, pod.service_account)
    if per_pod:
        who += (pod.name, pod.uid)
    if not verified:
        who += (pod.name, pod.uid, hashlib.sha256(token.encode()).hexdigest())
    return who


@dataclass
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    owner: Hashable
    waiters: int = 0


@dataclass
class SharedStats:
    """What the shared reads saved, for metrics and tests."""

    leaders: int = 0
    followers: int = 0
    cache_hits: int = 0


class SharedReads(Generic[T]):
    """Single flight plus an optional short reuse cache, for one backend's reads."""

    def __init__(
        self,
        backend: str,
        *,
        enabled: bool = True,
        ttl: float = 0.0,
        verified: bool = False,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
    ) -> None:
        if not 0 <= ttl <= MAX_TTL:
            raise KeygateError(f"shared_read_ttl must be between 0 and {MAX_TTL:g} seconds")
        self.backend = backend
        self.enabled = enabled
        self.ttl = ttl
        self.verified = verified
        self.stats = SharedStats()
        self._flights: dict[Hashable, _Flight[T]] = {}
        self._cache: BoundedCache[Hashable, T] | None = None
        if enabled and ttl > 0:
            self._cache = BoundedCache(
                f"{backend} shared reads",
                max_entries=max_entries,
                max_bytes=max_bytes,
                max_entry_bytes=max_entry_bytes,
                ttl=ttl,
            )

    @classmethod
    def from_settings(cls, backend: str, settings: Mapping[str, Any]) -> SharedReads[T]:
        """From the daemon options the config injects (``runtime``), else the defaults: single
        flight on, no reuse cache, and identities treated as unverified."""
        given = settings.get(RUNTIME_KEY) or {}
        return cls(
            backend,
            enabled=bool(given.get("shared_reads", True)),
            ttl=float(given.get("shared_read_ttl", 0) or 0),
            verified=bool(given.get("verified", False)),
        )

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def __len__(self) -> int:
        return 0 if self._cache is None else len(self._cache)

    async def read(
        self,
        key: Hashable,
        call: Callable[[], Awaitable[T]],
        ctx: FetchContext,
        *,
        owner: Hashable = None,
        private: Callable[[T], bool] | None = None,
        fresh: bool = False,
    ) -> T:
        """The answer of ``call`` for ``key``, from a read in flight, the cache, or a new read.

        ``owner`` names who runs the read (a pod); a result ``private`` says belongs to its
        reader (a dynamic secret: a lease, a new certificate) is never cached, and a waiter of
        another owner reads for itself instead of taking it. ``fresh`` skips the reuse cache (a
        caller re-checking a "gone" answer, so a cached one never delays a restore).
        """
        if not self.enabled:
            return await call()
        if self._cache is not None and not fresh:
            hit = self._cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                metrics.record_cache_hit(self.backend, "shared_reads")
                return hit
        flight = self._flights.get(key)
        if flight is None:
            self.stats.leaders += 1
            metrics.record_cache_miss(self.backend, "shared_reads")
            task = asyncio.get_running_loop().create_task(self._lead(key, call, private))
            task.add_done_callback(_retrieve)
            flight = self._flights[key] = _Flight(task, owner)
        else:
            self.stats.followers += 1
            metrics.record_cache_hit(self.backend, "shared_reads")
        value = await self._wait(key, flight, ctx)
        if flight.owner != owner and private is not None and private(value):
            return await call()
        return value

    async def _wait(self, key: Hashable, flight: _Flight[T], ctx: FetchContext) -> T:
        flight.waiters += 1
        try:
            return await asyncio.wait_for(asyncio.shield(flight.task), timeout=ctx.remaining())
        except TimeoutError:
            raise DeadlineExceeded("the backend did not answer before the mount deadline") from None
        except KeygateError as exc:
            raise _copy(exc) from None
        finally:
            flight.waiters -= 1
            if not flight.waiters and not flight.task.done():
                # nobody waits any more (every Mount gave up): stop the read, forget the flight
                flight.task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]

    async def _lead(
        self, key: Hashable, call: Callable[[], Awaitable[T]], private: Callable[[T], bool] | None
    ) -> T:
        try:
            value = await call()
            if self._cache is not None and (private is None or not private(value)):
                self._cache.put(key, value, size=approx_size((key, value), self._cache.max_entry_bytes))
            return value
        finally:
            if self._flights.get(key) is not None and self._flights[key].task is asyncio.current_task():
                del self._flights[key]

    def clear(self) -> None:
        for flight in list(self._flights.values()):
            flight.task.cancel()
        self._flights.clear()
        if self._cache is not None:
            self._cache.clear()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared read's outcome as seen, so one nobody waited for is not logged as lost."""
    if not task.cancelled():
        task.exception()


def _copy(exc: KeygateError) -> KeygateError:
    """The shared error for one waiter: same type, code and message, its own log fields."""
    try:
        mine = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an error type that cannot be copied is shared as it is
        return exc
    mine.log_fields = dict(exc.log_fields)
    return mine
