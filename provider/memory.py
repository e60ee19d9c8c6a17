"""Hand the memory a large request freed back to the kernel, so RSS follows what is live.

CPython frees a large request's strings (a 2 MiB attributes JSON, its parsed SPC, decoded
envelopes) to glibc's malloc, which keeps the pages for reuse. Small long-lived allocations made
meanwhile (a cache entry, a log record) pin the heap around them, so without help RSS stays at
the high-water mark of the worst burst for the life of the process: a few hundred refused 1-4
MiB Mounts added 40 MB that never came back. ``malloc_trim(0)`` returns every whole free page,
also those in the middle of the heap and in the worker threads' arenas.

A trim first runs a full garbage collection: a refused Mount's exception, traceback and frames
form a reference cycle that holds the request's strings until the collector's rare full pass,
and a trim cannot return pages that still hold them. Together that costs 10-30 ms of the event
loop, so it is coalesced: it runs ``delay`` seconds after a Mount once at least ``after_bytes``
of request data arrived since the last trim (but never within ``min_gap`` seconds of the last),
or at most every ``every`` seconds while Mounts arrive at all (this catches memory used by
messages gRPC refused before keygate saw them). A steady stream of small Mounts pays for one
trim per ``every`` seconds, a flood of large ones for one per ``min_gap``. Where the C library
has no ``malloc_trim`` (musl, macOS) only the collection runs.

:func:`tune_malloc` (called once by ``keygate serve``) also stops two glibc habits that turn
transient large requests into lasting RSS: the mmap threshold that grows to the largest block
ever freed (after one 4 MiB message, every later one is carved from the heap instead of being
mapped and unmapped), and one arena per busy thread (gRPC's and the backends' worker threads
each keep their own heap). An operator's own ``MALLOC_*`` environment settings win.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import time
from collections.abc import Callable
from typing import Any

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
ARENA_MAX = 2

_libc: Any
try:
    _libc = ctypes.CDLL(None)
    _libc_trim: Callable[[int], int] | None = _libc.malloc_trim
    _libc_mallopt: Callable[[int, int], int] | None = _libc.mallopt
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _libc_trim = _libc_mallopt = None


def tune_malloc() -> dict[str, int]:
    """Fix glibc's mmap threshold at 256 KiB and cap its arenas at 2; what was set, by name."""
    done: dict[str, int] = {}
    if _libc_mallopt is None:
        return done
    for env, option, value in (
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    ):
        if env not in os.environ and _libc_mallopt(option, value) == 1:
            done[env] = value
    return done


def release_free_memory() -> bool:
    """Return malloc's free pages to the kernel now; False when the C library cannot."""
    if _libc_trim is None:
        return False
    _libc_trim(0)
    return True


class HeapTrimmer:
    """Decides when a Mount's freed memory is worth a ``malloc_trim`` (see the module doc)."""

    def __init__(
        self,
        *,
        after_bytes: int = 1024 * 1024,
        every: float = 30.0,
        delay: float = 0.5,
        min_gap: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after_bytes = after_bytes
        self.every = every
        self.delay = delay
        self.min_gap = min_gap
        self._clock = clock
        self._pending = 0
        self._last = clock()
        self._scheduled: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.trims = 0

    def note(self, request_bytes: int) -> None:
        """Called once per finished Mount, on the event loop, with the request's size.

        A trim scheduled on another (e.g. a finished test's) loop does not block this one's."""
        self._pending += request_bytes
        loop = asyncio.get_running_loop()
        if self._scheduled is not None and self._loop is loop:
            return
        now = self._clock()
        if self._pending >= self.after_bytes or now - self._last >= self.every:
            wait = max(self.delay, self._last + self.min_gap - now)
            self._loop = loop
            self._scheduled = loop.call_later(wait, self.trim)

    def trim(self) -> None:
        self._scheduled = None
        self._pending = 0
        gc.collect()
        if release_free_memory():
            self.trims += 1
        self._last = self._clock()


TRIMMER = HeapTrimmer()
