"""Health: a readiness record, the HTTP endpoints next to the metrics, and the gRPC health service.

Readiness is a set of named conditions (``socket``, ``keys``, ``policy``...), each set by the
part of keygate that owns it; the daemon is ready when every registered condition holds. A part
that is still loading registers its condition as not ready first (``readiness.set("policy",
False, "loading")``) and flips it once done, so a half-started daemon never receives traffic.

The HTTP server (``/metrics``, ``/healthz``, ``/readyz``) runs in its own thread so that a
scrape or a probe never waits behind a Mount, while ``/healthz`` still proves the event loop
answers: it schedules a no-op on the loop and fails if that does not run within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from provider import metrics
from provider.errors import KeygateError

log = logging.getLogger("keygate.health")

LIVENESS_TIMEOUT = 5.0


class Readiness:
    """Named conditions that must all hold before the daemon takes traffic; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[str, tuple[bool, str]] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        """Register or update condition ``name``; ``detail`` says why it is not ready (no secrets)."""
        with self._lock:
            self._conditions[name] = (ok, detail)
            ready = all(state for state, _ in self._conditions.values())
        metrics.READY.set(1 if ready else 0)

    def ready(self) -> bool:
        with self._lock:
            return bool(self._conditions) and all(ok for ok, _ in self._conditions.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: {"ok": ok, "detail": detail} for name, (ok, detail) in self._conditions.items()}


def parse_addr(addr: str) -> tuple[str, int]:
    """``:8098``, ``0.0.0.0:8098``, ``127.0.0.1:0`` or ``[::]:8098`` -> (host, port)."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise KeygateError(f"metrics address {addr!r} must look like ':8098' or '127.0.0.1:8098'")
    host = host.strip("[]")
    return host, int(port_text)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(metrics.REGISTRY), content_type)
        elif path == "/healthz":
            ok, detail = self.server.owner.alive()
            self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready = self.server.owner.readiness.ready()
            body = json.dumps({"ready": ready, "conditions": self.server.owner.readiness.snapshot()})
            self._send(200 if ready else 503, body.encode() + b"\n", "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds would drown the mount log; stay quiet."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: OpsServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class OpsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``addr``, served from a background thread."""

    def __init__(self, addr: str, readiness: Readiness, loop: asyncio.AbstractEventLoop | None) -> None:
        host, port = parse_addr(addr)
        self.readiness = readiness
        self.loop = loop
        server_cls = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            self.httpd: _HTTPServer = server_cls((host, port), _Handler)
        except OSError as exc:
            raise KeygateError(f"cannot listen for metrics on {addr}: {exc.strerror}") from None
        self.httpd.owner = self
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="keygate-ops", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()
        log.info(
            "metrics and health endpoints serving",
            extra={"metrics_addr": f"{self.address[0]}:{self.address[1]}"},
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def alive(self) -> tuple[bool, str]:
        """Live while the event loop still runs callbacks; a wedged loop fails the probe."""
        loop = self.loop
        if loop is None:
            return True, "ok"
        if loop.is_closed():
            return False, "event loop closed"
        done = threading.Event()
        try:
            loop.call_soon_threadsafe(done.set)
        except RuntimeError:
            return False, "event loop closed"
        if not done.wait(LIVENESS_TIMEOUT):
            return False, f"event loop did not respond within {LIVENESS_TIMEOUT:g}s"
        return True, "ok"


def grpc_health_servicer() -> Any:
    """The asyncio health servicer from ``grpcio-health-checking`` (its stubs lack ``aio``)."""
    from grpc_health.v1 import health

    return health.aio.HealthServicer()  # type: ignore[attr-defined]
