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

The rule engine (:class:`Faults`) is shared by every misbehaving server of the fault tests:
:class:`FaultProxy` puts it in front of any plain-HTTP server (moto for AWS, the Google token
endpoints), matching a request by its AWS ``X-Amz-Target`` header, its query-protocol
``Action`` or its path, and optionally by a substring of its body; ``tests.azure_fake`` applies
it inside its TLS server. A rule's ``retry_after`` adds a ``Retry-After`` header to its status.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACTIONS = ("blackhole", "reset", "status", "garbled", "truncate", "trickle_headers", "trickle_body")


@dataclass
class Rule:
    prefix: str
    action: str
    status: int = 500
    times: int | None = None  # None: forever
    interval: float = 0.05
    contains: str = ""  # only requests whose body contains this text
    retry_after: str | None = None
    hits: int = 0


@dataclass
class Faults:
    """Fault rules, what they matched, and the sending of a misbehaving answer.

    ``requests`` counts every request by route and ``arrivals`` notes when each came
    (``time.monotonic()``, route); ``trickling`` / ``cut`` count trickled answers still being sent
    and those the client hung up on (so a test can see a worker was freed).
    """

    rules: list[Rule] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    trickling: int = 0
    cut: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def add(self, prefix: str, action: str, **kw: Any) -> Rule:
        if action not in ACTIONS:
            raise AssertionError(f"unknown fault action {action!r}")
        rule = Rule(prefix, action, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.arrivals.clear()

    def count(self, prefix: str) -> int:
        """Requests seen whose route starts with ``prefix``."""
        with self._lock:
            return sum(n for route, n in self.requests.items() if route.startswith(prefix))

    def release(self) -> None:
        """Let every black-holed or trickling answer end (at shutdown)."""
        self._stopping.set()

    def match(self, route: str, body: bytes = b"") -> Rule | None:
        with self._lock:
            self.requests[route] += 1
            self.arrivals.append((time.monotonic(), route))
            for rule in self.rules:
                if not route.startswith(rule.prefix) or rule.contains.encode() not in body:
                    continue
                if rule.times is None or rule.hits < rule.times:
                    rule.hits += 1
                    return rule
        return None

    def misbehave(self, conn: Any, rule: Rule, whole: bytes, error: Callable[[int], bytes]) -> None:
        """Send ``rule``'s answer on ``conn`` in place of ``whole`` (the good HTTP answer).

        ``error(status)`` is the server's own error answer (its JSON or XML shape) for ``status``.
        """
        if rule.action == "blackhole":
            self._stopping.wait()
        elif rule.action == "reset":
            return
        elif rule.action == "status":
            answer = error(rule.status)
            if rule.retry_after is not None:
                head, _, rest = answer.partition(b"\r\n")
                answer = head + f"\r\nRetry-After: {rule.retry_after}".encode() + b"\r\n" + rest
            conn.sendall(answer)
        elif rule.action == "garbled":
            conn.sendall(_response(200, b'{"data": {"data": {"pass'))
        elif rule.action == "truncate":
            head_len = whole.index(b"\r\n\r\n") + 4
            conn.sendall(whole[: head_len + (len(whole) - head_len) // 2])
        else:
            whole_head = whole.index(b"\r\n\r\n") + 4
            start = 0 if rule.action == "trickle_headers" else whole_head
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


@dataclass
class FaultVault(Faults):
    """A threaded Vault stand-in on 127.0.0.1; ``address`` is what goes into ``vaultAddress``."""

    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    logins: int = 0
    _open: set[socket.socket] = field(default_factory=set)

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

    def _answer(self, conn: socket.socket, method: str, path: str, body: bytes) -> None:
        path = path.split("?")[0].removeprefix("/v1/")
        rule = self.match(path)
        status, payload = self._vault(method, path, body)
        if rule is None:
            conn.sendall(_response(status, payload))
            return
        self.misbehave(conn, rule, _response(status, payload), _vault_error)

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


def _vault_error(status: int) -> bytes:
    return _response(status, json.dumps({"errors": [f"fault injected: HTTP {status}"]}).encode())


AWS_CODES = {429: "ThrottlingException", 500: "InternalFailure", 503: "ServiceUnavailable"}


def aws_error(status: int, route: str) -> bytes:
    """An AWS error answer: JSON for Secrets Manager / SSM, query-protocol XML for STS.

    Statuses without a well-known AWS code get one botocore does not know, so the backend must
    judge them by their HTTP status alone.
    """
    code = AWS_CODES.get(status, "FaultInjectedException")
    if "." in route:  # an X-Amz-Target: JSON protocol
        body = json.dumps({"__type": code, "message": f"fault injected: HTTP {status}"}).encode()
        return _response(status, body, "application/x-amz-json-1.1")
    xml = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>fault injected</Message>"
        "</Error><RequestId>fault</RequestId></ErrorResponse>"
    )
    return _response(status, xml.encode(), "text/xml")


class FaultProxy(Faults):
    """A plain-HTTP reverse proxy to ``upstream`` that applies :class:`Faults` rules.

    Without a matching rule it relays the request and the upstream's answer unchanged, so the
    real server (moto, the Google token fakes) stays the source of truth. A request's route is
    its ``X-Amz-Target`` header (``secretsmanager.GetSecretValue``), else the ``Action`` of a
    query-protocol body (``AssumeRoleWithWebIdentity``), else its path. ``error`` shapes status
    answers from (status, route) (AWS JSON or XML by default). ``upstream`` may be changed at any time (e.g. to a closed port).
    """

    def __init__(self, upstream: str, error: Callable[[int, str], bytes] = aws_error) -> None:
        super().__init__()
        self.upstream = upstream
        self.error = error
        self.answers: list[tuple[str, bytes]] = []  # (route, body) of every relayed answer
        self._open: set[socket.socket] = set()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(512)
        self.port = int(self._sock.getsockname()[1])
        self.address = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release()
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

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)
        try:
            request = _read_request(conn, with_headers=True)
            if request is None:
                return
            method, path, body, headers = request
            route = _route(path, headers, body)
            rule = self.match(route, body)
            error = functools.partial(self.error, route=route)
            if rule is not None and rule.action in ("blackhole", "reset", "status", "garbled"):
                self.misbehave(conn, rule, b"", error)
                return
            whole = self._relay(method, path, body, headers)
            with self._lock:
                self.answers.append((route, whole.partition(b"\r\n\r\n")[2]))
            if rule is None:
                conn.sendall(whole)
            else:
                self.misbehave(conn, rule, whole, error)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _relay(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        url = urlsplit(self.upstream)
        upstream = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
        try:
            forward = {k: v for k, v in headers.items() if k.lower() not in ("connection", "content-length")}
            upstream.request(method, path, body=body, headers=forward)
            answer = upstream.getresponse()
            payload = answer.read()
            kept = [
                (k, v)
                for k, v in answer.getheaders()
                if k.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server")
            ]
        finally:
            upstream.close()
        head = f"HTTP/1.1 {answer.status} {answer.reason}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in kept)
        head += f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        return head.encode("latin-1") + payload


def _route(path: str, headers: dict[str, str], body: bytes) -> str:
    target = headers.get("x-amz-target")
    if target:
        return target
    if b"Action=" in body:
        action = parse_qs(body.decode("latin-1")).get("Action")
        if action:
            return action[0]
    return path.split("?")[0]


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


def _response(status: int, payload: bytes, content_type: str = "application/json") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


def _read_request(conn: socket.socket, *, with_headers: bool = False) -> Any:
    """(method, path, body) of one HTTP request, plus its lower-cased headers if asked; None at EOF."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    if with_headers:
        return method, path, body, headers
    return method, path, body
