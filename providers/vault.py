"""The Vault (and OpenBao) backend: logs in *as the pod* and reads what the SPC lists.

Parameters mirror hashicorp/vault-csi-provider so an SPC moves over by changing only
``spec.provider``. The pod's own projected service-account token (for ``audience``) is exchanged
at the ``kubernetes`` or ``jwt`` auth method for a Vault token; the daemon never uses a token of
its own. Vault tokens are cached per (endpoint, namespace, auth mount, role, pod, JWT digest), so a
request must present the very token that logged in to reuse its Vault token, whatever attestation
is configured. Identical reads within a Mount happen once; distinct reads run concurrently on a
bounded worker pool (hvac and requests are blocking).

Dynamic secrets (anything with a lease, and every POST) are either re-requested on every Mount
(``per-mount``) or reused while most of their lease remains (``reuse``, the default), so the
driver's rotation poll does not mint a new database user every two minutes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from provider.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
)
from providers.base import FetchContext, Fetched, SecretObject
from providers.runtime import ClientCache, KeyedPools, Retryable, with_retries

log = logging.getLogger("keygate.vault")

ENCODINGS = ("utf-8", "base64", "hex")
METHODS = ("GET", "POST")
AUTH_METHODS = ("kubernetes", "jwt")
DYNAMIC_MODES = ("reuse", "per-mount")
DEFAULT_AUDIENCE = "vault"
TOKEN_CACHE_CAP = 3600.0
REUSE_FRACTION = 2 / 3
RENEW_FRACTION = 2 / 3
MAX_ERROR_TEXT = 200


def _bool_param(parameters: Mapping[str, str], key: str) -> bool:
    text = str(parameters.get(key, "")).strip().lower()
    if text in ("", "false", "0", "no", "off"):
        return False
    if text in ("true", "1", "yes", "on"):
        return True
    raise InvalidSPC(f"parameter {key!r} must be true or false")


def _mount_path(raw: str) -> str:
    """Accept ``kubernetes``, ``/kubernetes/``, ``auth/kubernetes``: all name one auth mount."""
    path = raw.strip().strip("/")
    if path.startswith("auth/"):
        path = path[len("auth/") :]
    return path


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How to check the Vault server (and present a client certificate), from SPC parameters."""

    ca_cert: str = ""
    ca_dir: str = ""
    server_name: str = ""
    client_cert: str = ""
    client_key: str = ""
    skip_verify: bool = False

    def pool_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cert_reqs": "CERT_NONE" if self.skip_verify else "CERT_REQUIRED"}
        if self.skip_verify:
            kwargs["assert_hostname"] = False
        if self.ca_cert:
            kwargs["ca_certs"] = self.ca_cert
        if self.ca_dir:
            kwargs["ca_cert_dir"] = self.ca_dir
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
            if not self.skip_verify:
                kwargs["assert_hostname"] = self.server_name
        if self.client_cert:
            kwargs["cert_file"] = self.client_cert
            kwargs["key_file"] = self.client_key or None
        return kwargs


class _Exchange:
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
    def current(cls) -> _Exchange | None:
        exchange: _Exchange | None = getattr(cls._local, "exchange", None)
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
    exchange = _Exchange.current()
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


class _AbortableAdapter(HTTPAdapter):
    """requests' adapter whose connections register with the running :class:`_Exchange`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class _TLSAdapter(_AbortableAdapter):
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


@dataclass(frozen=True, slots=True)
class VaultParams:
    """SPC-level settings of one Mount, validated once."""

    address: str
    namespace: str
    role: str
    auth_method: str
    auth_mount: str
    audience: str
    tls: TLSConfig
    dynamic: str

    @property
    def endpoint(self) -> tuple[str, str, TLSConfig]:
        return (self.address, self.namespace, self.tls)

    @property
    def where(self) -> str:
        ns = f" namespace {self.namespace!r}" if self.namespace else ""
        return f"Vault {self.address}{ns}"


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
    """A read's parsed answer: the key/value map, the kv version, and lease facts."""

    values: Any
    version: str
    dynamic: bool
    reuse_until: float = 0.0


