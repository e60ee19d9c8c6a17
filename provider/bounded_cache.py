"""The one cache type keygate uses: LRU, bounded by entries *and* bytes, with optional expiry.

Every cache in the daemon is keyed, directly or not, by what a request carries, and an attacker
can write the request. ``functools.lru_cache(maxsize=512)`` keyed by a 4 MiB SPC text can hold
2 GiB; a dict of per-token locks grows with every distinct token. So each cache has three limits:

* ``max_entries``: the number of entries;
* ``max_bytes``: an estimate of the memory held by all keys and values together;
* ``max_entry_bytes``: a key plus value larger than this is not remembered at all. The caller
  still gets its answer, it is only recomputed next time, so a huge input costs CPU once per
  request, never memory that stays.

Least recently used entries go first. An entry may also expire: a ``ttl`` for the whole cache,
or a deadline per entry (credentials that expire). Sizes are estimated once, on insert, by
:func:`approx_size` (``sys.getsizeof`` over the object graph, each object counted once), which
is within a small factor of what CPython really holds. Thread-safe: some callers run in the
backends' worker threads.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, ParamSpec, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")
R = TypeVar("R")

_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None))
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
_LEAVES = _ATOMS + _OPAQUE


def approx_size(obj: object, limit: int | None = None) -> int:
    """Bytes CPython holds for ``obj`` and everything it references (each object once).

    Walks containers, dataclasses and plain objects iteratively, so deep or aliased structures
    cost one visit per distinct object. Stops early once ``limit`` is exceeded and returns a
    number above it: callers only need to know "too big".
    """
    seen: set[int] = set()
    stack: list[object] = [obj]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if limit is not None and total > limit:
            return total
        if isinstance(item, _LEAVES):
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif dataclasses.is_dataclass(item):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif hasattr(item, "__dict__"):
            stack.append(vars(item))
    return total


class BoundedCache(Generic[K, V]):
    """An LRU map with an entry cap, a byte budget, a per-entry byte limit and optional expiry.

    ``on_evict`` receives each value the cache drops on its own (bounds, expiry, a new value for
    its key), outside the lock, so a cache of connections can close them; ``pop`` and ``clear``
    leave that to the caller.
    """

    def __init__(
        self,
        name: str,
        *,
        max_entries: int,
        max_bytes: int,
        max_entry_bytes: int | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[V], None] | None = None,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a cache needs room for at least one entry and one byte")
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes or max_bytes, max_bytes)
        self.ttl = ttl
        self._clock = clock
        self._on_evict = on_evict
        self._data: OrderedDict[K, tuple[V, int, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """The estimated bytes held by all entries (always <= ``max_bytes``)."""
        return self._bytes

    def get(self, key: K) -> V | None:
        """The value for ``key`` if present and not expired (it becomes most recently used)."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return None
            value, _, expires = entry
            if expires is None or self._clock() < expires:
                self._data.move_to_end(key)
                self.hits += 1
                return value
            self._drop(key)
            self.misses += 1
        self._evicted([value])
        return None

    def put(self, key: K, value: V, *, size: int | None = None, expires: float | None = None) -> bool:
        """Remember ``value``; False (and nothing kept) when the entry alone exceeds the limit.

        ``size`` is the caller's estimate of key plus value; by default :func:`approx_size`.
        ``expires`` is a deadline on this cache's clock; the cache's ``ttl`` applies otherwise.
        """
        if size is None:
            size = approx_size((key, value), self.max_entry_bytes)
        if expires is None and self.ttl is not None:
            expires = self._clock() + self.ttl
        gone: list[V] = []
        with self._lock:
            if key in self._data:
                old = self._drop(key)
                if old is not value:
                    gone.append(old)
            if size > self.max_entry_bytes:
                self.refused += 1
                kept = False
            else:
                self._data[key] = (value, size, expires)
                self._bytes += size
                if len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                    gone.extend(self._evict())
                kept = True
        self._evicted(gone)
        return kept

    def pop(self, key: K) -> None:
        with self._lock:
            if key in self._data:
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def values(self) -> list[V]:
        with self._lock:
            return [value for value, _, _ in self._data.values()]

    def _drop(self, key: K) -> V:
        value, size, _ = self._data.pop(key)
        self._bytes -= size
        return value

    def _evict(self) -> list[V]:
        now = self._clock()
        gone = [
            self._drop(k)
            for k in [k for k, (_, _, exp) in self._data.items() if exp is not None and now >= exp]
        ]
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            gone.append(self._drop(next(iter(self._data))))
            self.evictions += 1
        return gone

    def _evicted(self, values: list[V]) -> None:
        """Hand values the cache let go of (bounds, expiry, replacement) to ``on_evict``, unlocked."""
        if self._on_evict is not None:
            for value in values:
                self._on_evict(value)


def _arg_bytes(args: tuple[Any, ...]) -> int:
    return sum(len(a) for a in args if isinstance(a, str | bytes))


def bounded_memo(
    name: str, *, max_entries: int, max_bytes: int, max_entry_bytes: int
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Like ``functools.lru_cache`` for functions of hashable positional arguments, but bounded
    by bytes too; results whose arguments alone exceed ``max_entry_bytes`` are not remembered.

    Exceptions are not cached (a refused input costs its parse again, never memory). The cache
    is reachable as ``fn.cache`` (a :class:`BoundedCache`) for tests and ``fn.cache_clear()``.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        cache: BoundedCache[tuple[Any, ...], Any] = BoundedCache(
            name, max_entries=max_entries, max_bytes=max_bytes, max_entry_bytes=max_entry_bytes
        )

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if kwargs or _arg_bytes(args) > max_entry_bytes:
                return fn(*args, **kwargs)
            hit = cache.get(args)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
            result = fn(*args, **kwargs)
            if result is not None:
                cache.put(args, result)
            return result

        wrapper.cache = cache  # type: ignore[attr-defined]
        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        return wrapper

    return decorate
