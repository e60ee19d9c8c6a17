"""One Vault HTTP exchange and what its answers mean: login, renewal, mount lookup, reads.

Every exchange is a coroutine on the daemon's event loop (:mod:`providers.vault.transport`);
transport faults and Vault's answers become keygate errors that name what was being done, never
a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from provider.errors import (
    BackendUnavailable,
    InvalidSPC,
    KeygateError,
    SecretNotFound,
    Unauthenticated,
)
from providers.common.errors import is_retryable
from providers.common.rate_limit import parse_retry_after
from providers.common.runtime import Retryable
from providers.vault.params import VaultParams
from providers.vault.transport import Pools, TLSFilesError, tls_reason

log = logging.getLogger("keygate.vault")

TOKEN_CACHE_CAP = 3600.0
REUSE_FRACTION = 2 / 3
RENEW_FRACTION = 2 / 3
MAX_ERROR_TEXT = 200
MAX_ANSWER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Read:
    """One distinct request: objects asking for the same (path, method, args) share it."""

    path: str
    query: tuple[tuple[str, str], ...]
    method: str
    args: str  # canonical JSON of secretArgs, "" when none

    @property
    def label(self) -> str:
        return self.path if self.method == "GET" else f"{self.path} ({self.method})"

    @property
    def writes(self) -> bool:
        """POST or PUT: Vault handles both as a write (vault-csi-provider's PKI tests send PUT), so
        the SPC's method is sent as written, with ``secretArgs`` as the JSON body."""
        return self.method != "GET"


@dataclass(slots=True)
class Session:
    """A Vault token obtained for one pod, with when to renew it and when to stop using it."""

    token: str
    renewable: bool
    issued: float
    ttl: float
    renewing: bool = False

    @property
    def renew_after(self) -> float:
        return self.issued + self.ttl * RENEW_FRACTION

    @property
    def expires(self) -> float:
        return self.issued + self.ttl - min(30.0, self.ttl / 10)


@dataclass(frozen=True, slots=True)
class Result:
    """A read's parsed answer: the key/value map, the kv version, lease facts, the whole body."""

    values: Any
    version: str
    dynamic: bool
    reuse_until: float = 0.0
    body: Mapping[str, Any] | None = None


class VaultHTTP:
    """The HTTP side of the backend: one keep-alive pool per (address, namespace, TLS)."""

    def __init__(self, request_timeout: float, workers: int, count: Callable[[str], None]) -> None:
        self.request_timeout = request_timeout
        self.workers = workers
        self.count = count
        self._pools = Pools(workers)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout, sock_read=request_timeout
        )

    async def send(
        self,
        params: VaultParams,
        method: str,
        path: str,
        what: str,
        *,
        token: str | None = None,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, Any]:
        """One HTTP exchange; transport faults become keygate errors that name ``what``.

        Each socket operation (connect with TLS handshake, each read) may take
        ``request_timeout``; the caller's mount deadline cancels the whole exchange, and the
        cancelled exchange closes its connection on the way out.
        """
        limit = self.request_timeout
        try:
            pool = self._pools.get(params.address, params.namespace, params.tls)
        except TLSFilesError as exc:
            raise BackendUnavailable(
                f"{params.where}: cannot use the TLS files given in the SPC while {what} "
                f"({exc.reason}); check vaultCACertPath, vaultCADirectory, "
                "vaultTLSClientCertPath and vaultTLSClientKeyPath on the node"
            ) from None
        self.count("requests")
        try:
            response = await pool.session.request(
                method,
                pool.url(path),
                headers={"X-Vault-Token": token} if token else None,
                json=body,
                params=list(query) or None,
                allow_redirects=False,
                timeout=self._timeout,
                server_hostname=pool.server_hostname,
                proxy=pool.proxy,
            )
            try:
                raw = await _capped(response)
            except BaseException:
                response.close()
                raise
            status = response.status
            response.release()
        except TimeoutError:
            raise Retryable(
                f"{params.where} is unreachable while {what} (no answer within {limit:g}s)"
            ) from None
        except TooLarge:
            raise BackendUnavailable(
                f"{params.where} answered with more than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB "
                f"while {what}; keygate reads at most that much from Vault"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise BackendUnavailable(
                f"{params.where}: TLS handshake failed while {what} ({tls_reason(exc)}); check "
                "vaultCACertPath / vaultCADirectory (the CA that signed Vault's certificate) and "
                "vaultTLSServerName (a name in that certificate)"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise Retryable(f"{params.where} is unreachable while {what} ({_cause(exc)})") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Retryable(
                f"{params.where} broke off its answer while {what} ({type(exc).__name__})"
            ) from None
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            if 200 <= status < 300:
                raise Retryable(
                    f"{params.where} answered {status} without a JSON body while {what}"
                ) from None
            data = None
        if status in (200, 204):
            return status, data
        errors = _errors(data)
        if status == 503 and "sealed" in errors.lower():
            raise BackendUnavailable(f"{params.where} is sealed (while {what}); unseal it and retry")
        if is_retryable(status):
            raise Retryable(
                f"{params.where} answered {status} while {what}: {errors or 'no detail'}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                throttled=status == 429,
            )
        return status, errors

    async def login(self, params: VaultParams, jwt: str) -> Session:
        what = f"logging in at auth/{params.auth_mount} as role {params.role!r}"
        status, data = await self.send(
            params,
            "POST",
            f"auth/{params.auth_mount}/login",
            what,
            body={"role": params.role, "jwt": jwt},
        )
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("auth"), dict):
            detail = data if isinstance(data, str) and data else f"HTTP {status}"
            raise Unauthenticated(
                f"{params.where} refused the pod's login at auth/{params.auth_mount} "
                f"({params.auth_method}) as role {params.role!r}: {detail}"
            )
        auth = data["auth"]
        self.count("logins")
        ttl = float(auth.get("lease_duration") or 0) or TOKEN_CACHE_CAP
        if int(auth.get("num_uses") or 0) > 0:
            ttl = 0.0
        log.info(
            "vault login",
            extra={"vault": params.address, "mount": params.auth_mount, "role": params.role, "ttl": ttl},
        )
        return Session(
            token=str(auth["client_token"]),
            renewable=bool(auth.get("renewable")),
            issued=time.monotonic(),
            ttl=min(ttl, TOKEN_CACHE_CAP),
        )

    async def renew(self, params: VaultParams, session: Session) -> Session | None:
        status, data = await self.send(
            params, "POST", "auth/token/renew-self", "renewing the pod's token", token=session.token, body={}
        )
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("auth"), dict):
            return None
        ttl = float(data["auth"].get("lease_duration") or 0)
        if ttl <= 0:
            return None
        self.count("renewals")
        return Session(session.token, bool(data["auth"].get("renewable")), time.monotonic(), ttl)

    async def mount_of(self, params: VaultParams, session: Session, path: str) -> tuple[bool, str | None]:
        """(known, the kv-v2 mount holding ``path`` or None); unknown when Vault would not say."""
        status, data = await self.send(
            params,
            "GET",
            f"sys/internal/ui/mounts/{path}",
            f"looking up the mount of {path!r}",
            token=session.token,
        )
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            return False, None
        info = data["data"]
        options = info.get("options") or {}
        if info.get("type") == "kv" and str(options.get("version")) == "2":
            return True, str(info.get("path", "")).strip("/") or None
        return True, None

    async def read(self, params: VaultParams, session: Session, read: Read, path: str) -> Result:
        what = f"reading {read.label!r}"
        body = json.loads(read.args) if read.args else ({} if read.writes else None)
        status, data = await self.send(
            params, read.method, path, what, token=session.token, body=body, query=read.query
        )
        self.count("reads")
        if status == 403:
            raise Forbidden(f"403 on {read.label!r}")
        if status == 404:
            raise SecretNotFound(f"{params.where}: nothing at {read.label!r} (404); check secretPath")
        if status == 400:
            raise InvalidSPC(f"{params.where} rejected {read.label!r} (400): {data or 'bad request'}")
        if status == 204 or not isinstance(data, dict):
            raise SecretNotFound(f"{params.where}: {read.label!r} returned no data")
        if status != 200:
            raise BackendUnavailable(f"{params.where} answered {status} for {read.label!r}: {data}")
        return result_of(read, data)

    async def close(self) -> None:
        await self._pools.close()