class VaultBackend:
    """Reads Vault/OpenBao secrets with the pod's own identity."""

    name: ClassVar[str] = "vault"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.allow_skip_verify = bool(settings.get("insecure_allow_skip_tls_verify", False))
        self.default_address = str(settings.get("address", "") or "")
        self.default_audience = str(settings.get("default_audience", DEFAULT_AUDIENCE))
        self.default_auth_method = str(settings.get("auth_method", "kubernetes"))
        self.default_dynamic = str(settings.get("dynamic_secrets", "reuse"))
        if self.default_dynamic not in DYNAMIC_MODES:
            raise KeygateError(f"backends.vault.dynamic_secrets must be one of {', '.join(DYNAMIC_MODES)}")
        if self.default_auth_method not in AUTH_METHODS:
            raise KeygateError(f"backends.vault.auth_method must be one of {', '.join(AUTH_METHODS)}")
        self.request_timeout = float(settings.get("request_timeout", 10.0))
        workers = int(settings.get("workers", 16))
        self._workers = workers
        self._pools = KeyedPools("vault", workers)
        self._http: dict[tuple[str, str, TLSConfig], Any] = {}
        self._http_lock = threading.Lock()
        self._tokens: ClientCache[tuple[Any, ...], Session] = ClientCache(margin=0.0)
        self._leases: dict[tuple[Any, ...], Result] = {}
        self._kv2_prefix: dict[tuple[Any, ...], str | None] = {}
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()

    def _count(self, name: str) -> None:
        """Counters (logins, renewals, reads, ...) for metrics and tests; bumped from worker threads."""
        with self._stats_lock:
            self.stats[name] += 1

    # --- SPC parsing -------------------------------------------------------------------------

    def params(self, parameters: Mapping[str, str]) -> VaultParams:
        """The SPC-level Vault settings, with vault-csi-provider's names and defaults."""
        address = (parameters.get("vaultAddress") or self.default_address).strip().rstrip("/")
        if not address:
            raise InvalidSPC("parameter 'vaultAddress' is required (e.g. https://vault.vault:8200)")
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidSPC("parameter 'vaultAddress' must be an http(s) URL such as https://vault:8200")
        role = (parameters.get("roleName") or "").strip()
        if not role:
            raise InvalidSPC("parameter 'roleName' is required: the Vault role the pod logs in as")
        method = (parameters.get("vaultAuthMethod") or self.default_auth_method).strip().lower()
        if method not in AUTH_METHODS:
            raise InvalidSPC(f"parameter 'vaultAuthMethod' must be one of {', '.join(AUTH_METHODS)}")
        mount_raw = (
            parameters.get("vaultAuthMountPath") or parameters.get("vaultKubernetesMountPath") or method
        )
        mount = _mount_path(mount_raw)
        if not mount or ".." in mount.split("/"):
            raise InvalidSPC("parameter 'vaultAuthMountPath' must name an auth mount such as 'kubernetes'")
        skip = _bool_param(parameters, "vaultSkipTLSVerify")
        if skip and not self.allow_skip_verify:
            raise InvalidSPC(
                "parameter 'vaultSkipTLSVerify' is refused: without certificate checks the pod's "
                "token can be stolen; give vaultCACertPath instead (or start keygate with "
                "--insecure-allow-vault-skip-tls-verify)"
            )
        cert = (parameters.get("vaultTLSClientCertPath") or "").strip()
        key = (parameters.get("vaultTLSClientKeyPath") or "").strip()
        if bool(cert) != bool(key):
            raise InvalidSPC("parameters 'vaultTLSClientCertPath' and 'vaultTLSClientKeyPath' go together")
        tls = TLSConfig(
            ca_cert=(parameters.get("vaultCACertPath") or "").strip(),
            ca_dir=(parameters.get("vaultCADirectory") or "").strip(),
            server_name=(parameters.get("vaultTLSServerName") or "").strip(),
            client_cert=cert,
            client_key=key,
            skip_verify=skip,
        )
        dynamic = (parameters.get("vaultDynamicSecrets") or self.default_dynamic).strip().lower()
        if dynamic not in DYNAMIC_MODES:
            raise InvalidSPC(f"parameter 'vaultDynamicSecrets' must be one of {', '.join(DYNAMIC_MODES)}")
        audience = parameters.get("audience")
        return VaultParams(
            address=address,
            namespace=(parameters.get("vaultNamespace") or "").strip().strip("/"),
            role=role,
            auth_method=method,
            auth_mount=mount,
            audience=self.default_audience if audience is None or audience.strip() == "" else audience,
            tls=tls,
            dynamic=dynamic,
        )

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        where = f"objects[{obj.index}] {obj.name!r}"
        self.params(parameters)
        path = obj.str_field("secretPath").strip().strip("/")
        if not path:
            raise InvalidSPC(f"{where}: 'secretPath' is required (e.g. secret/data/db)")
        if ".." in path.split("?")[0].split("/"):
            raise InvalidSPC(f"{where}: 'secretPath' must not contain '..'")
        obj.str_field("secretKey")
        method = obj.str_field("method", "GET").upper() or "GET"
        if method not in METHODS:
            raise InvalidSPC(f"{where}: 'method' must be GET or POST")
        encoding = obj.str_field("encoding", "utf-8").lower() or "utf-8"
        if encoding not in ENCODINGS:
            raise InvalidSPC(f"{where}: 'encoding' must be one of {', '.join(ENCODINGS)}")
        args = obj.field("secretArgs")
        if args is not None and not isinstance(args, dict):
            raise InvalidSPC(f"{where}: 'secretArgs' must be a mapping of request parameters")

    @staticmethod
    def read_of(obj: SecretObject) -> Read:
        raw = obj.str_field("secretPath").strip().strip("/")
        path, _, query = raw.partition("?")
        method = obj.str_field("method", "GET").upper() or "GET"
        args = obj.field("secretArgs")
        args_text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str) if args else ""
        return Read(path.strip("/"), tuple(sorted(parse_qsl(query))), method, args_text)

    # --- fetching ----------------------------------------------------------------------------

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        params = self.params(ctx.parameters)
        jwt = ctx.token_for(params.audience)
        if not jwt:
            present = ", ".join(repr(a) for a in sorted(ctx.tokens)) or "none"
            raise Unauthenticated(
                f"no service-account token for audience {params.audience!r} (tokens present: {present}); "
                f"add '- audience: {params.audience}' to spec.tokenRequests of the CSIDriver "
                "secrets-store.csi.k8s.io (or set the SPC parameter 'audience' to one it requests)"
            )
        pod = ctx.pod
        if params.tls.skip_verify:
            log.warning(
                "vault TLS verification disabled by vaultSkipTLSVerify (insecure)",
                extra={"vault": params.address, "namespace": pod.namespace, "spc": ctx.spc_name},
            )
        token_key = (
            params.endpoint,
            params.auth_mount,
            params.role,
            pod.namespace,
            pod.name,
            pod.uid,
            pod.service_account,
            hashlib.sha256(jwt.encode()).hexdigest(),
        )
        reads = {self.read_of(obj): None for obj in objects}
        tasks = [self._read(params, ctx, jwt, token_key, read) for read in reads]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        results: dict[Read, Result] = {}
        for read, outcome in zip(reads, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            results[read] = outcome
        ids = [self._object_id(obj) for obj in objects]
        repeated = {i for i in ids if ids.count(i) > 1}
        out: list[Fetched] = []
        for obj, object_id in zip(objects, ids, strict=True):
            read = self.read_of(obj)
            result = results[read]
            if object_id in repeated:
                object_id = f"{object_id}~{obj.name}"
            contents = self._extract(obj, read, result)
            out.append(Fetched(obj=obj, object_id=object_id, contents=contents, version=result.version))
        return out

    @staticmethod
    def _object_id(obj: SecretObject) -> str:
        path = obj.str_field("secretPath").strip().strip("/")
        key = obj.str_field("secretKey")
        return f"vault/{path}#{key}" if key else f"vault/{path}"

    def _extract(self, obj: SecretObject, read: Read, result: Result) -> bytes:
        where = f"objects[{obj.index}] {obj.name!r}"
        key = obj.str_field("secretKey")
        values = result.values
        if key:
            if not isinstance(values, dict) or key not in values:
                names = ", ".join(sorted(map(str, values))) if isinstance(values, dict) else "none"
                raise SecretNotFound(
                    f"{where}: key {key!r} not found at Vault path {read.label!r} (keys there: {names})"
                )
            value = values[key]
        else:
            value = values
        raw = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
        encoding = obj.str_field("encoding", "utf-8").lower() or "utf-8"
        try:
            if encoding == "base64":
                return base64.b64decode(raw.strip(), validate=True)
            if encoding == "hex":
                return bytes.fromhex(raw.strip())
        except (binascii.Error, ValueError):
            raise InvalidSPC(
                f"{where}: the value at {read.label!r}"
                + (f" key {key!r}" if key else "")
                + f" is not valid {encoding}; remove 'encoding' or store it {encoding}-encoded"
            ) from None
        return raw.encode()

    async def _read(
        self, params: VaultParams, ctx: FetchContext, jwt: str, token_key: tuple[Any, ...], read: Read
    ) -> Result:
        lease_key = (token_key, read)
        cached = self._leases.get(lease_key)
        if cached is not None and params.dynamic == "reuse" and time.monotonic() < cached.reuse_until:
            self._count("lease_reuses")
            return cached
        session = await self._session(params, ctx, jwt, token_key)
        path = await self._kv_path(params, ctx, session, read)
        try:
            result = await self._request_read(params, ctx, session, read, path)
        except _Forbidden:
            current = await self._session(params, ctx, jwt, token_key)
            if current.token == session.token:
                self._tokens.invalidate(token_key)
                current = await self._session(params, ctx, jwt, token_key)
            self._count("relogins_after_403")
            try:
                result = await self._request_read(params, ctx, current, read, path)
            except _Forbidden:
                raise PermissionDenied(
                    f"{params.where}: role {params.role!r} may not {read.method} {read.path!r} "
                    "(403 permission denied); grant it in the role's policies"
                ) from None
        if result.dynamic and params.dynamic == "reuse" and result.reuse_until > time.monotonic():
            if len(self._leases) > 4096:
                self._prune_leases()
            self._leases[lease_key] = result
        return result

    def _prune_leases(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._leases.items() if v.reuse_until <= now]:
            self._leases.pop(key, None)
        while len(self._leases) > 4096:
            self._leases.pop(next(iter(self._leases)))

    async def _session(
        self, params: VaultParams, ctx: FetchContext, jwt: str, token_key: tuple[Any, ...]
    ) -> Session:
        async def login() -> tuple[Session, float]:
            session = await self._call(params, ctx, lambda: self._login(params, jwt))
            return session, session.expires

        session = await self._tokens.get(token_key, login)
        if session.renewable and not session.renewing and time.monotonic() > session.renew_after:
            session.renewing = True
            renewed: Session | None
            try:
                renewed = await self._call(params, ctx, lambda: self._renew(params, session))
            except KeygateError:
                renewed = None
            self._tokens.invalidate(token_key)

            async def reuse() -> tuple[Session, float]:
                assert renewed is not None
                return renewed, renewed.expires

            session = await self._tokens.get(token_key, reuse if renewed else login)
        return session

    async def _kv_path(self, params: VaultParams, ctx: FetchContext, session: Session, read: Read) -> str:
        """The path to request: ``secret/x`` on a kv-v2 mount becomes ``secret/data/x``.

        vault-csi-provider accepts both spellings; the mount's kv version comes from
        ``sys/internal/ui/mounts``, asked once per path and remembered.
        """
        if read.method != "GET" or "/data/" in read.path:
            return read.path
        key = (params.endpoint, read.path)
        if key in self._kv2_prefix:
            mount = self._kv2_prefix[key]
        else:
            known, mount = await self._call(params, ctx, lambda: self._mount_of(params, session, read.path))
            if known:
                if len(self._kv2_prefix) > 4096:
                    self._kv2_prefix.clear()
                self._kv2_prefix[key] = mount
        if mount is None:
            return read.path
        rest = read.path[len(mount) :].lstrip("/")
        if rest.startswith(("data/", "metadata/")) or not rest:
            return read.path
        return f"{mount}/data/{rest}"

    async def _request_read(
        self, params: VaultParams, ctx: FetchContext, session: Session, read: Read, path: str
    ) -> Result:
        result: Result = await self._call(params, ctx, lambda: self._do_read(params, session, read, path))
        return result

    async def _call(self, params: VaultParams, ctx: FetchContext, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker pool of this Vault address, with retries, until the deadline."""

        async def attempt() -> Any:
            exchange = _Exchange(ctx.deadline)
            try:
                return await self._pools.run(params.address, lambda: exchange.run(fn))
            except asyncio.CancelledError:
                exchange.abort()
                raise

        call: Callable[[], Awaitable[Any]] = attempt
        return await with_retries(call, ctx)

    # --- blocking HTTP (runs on the worker pool) ----------------------------------------------

    def _adapter(self, params: VaultParams) -> Any:
        with self._http_lock:
            adapter = self._http.get(params.endpoint)
            if adapter is None:
                import hvac.adapters

                session = requests.Session()
                # trust_env would re-read ~/.netrc and the CA-bundle variables on every request
                # (a fifth of the CPU of a burst); the proxy variables are honoured, read once.
                session.trust_env = False
                session.proxies = requests.utils.get_environ_proxies(params.address)
                tls = _TLSAdapter(params.tls, self._workers)
                session.mount("https://", tls)
                session.mount("http://", _AbortableAdapter(pool_maxsize=self._workers, max_retries=0))
                adapter = hvac.adapters.RawAdapter(
                    base_uri=params.address,
                    timeout=self.request_timeout,
                    session=session,
                    namespace=params.namespace or None,
                    allow_redirects=False,
                )
                if len(self._http) >= 256:
                    self._http.pop(next(iter(self._http))).close()
                self._http[params.endpoint] = adapter
            return adapter

    def _send(
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
        """One HTTP exchange; transport faults become keygate errors that name ``what``."""
        headers = {"X-Vault-Token": token} if token else {}
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if query:
            kwargs["params"] = list(query)
        exchange = _Exchange.current()
        if exchange is not None:
            left = exchange.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"the mount deadline passed before {what}")
            kwargs["timeout"] = min(self.request_timeout, left)
        self._count("requests")
        try:
            response = self._adapter(params).request(
                method, f"/v1/{path}", headers=headers, raise_exception=False, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise BackendUnavailable(
                f"{params.where}: TLS handshake failed while {what} ({_tls_reason(exc)}); check "
                "vaultCACertPath / vaultCADirectory (the CA that signed Vault's certificate) and "
                "vaultTLSServerName (a name in that certificate)"
            ) from None
        except requests.exceptions.RequestException as exc:
            if _broke_off(exc):
                raise Retryable(
                    f"{params.where} broke off its answer while {what} ({type(exc).__name__})"
                ) from None
            raise Retryable(f"{params.where} is unreachable while {what} ({type(exc).__name__})") from None
        except OSError as exc:
            raise BackendUnavailable(
                f"{params.where}: cannot use the TLS files given in the SPC while {what} "
                f"({type(exc).__name__}: {exc.strerror or 'unreadable'}); check vaultCACertPath, "
                "vaultCADirectory, vaultTLSClientCertPath and vaultTLSClientKeyPath on the node"
            ) from None
        try:
            data = response.json() if response.content else None
        except ValueError:
            if 200 <= response.status_code < 300:
                raise Retryable(
                    f"{params.where} answered {response.status_code} without a JSON body while {what}"
                ) from None
            data = None
        status = int(response.status_code)
        if status in (200, 204):
            return status, data
        errors = _errors(data)
        if status == 503 and "sealed" in errors.lower():
            raise BackendUnavailable(f"{params.where} is sealed (while {what}); unseal it and retry")
        if status in (429, 500, 502, 503, 504):
            raise Retryable(f"{params.where} answered {status} while {what}: {errors or 'no detail'}")
        return status, errors

    def _login(self, params: VaultParams, jwt: str) -> Session:
        what = f"logging in at auth/{params.auth_mount} as role {params.role!r}"
        status, data = self._send(
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
        self._count("logins")
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

    def _renew(self, params: VaultParams, session: Session) -> Session | None:
        status, data = self._send(
            params, "POST", "auth/token/renew-self", "renewing the pod's token", token=session.token, body={}
        )
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("auth"), dict):
            return None
        ttl = float(data["auth"].get("lease_duration") or 0)
        if ttl <= 0:
            return None
        self._count("renewals")
        return Session(session.token, bool(data["auth"].get("renewable")), time.monotonic(), ttl)

    def _mount_of(self, params: VaultParams, session: Session, path: str) -> tuple[bool, str | None]:
        """(known, the kv-v2 mount holding ``path`` or None); unknown when Vault would not say."""
        status, data = self._send(
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

    def _do_read(self, params: VaultParams, session: Session, read: Read, path: str) -> Result:
        what = f"reading {read.label!r}"
        body = json.loads(read.args) if read.args else ({} if read.method == "POST" else None)
        status, data = self._send(
            params, read.method, path, what, token=session.token, body=body, query=read.query
        )
        self._count("reads")
        if status == 403:
            raise _Forbidden(f"403 on {read.label!r}")
        if status == 404:
            raise SecretNotFound(f"{params.where}: nothing at {read.label!r} (404); check secretPath")
        if status == 400:
            raise InvalidSPC(f"{params.where} rejected {read.label!r} (400): {data or 'bad request'}")
        if status == 204 or not isinstance(data, dict):
            raise SecretNotFound(f"{params.where}: {read.label!r} returned no data")
        if status != 200:
            raise BackendUnavailable(f"{params.where} answered {status} for {read.label!r}: {data}")
        return _result(read, data)

    async def close(self) -> None:
        with self._http_lock:
            adapters = list(self._http.values())
            self._http.clear()
        for adapter in adapters:
            adapter.close()
        self._tokens.clear()
        self._leases.clear()
        self._pools.close()


class _Forbidden(KeygateError):
    """A 403 on a read: the token may have been revoked, so log in again once before failing."""


def _result(read: Read, body: Mapping[str, Any]) -> Result:
    data = body.get("data")
    lease_id = str(body.get("lease_id") or "")
    lease = float(body.get("lease_duration") or 0)
    inner = data.get("data") if isinstance(data, dict) else None
    meta = data.get("metadata") if isinstance(data, dict) else None
    if read.method == "GET" and isinstance(inner, dict) and isinstance(meta, dict) and "version" in meta:
        return Result(values=inner, version=f"kv2:{meta['version']}", dynamic=False)
    dynamic = bool(lease_id) or read.method == "POST"
    if not dynamic:
        return Result(values=data, version="", dynamic=False)
    now = time.monotonic()
    valid_for = lease
    if valid_for <= 0 and isinstance(data, dict) and isinstance(data.get("expiration"), int | float):
        valid_for = float(data["expiration"]) - time.time()
    version = "lease:" + hashlib.sha256(lease_id.encode()).hexdigest()[:16] if lease_id else ""
    reuse_until = now + valid_for * REUSE_FRACTION if valid_for > 0 else 0.0
    return Result(values=data, version=version, dynamic=True, reuse_until=reuse_until)


def _errors(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        text = "; ".join(str(e) for e in data["errors"])
        return text[:MAX_ERROR_TEXT]
    return ""


def _broke_off(exc: requests.exceptions.RequestException) -> bool:
    """True when the server accepted the connection and then cut or mangled its answer."""
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        return isinstance(reason, urllib3.exceptions.ProtocolError)
    return False


def _tls_reason(exc: BaseException) -> str:
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
