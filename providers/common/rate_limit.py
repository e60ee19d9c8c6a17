"""Token buckets per backend endpoint, shared by every Mount, so a mass rollout slows down instead
of tripping the backend's own throttling (and failing Mounts with "rate exceeded").

Every request attempt takes one token from its endpoint's bucket first (``rate`` tokens a
second, at most ``burst`` saved up). A throttling answer with ``Retry-After`` pauses the whole
bucket, so all Mounts back off together rather than each hammering the endpoint on its own.
Waits never pass the Mount deadline: a wait that would fails at once with ResourceExhausted.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from provider import metrics
from provider.bounded_cache import BoundedCache, approx_size
from provider.config import RATE_DEFAULTS, describe
from provider.domain import FetchContext
from provider.errors import ResourceExhausted

RUNTIME_KEY = "runtime"  # the daemon options provider.config puts into each backend's settings
MAX_ENDPOINTS = 1024
MAX_ENDPOINT_BYTES = 8 * 1024
MAX_RETRY_AFTER = 300.0
_SECONDS = re.compile(r"\A\s*([0-9]{1,6})(?:\.[0-9]{1,6})?\s*\Z")


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP date), capped at
    :data:`MAX_RETRY_AFTER`; None when absent or unreadable (the answer is then retried with the
    usual backoff)."""
    if not value or len(value) > 64:
        return None
    match = _SECONDS.fullmatch(value)
    if match is not None:
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now()), MAX_RETRY_AFTER)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` kept; a reservation may leave it in debt.

    Reserving instead of polling gives each caller its own place in line: the n-th caller past
    the burst waits n / rate seconds, and the endpoint sees a steady ``rate`` per second.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (rate > 0 and math.isfinite(rate)) or not (burst >= 1 and math.isfinite(burst)):
            raise ValueError("a token bucket needs a finite rate above 0 and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()  # refill runs from here; in the future while paused
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def reserve(self, limit: float) -> float | None:
        """Take a token: the seconds to wait before using it, or None (nothing taken) when
        that wait would exceed ``limit``."""
        with self._lock:
            now = self._clock()
            if now > self._stamp:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
            wait = max(0.0, self._stamp - now) + max(0.0, (1.0 - self._tokens) / self.rate)
            if wait > limit:
                return None
            self._tokens -= 1.0
            return wait

    def pause(self, seconds: float) -> None:
        """The endpoint asked everyone to wait (``Retry-After``): nothing leaves before then, and
        the bucket starts empty afterwards so the waiters do not all burst at once."""
        with self._lock:
            now = self._clock()
            if now > self._stamp:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._tokens = min(self._tokens, 0.0)
            self._stamp = max(self._stamp, now + seconds)
            self._paused_until = max(self._paused_until, now + seconds)

    def held(self) -> float:
        """Seconds a pause (``Retry-After``) still holds everyone back, 0 when none does; callers
        that reserved before the pause began wait this out too."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())


class Gate:
    """One endpoint's bucket as a backend uses it: wait for a slot, report a throttle."""

    __slots__ = ("backend", "bucket", "hint")

    def __init__(self, backend: str, bucket: TokenBucket, hint: str) -> None:
        self.backend = backend
        self.bucket = bucket
        self.hint = hint

    async def acquire(self, ctx: FetchContext) -> None:
        """Wait for this endpoint's next slot, or fail at once if it comes after the deadline."""
        left = ctx.remaining()
        wait = self.bucket.reserve(left)
        if wait is None:
            raise ResourceExhausted(
                f"{self.backend}: the backend's request rate limit has no slot within the {left:.1f}s "
                f"left before the mount deadline (the driver retries the Mount later); {self.hint}"
            )
        if wait > 0:
            await asyncio.sleep(wait)
        held = self.bucket.held()
        while held > 0:  # the endpoint asked everyone to wait while this caller was in line
            left = ctx.remaining()
            if held >= left:
                raise ResourceExhausted(
                    f"{self.backend}: the backend asked to wait {held:.1f}s (Retry-After), more than the "
                    f"{left:.1f}s left before the mount deadline (the driver retries the Mount later)"
                )
            wait += held
            await asyncio.sleep(held)
            held = self.bucket.held()
        metrics.record_rate_limit_wait(self.backend, wait)

    def throttled(self, retry_after: float | None) -> None:
        """The endpoint answered with throttling; honour its ``Retry-After`` for every Mount."""
        metrics.record_throttled(self.backend)
        if retry_after:
            self.bucket.pause(retry_after)


class RateLimits:
    """The buckets of one backend, one per endpoint, bounded by entries and bytes.

    Endpoints come from SPCs, so the map is a :class:`BoundedCache`; an endpoint key too large
    to keep shares one overflow bucket (it is limited, never unlimited).
    """

    def __init__(self, backend: str, rate: float, burst: float) -> None:
        self.backend = backend
        self.rate = rate
        self.burst = burst
        self._buckets: BoundedCache[Hashable, TokenBucket] = BoundedCache(
            f"{backend} rate limits",
            max_entries=MAX_ENDPOINTS,
            max_bytes=MAX_ENDPOINTS * (MAX_ENDPOINT_BYTES // 4),
            max_entry_bytes=MAX_ENDPOINT_BYTES,
        )
        self._overflow = TokenBucket(rate, burst)
        self._lock = threading.Lock()
        self._hint = (
            f"raise {describe(f'{backend}_rate', f'{backend}_burst')} if the backend allows more"
            if backend in RATE_DEFAULTS
            else "the backend's rate limit is built in"
        )

    @classmethod
    def from_settings(cls, backend: str, settings: Mapping[str, Any]) -> RateLimits:
        """From the daemon options the config injects (``runtime``), else the defaults."""
        rate, burst = RATE_DEFAULTS.get(backend, (500.0, 1000))
        given = settings.get(RUNTIME_KEY) or {}
        return cls(backend, float(given.get("rate", rate)), float(given.get("burst", burst)))

    def gate(self, endpoint: Hashable) -> Gate:
        """The gate of ``endpoint`` (an address, a (service, region, URL) tuple...)."""
        with self._lock:
            bucket = self._buckets.get(endpoint)
            if bucket is None:
                size = approx_size(endpoint, MAX_ENDPOINT_BYTES) + 512
                bucket = TokenBucket(self.rate, self.burst)
                if not self._buckets.put(endpoint, bucket, size=size):
                    bucket = self._overflow
            return Gate(self.backend, bucket, self._hint)

    def __len__(self) -> int:
        return len(self._buckets)
