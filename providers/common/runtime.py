"""What every network backend shares: a bounded worker pool for blocking SDKs, retries with
jittered backoff, and a cache of authenticated clients that honours credential expiry.

The pool is per backend (a bulkhead): a slow cloud can fill its own workers but not the event
loop or another backend's. Retries stop at the mount deadline carried by :class:`FetchContext`.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from provider.bounded_cache import BoundedCache, approx_size
from provider.domain import FetchContext
from provider.errors import BackendUnavailable, DeadlineExceeded, KeygateError
from providers.common.rate_limit import Gate

T = TypeVar("T")


class WorkerPool:
    """Runs blocking SDK calls on at most ``size`` threads owned by one backend."""

    def __init__(self, name: str, size: int = 16) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"keygate-{name}")

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class KeyedPools:
    """One :class:`WorkerPool` per key (e.g. a server address), so one dead server fills only its own.

    A backend that reaches many servers (every SPC may name its own Vault) would otherwise let a
    black-holed server take every worker and stall Mounts of healthy ones. Threads start lazily,
    so an idle key costs nothing; beyond ``max_pools`` keys, idle pools are closed first.
    """

    def __init__(self, name: str, size: int = 16, max_pools: int = 64) -> None:
        self._name = name
        self._size = size
        self._max = max_pools
        self._pools: dict[Hashable, WorkerPool] = {}
        self._busy: dict[Hashable, int] = {}

    async def run(self, key: Hashable, fn: Callable[[], T]) -> T:
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= self._max:
                for idle in [k for k, n in self._busy.items() if n == 0]:
                    self._pools.pop(idle).close()
                    del self._busy[idle]
            pool = self._pools[key] = WorkerPool(self._name, self._size)
            self._busy[key] = 0
        self._busy[key] += 1
        try:
            return await pool.run(fn)
        finally:
            self._busy[key] -= 1

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._busy.clear()


# Retry-After counts whole seconds and servers round down (OpenBao's rate-limit quota answers
# "0" while it still refuses): a throttling answer's "0" is taken as "under a second", i.e. 1 s.
ZERO_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and the mount deadline."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))  # noqa: S311


class Retryable(KeygateError):
    """Raised by a backend's call wrapper for throttling or transient faults worth retrying.

    ``throttled`` marks the backend's "slow down" answers (429, throttling error codes);
    ``retry_after`` is the wait it asked for (``Retry-After``), in seconds, if any.
    """

    code = BackendUnavailable.code

    def __init__(self, message: str, *, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled or retry_after is not None


async def with_retries(
    call: Callable[[], Awaitable[T]],
    ctx: FetchContext,
    policy: RetryPolicy = RetryPolicy(),
    *,
    gate: Gate | None = None,
) -> T:
    """Await ``call`` until it succeeds, raises a non-retryable error, or time/attempts run out.

    Each attempt first waits for a slot of the endpoint's rate limit (``gate``). A throttling
    answer's ``Retry-After`` pauses the endpoint for every Mount (through the gate) and is the
    least this call waits before its next attempt, plus jitter; a wait that would pass the
    deadline fails at once. The last :class:`Retryable` is re-raised as BackendUnavailable.
    """
    last: Retryable | None = None
    for attempt in range(policy.attempts):
        if gate is not None:
            await gate.acquire(ctx)
        try:
            async with asyncio.timeout(ctx.remaining()):  # no extra task per attempt, unlike wait_for
                return await call()
        except Retryable as exc:
            last = exc
        except TimeoutError:
            raise DeadlineExceeded("the backend did not answer before the mount deadline") from None
        wait = last.retry_after
        if wait is not None and wait <= 0:
            wait = ZERO_RETRY_AFTER
        if last.throttled and gate is not None:
            gate.throttled(wait)
        if attempt + 1 >= policy.attempts:
            break
        pause = policy.delay(attempt)
        left = ctx.remaining()
        if wait is not None:
            if wait >= left:
                raise BackendUnavailable(
                    f"{last.message}; it asked to wait {wait:g}s (Retry-After), more than the "
                    f"{left:.1f}s left before the mount deadline (after {attempt + 1} attempts)"
                )
            if gate is None:
                pause += wait
        if pause >= left:
            break
        await asyncio.sleep(pause)
    assert last is not None
    raise BackendUnavailable(f"{last.message} (after {attempt + 1} attempts)")


K = TypeVar("K", bound=Hashable)


class ClientCache(Generic[K, T]):
    """Clients keyed by (endpoint, identity, ...), each dropped when its credentials expire.

    ``factory`` returns the client and the monotonic time at which it must no longer be used.
    Concurrent misses for one key build the client once; the per-key lock lives only while a
    build is in flight, so a stream of distinct keys (one per token) leaves nothing behind.

    Bounded by entries and bytes (:class:`provider.bounded_cache.BoundedCache`, least recently
    used first). An SDK client cannot be measured meaningfully, so an entry counts as its key's
    size plus ``entry_bytes``; a key larger than ``max_key_bytes`` (an endpoint or identity an
    SPC inflated) is built and used but not kept. ``close`` (if given) receives every client on
    :meth:`clear` (shutdown). A client dropped earlier (expired, evicted, invalidated) is left to
    the garbage collector rather than closed: a concurrent Mount of the same identity may still
    be using it, and a closed SDK client fails its requests.
    """

    def __init__(
        self,
        max_entries: int = 1024,
        margin: float = 60.0,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        entry_bytes: int = 16 * 1024,
        max_key_bytes: int = 16 * 1024,
        close: Callable[[T], None] | None = None,
    ) -> None:
        self._close = close
        self._entries: BoundedCache[K, tuple[T, float]] = BoundedCache(
            "clients",
            max_entries=max_entries,
            max_bytes=max_bytes,
            max_entry_bytes=max_key_bytes + entry_bytes,
        )
        self._building: dict[K, tuple[asyncio.Lock, list[int]]] = {}
        self._margin = margin
        self._entry_bytes = entry_bytes
        self._max_key_bytes = max_key_bytes
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._entries.bytes

    @property
    def in_flight(self) -> int:
        """Keys with a build (or a wait for one) under way."""
        return len(self._building)

    async def get(self, key: K, factory: Callable[[], Awaitable[tuple[T, float]]]) -> T:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            return entry[0]
        lock, users = self._building.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self.hits += 1
                    return entry[0]
                self.misses += 1
                client, expires = await factory()
                key_size = approx_size(key, self._max_key_bytes)
                self._entries.put(
                    key, (client, expires), size=key_size + self._entry_bytes, expires=expires - self._margin
                )
                return client
        finally:
            users[0] -= 1
            if not users[0]:
                self._building.pop(key, None)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key)

    def clear(self) -> None:
        close = self._close
        entries = self._entries.values()
        self._entries.clear()
        if close is not None:
            for client, _ in entries:
                close(client)


class Pooled(Generic[K, T]):
    """Long-lived clients (HTTP sessions, gRPC channels) per key, built once, kept in a
    :class:`BoundedCache`.

    Keys come from SPCs (addresses, regions), so the pool is bounded by entries and bytes like
    every other cache: beyond the bounds the least recently used client is closed. A client
    cannot be measured, so an entry counts as its key's size plus ``entry_bytes``; a key larger
    than ``max_key_bytes`` gets a client that is used once and not kept. Safe to use from worker
    threads.
    """

    def __init__(
        self,
        build: Callable[[K], T],
        close: Callable[[T], None],
        max_entries: int = 256,
        *,
        max_bytes: int = 8 * 1024 * 1024,
        entry_bytes: int = 16 * 1024,
        max_key_bytes: int = 16 * 1024,
    ) -> None:
        self._build = build
        self._close = close
        self._entry_bytes = entry_bytes
        self._max_key_bytes = max_key_bytes
        self._entries: BoundedCache[K, T] = BoundedCache(
            "pooled",
            max_entries=max_entries,
            max_bytes=max_bytes,
            max_entry_bytes=max_key_bytes + entry_bytes,
            on_evict=close,
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> T:
        with self._lock:
            client = self._entries.get(key)
            if client is None:
                client = self._build(key)
                size = approx_size(key, self._max_key_bytes) + self._entry_bytes
                self._entries.put(key, client, size=size)
            return client

    def close(self) -> None:
        with self._lock:
            clients = self._entries.values()
            self._entries.clear()
        for client in clients:
            self._close(client)


async def gather_all(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``calls`` concurrently, all or nothing: on the first failure the rest are cancelled
    and the most useful error is raised on its own (a KeygateError if any, else the first), so
    callers report one clear message rather than an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None
    return [task.result() for task in tasks]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The most useful error of a failed fan-out: a KeygateError if any, else the first."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            flat.append(exc)
    return next((exc for exc in flat if isinstance(exc, KeygateError)), flat[0])
