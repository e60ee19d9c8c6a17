"""Prometheus metrics: what a platform team needs to see at a glance, and nothing more.

Every metric lives in one module-level :data:`REGISTRY` so any part of keygate (a backend's
cache, the attestation code) can record into it with a one-line call and no wiring. Labels are
restricted to small, fixed sets (outcome, error code, backend name, reason category): never
a pod name, an object name or any content, so the cardinality stays bounded and nothing secret
can leak through a scrape.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_MOUNT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)

MOUNTS = Counter(
    "keygate_mounts",
    "Mount RPCs answered, by outcome (ok, error, cancelled) and keygate error code ('' when ok).",
    ("outcome", "code"),
    registry=REGISTRY,
)
MOUNT_DURATION = Histogram(
    "keygate_mount_duration_seconds",
    "Wall time of one Mount RPC, from receipt to response, by outcome.",
    ("outcome",),
    buckets=_MOUNT_BUCKETS,
    registry=REGISTRY,
)
MOUNTS_IN_FLIGHT = Gauge(
    "keygate_mounts_in_flight",
    "Mount RPCs being processed right now.",
    registry=REGISTRY,
)
BACKEND_DURATION = Histogram(
    "keygate_backend_request_duration_seconds",
    "Time one backend took to fetch all of one Mount's objects for it, by backend and outcome.",
    ("backend", "outcome"),
    buckets=_MOUNT_BUCKETS,
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter(
    "keygate_backend_errors",
    "Failed backend fetches, by backend and keygate error code.",
    ("backend", "code"),
    registry=REGISTRY,
)
BACKEND_OBJECTS = Counter(
    "keygate_backend_objects",
    "Objects fetched successfully, by backend.",
    ("backend",),
    registry=REGISTRY,
)
CACHE_HITS = Counter(
    "keygate_cache_hits",
    "Lookups answered from an in-memory cache (clients, tokens, keys), by backend and cache.",
    ("backend", "cache"),
    registry=REGISTRY,
)
CACHE_MISSES = Counter(
    "keygate_cache_misses",
    "Lookups that had to go to the source, by backend and cache.",
    ("backend", "cache"),
    registry=REGISTRY,
)
ATTESTATION_DENIALS = Counter(
    "keygate_attestation_denials",
    "Mounts refused by attestation, by reason category (token_missing, image_unpinned, ...).",
    ("reason",),
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Histogram(
    "keygate_backend_rate_limit_wait_seconds",
    "Time a backend request waited for its endpoint's rate-limit slot (0 when one was free), by backend.",
    ("backend",),
    buckets=(0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0),
    registry=REGISTRY,
)
THROTTLED = Counter(
    "keygate_backend_throttled",
    "Backend answers that were throttling (429, 503 with Retry-After, throttling error codes), by backend.",
    ("backend",),
    registry=REGISTRY,
)
REVOCATIONS = Counter(
    "keygate_revocations",
    "Objects taken back from a pod on a rotation, by backend and reason category "
    "(not_found, deleted, disabled, forbidden, policy).",
    ("backend", "reason"),
    registry=REGISTRY,
)
READY = Gauge(
    "keygate_ready",
    "1 when the daemon is ready to serve mounts (socket serving, keys and policy loaded), else 0.",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "keygate_build_info",
    "Always 1; the labels carry the running keygate version.",
    ("version",),
    registry=REGISTRY,
)

_LABEL_RE = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,47}\Z")
MAX_LABEL_VALUES = 64
OTHER = "other"
_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def bounded(kind: str, value: str) -> str:
    """A label value safe to export: a short lowercase token from a set of at most 64 per kind.

    Callers pass categories, not data; this is the backstop in case one passes something
    unexpected (a long message, a name): it becomes ``other`` rather than a new time series.
    """
    text = value.strip().lower()
    if not _LABEL_RE.match(text):
        return OTHER
    with _seen_lock:
        values = _seen.setdefault(kind, set())
        if text not in values:
            if len(values) >= MAX_LABEL_VALUES:
                return OTHER
            values.add(text)
    return text


def record_denial(reason_code: str) -> None:
    """Count one attestation refusal; ``reason_code`` is a category such as ``token_expired``."""
    ATTESTATION_DENIALS.labels(reason=bounded("reason", reason_code)).inc()


def record_revocation(backend: str, reason: str) -> None:
    """Count one revoked object; ``reason`` is a :class:`provider.errors.Gone` category."""
    REVOCATIONS.labels(backend=bounded("backend", backend), reason=bounded("revocation", reason)).inc()


def record_cache_hit(backend: str, cache: str = "client") -> None:
    """Count a cache hit in ``backend``'s ``cache`` (e.g. ``client``, ``token``, ``jwks``)."""
    CACHE_HITS.labels(backend=bounded("backend", backend), cache=bounded("cache", cache)).inc()


def record_cache_miss(backend: str, cache: str = "client") -> None:
    """Count a cache miss (a lookup that went to the source)."""
    CACHE_MISSES.labels(backend=bounded("backend", backend), cache=bounded("cache", cache)).inc()


_CHILDREN_MAX = 256
_mount_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
_backend_ok: dict[str, tuple[Histogram, Counter]] = {}


def record_mount(outcome: str, code: str, seconds: float) -> None:
    """One finished Mount RPC (called by the server, which knows the final code).

    The labelled children are looked up once per label pair (a few exist), not per Mount.
    """
    children = _mount_children.get((outcome, code))
    if children is None:
        children = (MOUNTS.labels(outcome=outcome, code=code), MOUNT_DURATION.labels(outcome=outcome))
        if len(_mount_children) < _CHILDREN_MAX:
            _mount_children[(outcome, code)] = children
    children[0].inc()
    children[1].observe(seconds)


def record_backend(backend: str, seconds: float, *, objects: int = 0, error_code: str | None = None) -> None:
    """One backend fetch for one Mount: its duration and either its object count or its error."""
    if error_code is None:
        ok = _backend_ok.get(backend)
        if ok is None:
            name = bounded("backend", backend)
            ok = (BACKEND_DURATION.labels(backend=name, outcome="ok"), BACKEND_OBJECTS.labels(backend=name))
            if len(_backend_ok) < _CHILDREN_MAX:
                _backend_ok[backend] = ok
        ok[0].observe(seconds)
        ok[1].inc(objects)
        return
    name = bounded("backend", backend)
    BACKEND_DURATION.labels(backend=name, outcome="error").observe(seconds)
    BACKEND_ERRORS.labels(backend=name, code=error_code).inc()


def record_rate_limit_wait(backend: str, seconds: float) -> None:
    """One request's wait for its endpoint's rate-limit slot."""
    RATE_LIMIT_WAIT.labels(backend=bounded("backend", backend)).observe(seconds)


def record_throttled(backend: str) -> None:
    """One throttling answer from ``backend``."""
    THROTTLED.labels(backend=bounded("backend", backend)).inc()