class Forbidden(KeygateError):
    """A 403 on a read: the token may have been revoked, so log in again once before failing."""


def result_of(read: Read, body: Mapping[str, Any]) -> Result:
    data = body.get("data")
    lease_id = str(body.get("lease_id") or "")
    lease = float(body.get("lease_duration") or 0)
    inner = data.get("data") if isinstance(data, dict) else None
    meta = data.get("metadata") if isinstance(data, dict) else None
    if read.method == "GET" and isinstance(inner, dict) and isinstance(meta, dict) and "version" in meta:
        return Result(values=inner, version=f"kv2:{meta['version']}", dynamic=False, body=body)
    dynamic = bool(lease_id) or read.writes
    if not dynamic:
        return Result(values=data, version="", dynamic=False, body=body)
    now = time.monotonic()
    valid_for = lease
    if valid_for <= 0 and isinstance(data, dict) and isinstance(data.get("expiration"), int | float):
        valid_for = float(data["expiration"]) - time.time()
    version = "lease:" + hashlib.sha256(lease_id.encode()).hexdigest()[:16] if lease_id else ""
    reuse_until = now + valid_for * REUSE_FRACTION if valid_for > 0 else 0.0
    return Result(values=data, version=version, dynamic=True, reuse_until=reuse_until, body=body)


class TooLarge(Exception):
    """An answer over :data:`MAX_ANSWER_BYTES` (Vault answers are small; this one is not Vault's)."""


async def _capped(response: aiohttp.ClientResponse) -> bytes:
    """The body (decompressed) if it stays within :data:`MAX_ANSWER_BYTES`."""
    length = response.content_length
    if length is not None and length > MAX_ANSWER_BYTES:
        raise TooLarge
    if length is not None and "Content-Encoding" not in response.headers:
        return await response.read()  # the parser stops at Content-Length: no more than that
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _cause(exc: aiohttp.ClientConnectorError) -> str:
    return type(exc.os_error).__name__ if exc.os_error is not None else type(exc).__name__


def _errors(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        text = "; ".join(str(e) for e in data["errors"])
        return text[:MAX_ERROR_TEXT]
    return ""
