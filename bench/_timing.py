"""Median and p90 of an async call, for the per-Mount cost benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


async def timed(fn: Callable[[], Awaitable[object]], n: int, warmup: int) -> tuple[float, float]:
    """(median, p90) in microseconds of ``n`` calls, after ``warmup`` untimed ones (at most ``n``)."""
    for _ in range(min(warmup, n)):
        await fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]
