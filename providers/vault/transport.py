"""HTTP to Vault that the mount deadline can cut short, with the SPC's TLS settings.

requests' timeouts apply to each socket operation, so a server trickling a byte at a time would
hold a worker thread long after the Mount gave up: connections register with the running
:class:`Exchange`, which shuts the socket down when the Mount is cancelled.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from provider.errors import DeadlineExceeded
from providers.vault.params import TLSConfig


class Exchange:
    """One blocking HTTP exchange that the event loop can cut short at the mount deadline.

    requests' timeouts apply to each socket operation, so a server trickling a byte at a time
    would hold a worker thread long after the Mount gave up. The worker registers the connection
    it is using here; when the awaiting coroutine is cancelled (deadline), ``abort`` shuts the
    socket down and the blocked read returns at once.
    """

    _local = threading.local()

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.aborted = False

    @classmethod
    def current(cls) -> Exchange | None:
        exchange: Exchange | None = getattr(cls._local, "exchange", None)
        return exchange

    def run(self, fn: Callable[[], Any]) -> Any:
        self._local.exchange = self
        try:
            return fn()
        finally:
            self._local.exchange = None
            with self._lock:
                self._sock = None

    def attach(self, sock: socket.socket | None) -> None:
        """Remember the socket in use (http.client forgets it once a closing answer begins)."""
        with self._lock:
            if self.aborted:
                raise DeadlineExceeded("the mount deadline passed")
            if sock is not None:
                self._sock = sock

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


def _attach(conn: HTTPConnection) -> None:
    exchange = Exchange.current()
    if exchange is not None:
        exchange.attach(conn.sock)


class _Attaching(HTTPConnection):
    """Registers the socket with the current exchange so the deadline can close it."""

    def connect(self) -> None:
        _attach(self)
        super().connect()
        _attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _Conn(_Attaching):
    pass


class _TLSConn(_Attaching, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConn


class AbortableAdapter(HTTPAdapter):
    """requests' adapter whose connections register with the running :class:`Exchange`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class TLSAdapter(AbortableAdapter):
    """requests' adapter with the SPC's trust anchors, SNI name and client certificate.

    requests alone cannot combine a CA file with a CA directory or override the TLS server name,
    both of which vault-csi-provider users rely on, so the settings go to urllib3 directly.
    """

    def __init__(self, tls: TLSConfig, pool_maxsize: int) -> None:
        self._tls = tls
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        host, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        merged: dict[str, Any] = dict(kwargs)
        merged.update(self._tls.pool_kwargs())
        return host, merged

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        for key in ("cert_reqs", "ca_certs", "ca_cert_dir", "cert_file", "key_file"):
            setattr(conn, key, self._tls.pool_kwargs().get(key))


def broke_off(exc: requests.exceptions.RequestException) -> bool:
    """True when the server accepted the connection and then cut or mangled its answer."""
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        return isinstance(reason, urllib3.exceptions.ProtocolError)
    return False


def tls_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate not trusted: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return current.reason or "TLS error"
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = current.__cause__ or current.__context__ or nested
    return "TLS error"
