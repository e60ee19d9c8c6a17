"""HTTP to Vault on the event loop: a keep-alive pool per (address, namespace, TLS settings).

A blocking client on worker threads cost more CPU per request than Vault itself (thread
hand-offs, a liveness poll per pooled connection, per-request adapter work) and a black-holed
server held a thread until the deadline shut its socket. Here every exchange is a coroutine of
the Mount that needs it: when the Mount is cancelled (deadline), the connection is closed with
it, and nothing outlives the Mount. Each pool holds at most ``workers`` connections, so one slow
Vault fills only its own pool.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl

from providers.common.runtime import Pooled
from providers.vault.params import TLSConfig

MAX_POOLS = 256
KEEPALIVE = 30.0
RECHECK = 1.0

Stamp = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class Pool:
    """One endpoint's keep-alive session and what every request to it carries."""

    session: aiohttp.ClientSession
    base: yarl.URL
    server_hostname: str | None
    proxy: str | None

    def url(self, path: str) -> yarl.URL:
        """``/v1/<path>`` below the address, every character of ``path`` taken literally (a
        ``%``, ``#`` or ``?`` in a secret's name is escaped, as vault-csi-provider's Go client does)."""
        return self.base.with_path(f"{self.base.path.rstrip('/')}/v1/{path}")


class TLSFilesError(Exception):
    """The SPC's CA or client-certificate files could not be loaded (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """The SPC's trust anchors (CA file and/or directory, else the system's), client
    certificate and verification choice, as vault-csi-provider applies them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif tls.ca_cert or tls.ca_dir:
            context.load_verify_locations(cafile=tls.ca_cert or None, capath=tls.ca_dir or None)
        else:
            context.load_default_certs()
        if tls.client_cert:
            context.load_cert_chain(tls.client_cert, tls.client_key or None)
    except ssl.SSLError as exc:
        raise TLSFilesError(f"SSLError: {exc.reason or 'not a usable PEM file'}") from None
    except OSError as exc:
        raise TLSFilesError(f"{type(exc).__name__}: {exc.strerror or 'unreadable'}") from None
    return context


def _stamp(tls: TLSConfig) -> Stamp:
    """Identity of the TLS files as they are now, so a rotated CA or client certificate gets a
    new pool (as a new connection of a blocking client would have re-read them)."""
    stamps: list[tuple[int, int, int] | None] = []
    for path in (tls.ca_cert, tls.ca_dir, tls.client_cert, tls.client_key):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        stamps.append((st.st_ino, st.st_mtime_ns, st.st_size) if st else None)
    return tuple(stamps)


def _proxy(address: str) -> str | None:
    """The proxy the environment names for ``address`` (read once per pool), or None."""
    parts = urlsplit(address)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme) or None


class Pools:
    """The keep-alive sessions, bounded by entries (least recently used closed first)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pools: Pooled[tuple[Any, ...], Pool] = Pooled(self._build, self._retire, MAX_POOLS)
        self._closing: set[asyncio.Task[None]] = set()
        self._recent: dict[tuple[str, str, TLSConfig], tuple[Pool, float]] = {}

    def get(self, address: str, namespace: str, tls: TLSConfig) -> Pool:
        """The pool for this endpoint; built (reading the TLS files) on first use, and again
        once the files changed (checked at most every :data:`RECHECK` seconds)."""
        endpoint = (address, namespace, tls)
        now = time.monotonic()
        recent = self._recent.get(endpoint)
        if recent is not None and now < recent[1]:
            return recent[0]
        pool = self._pools.get((*endpoint, _stamp(tls) if _has_files(tls) else ()))
        if len(self._recent) >= MAX_POOLS:
            self._recent.clear()
        self._recent[endpoint] = (pool, now + RECHECK)
        return pool

    def _build(self, key: tuple[Any, ...]) -> Pool:
        address, namespace, tls = key[0], key[1], key[2]
        context = ssl_context(tls) if address.startswith("https://") else None
        headers = {"X-Vault-Request": "true"}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        connector = aiohttp.TCPConnector(
            ssl=context if context is not None else True,
            limit=self.workers,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            raise_for_status=False,
        )
        return Pool(session, yarl.URL(address), tls.server_name or None, _proxy(address))

    def _retire(self, pool: Pool) -> None:
        """An evicted pool is closed in the background; a Mount still using it gets a
        connection error, which is retried on a new pool."""
        self._recent = {k: v for k, v in self._recent.items() if v[0] is not pool}
        task = asyncio.get_running_loop().create_task(pool.session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every pool (shutdown); waits for the closes, including evicted ones."""
        self._recent.clear()
        self._pools.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _has_files(tls: TLSConfig) -> bool:
    return bool(tls.ca_cert or tls.ca_dir or tls.client_cert or tls.client_key)


def tls_reason(exc: BaseException) -> str:
    """What went wrong in a TLS handshake, from the ssl error aiohttp wraps."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorCertificateError):
            current = current.certificate_error
            continue
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate not trusted: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return current.reason or "TLS error"
        if isinstance(current, aiohttp.ClientSSLError) and current.os_error is not current:
            current = current.os_error
            continue
        current = current.__cause__ or current.__context__
    return "TLS error"
