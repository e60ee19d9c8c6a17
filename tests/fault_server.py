"""A small Vault-speaking HTTP(S) server that misbehaves on request, for the fault tests.

When it behaves it answers exactly the few Vault API calls keygate makes (``POST
/v1/auth/<mount>/login`` with a JWT, ``GET /v1/<kv2 mount>/data/<path>``) with Vault's JSON
shapes, so the real backend (hvac + requests) runs its normal code path against it. Rules,
matched by path prefix and optionally limited to the first N matching requests, make it:

- ``blackhole``: read the request, never answer (the socket stays open until ``stop``);
- ``status``: answer an HTTP status with a Vault ``{"errors": [...]}`` body (429, 5xx, ...);
- ``trickle_headers`` / ``trickle_body``: send the good answer one byte every ``interval``;
- ``truncate``: promise a Content-Length, send half the body, close;
- ``garbled``: a 200 whose body is not JSON;
- ``reset``: close the connection without answering.

``NoAccept`` is the other kind of dead server: a listening socket whose backlog is full, so a
connect() hangs (SYNs are dropped) exactly like a firewalled address.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rule:
    prefix: str
    action: str
    status: int = 500
    times: int | None = None  # None: forever
    interval: float = 0.05
    hits: int = 0


@dataclass
class FaultVault:
    """A threaded Vault stand-in on 127.0.0.1; ``address`` is what goes into ``vaultAddress``."""

    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    rules: list[Rule] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    logins: int = 0
    trickling: int = 0  # trickled answers still being sent
    cut: int = 0  # trickled answers the client hung up on
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: set[socket.socket] = field(default_factory=set)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(512)
        self.port = int(self._sock.getsockname()[1])
        scheme = "https" if self.tls is not None else "http"
        self.address = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # --- control -------------------------------------------------------------------------------

    def add(self, prefix: str, action: str, **kw: Any) -> Rule:
        rule = Rule(prefix, action, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._thread.join(5)

    # --- serving -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        with self._lock:
            self._open.add(raw)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            request = _read_request(conn)
            if request is None:
                return
            method, path, body = request
            self._answer(conn, method, path, body)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(raw)
            with contextlib.suppress(OSError):
                conn.close()

    def _rule_for(self, path: str) -> Rule | None:
        with self._lock:
            self.requests[path] += 1
            for rule in self.rules:
                if path.startswith(rule.prefix) and (rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule
        return None

    def _answer(self, conn: socket.socket, method: str, path: str, body: bytes) -> None:
        path = path.split("?")[0].removeprefix("/v1/")
        rule = self._rule_for(path)
        status, payload = self._vault(method, path, body)
        if rule is None:
            conn.sendall(_response(status, payload))
            return
        if rule.action == "blackhole":
            self._stopping.wait()
        elif rule.action == "reset":
            return
        elif rule.action == "status":
            errors = json.dumps({"errors": [f"fault injected: HTTP {rule.status}"]}).encode()
            conn.sendall(_response(rule.status, errors))
        elif rule.action == "garbled":
            conn.sendall(_response(200, b'{"data": {"data": {"pass'))
        elif rule.action == "truncate":
            whole = _response(status, payload)
            conn.sendall(whole[: len(whole) - len(payload) // 2])
        elif rule.action in ("trickle_headers", "trickle_body"):
            whole = _response(status, payload)
            head_len = whole.index(b"\r\n\r\n") + 4
            start = 0 if rule.action == "trickle_headers" else head_len
            conn.sendall(whole[:start])
            with self._lock:
                self.trickling += 1
            try:
                for i in range(start, len(whole)):
                    if self._stopping.wait(rule.interval):
                        return
                    conn.sendall(whole[i : i + 1])
            except OSError:
                with self._lock:
                    self.cut += 1
            finally:
                with self._lock:
                    self.trickling -= 1
        else:
            raise AssertionError(f"unknown fault action {rule.action!r}")

    def _vault(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Vault's answer when nothing is injected: jwt login and kv-v2 reads."""
        if method == "POST" and path.startswith("auth/") and path.endswith("/login"):
            request = json.loads(body or b"{}")
            if not request.get("jwt") or not request.get("role"):
                return 400, json.dumps({"errors": ["missing role or jwt"]}).encode()
            with self._lock:
                self.logins += 1
                n = self.logins
            auth = {
                "client_token": f"hvs.fault-token-{n}",
                "accessor": f"accessor-{n}",
                "policies": ["default", "app"],
                "lease_duration": 3600,
                "renewable": True,
            }
            return 200, json.dumps({"auth": auth, "data": None, "lease_duration": 0}).encode()
        if method == "GET":
            mount, _, rest = path.partition("/data/")
            values = self.secrets.get(f"{mount}/{rest}")
            if values is not None:
                data = {"data": values, "metadata": {"version": 3, "created_time": "2024-01-01T00:00:00Z"}}
                return 200, json.dumps({"data": data, "lease_duration": 0, "lease_id": ""}).encode()
        return 404, json.dumps({"errors": []}).encode()


class NoAccept:
    """A port that never completes a TCP handshake: listen(0) with the one backlog slot taken."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = int(self._sock.getsockname()[1])
        self.address = f"http://127.0.0.1:{self.port}"
        self._filler = socket.socket()
        self._filler.connect(("127.0.0.1", self.port))
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", self.port))
            raise AssertionError("backlog not full: the kernel completed a second handshake")
        except TimeoutError:
            pass
        finally:
            probe.close()

    def stop(self) -> None:
        self._filler.close()
        self._sock.close()


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _response(status: int, payload: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


def _read_request(conn: socket.socket) -> tuple[str, str, bytes] | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return method, path, body
