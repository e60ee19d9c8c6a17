"""A local HTTP server that misbehaves on purpose, for fault-tolerance tests.

Modes: ``blackhole`` (accepts and reads, never answers), ``status`` (answers ``status`` with a
JSON error, e.g. 429 or 500; after ``fail_first`` failures it answers like a healthy Vault),
``healthy`` with ``fail_path`` (answers like Vault, but ``status`` for paths containing
``fail_path``), ``slowloris`` (starts a response and trickles a byte every ``trickle`` seconds), ``garbled``
(200 with a body that is not JSON). Every request is counted.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultServer:
    def __init__(
        self, mode: str, status: int = 500, fail_first: int = 10**9, trickle: float = 0.3, fail_path: str = ""
    ) -> None:
        self.mode = mode
        self.fail_path = fail_path
        self.status = status
        self.fail_first = fail_first
        self.trickle = trickle
        self.requests = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        handler = type("Handler", (_Handler,), {"fault": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    fault: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        self._body()
        fault = self.fault
        with fault.lock:
            fault.requests += 1
            count = fault.requests
        if fault.mode == "blackhole":
            fault.stop_event.wait(60)
            return
        if fault.mode == "slowloris":
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self.wfile.flush()
                for byte in b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n":
                    if fault.stop_event.wait(fault.trickle):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:
                return
            return
        if fault.mode == "garbled":
            data = b'{"auth": {"client_token": tru'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if fault.fail_path and fault.fail_path in self.path:
            self._json(fault.status, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]})
            return
        if count <= fault.fail_first:
            self._json(fault.status, {"errors": [f"injected {fault.status}"]})
            return
        if "login" in self.path:
            self._json(
                200, {"auth": {"client_token": "hvs.fault", "lease_duration": 3600, "renewable": False}}
            )
        else:
            self._json(200, {"data": {"data": {"password": "recovered-value"}, "metadata": {"version": 1}}})

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle


@contextmanager
def fault_server(mode: str, **kwargs: Any) -> Iterator[FaultServer]:
    server = FaultServer(mode, **kwargs)
    server.thread.start()
    try:
        yield server
    finally:
        server.stop_event.set()
        server.server.shutdown()
        server.server.server_close()
        server.thread.join()


def closed_port() -> int:
    """A port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)
