"""Azure Key Vault backend: secrets, keys and certificates, fetched *as the pod*.

SPC parameters mirror Azure/secrets-store-csi-driver-provider-azure so its manifests carry over
with only ``spec.provider`` changed: ``keyvaultName``, ``tenantId``, ``cloudName``, ``clientID``
and the ``objects`` ``array:`` with ``objectName``, ``objectType`` (secret|key|cert),
``objectVersion``, ``objectVersionHistory``, ``objectAlias``, ``objectFormat`` (pem|pfx),
``objectEncoding`` (utf-8|base64|hex) and ``filePermission``.

Authentication, in order: workload identity when ``clientID`` is set (the pod's own projected
service-account token for audience ``api://AzureADTokenExchange`` is the client assertion of a
``ClientAssertionCredential``), else a service principal from the node publish secret
(``clientid``/``clientsecret``). Nothing ever uses the node's or the daemon's own identity.

The synchronous SDK runs on this backend's bounded :class:`WorkerPool`; authenticated clients are
cached per (vault URL, tenant, client id, pod identity) until the pod token expires; throttling
and transient faults go through :func:`with_retries` (the SDK's own retries are switched off so
the mount deadline bounds everything). Daemon settings (``backends.azure``) can point the SDK at
other endpoints (sovereign or private clouds, an egress proxy, a private CA); defaults are the
public production endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import ClientAssertionCredential, ClientSecretCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

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
from providers.runtime import (
    RETRYABLE_STATUSES,
    ClientCache,
    Retryable,
    WorkerPool,
    gather_all,
    with_retries,
)

log = logging.getLogger("keygate.azure")

T = TypeVar("T")

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_URL_TEMPLATE = "https://{vault}.{dns_suffix}"
OBJECT_TYPES = ("secret", "key", "cert")
FORMATS = ("pem", "pfx")
ENCODINGS = ("utf-8", "base64", "hex")
MAX_HISTORY = 100
STATIC_CLIENT_TTL = 3600.0
PFX_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"
UNSUPPORTED_TRUE_PARAMS = {
    "usePodIdentity": "AAD Pod Identity is deprecated upstream; use workload identity (clientID)",
    "useVMManagedIdentity": "a VM managed identity is the node's identity, not the pod's; "
    "use workload identity (clientID) so each pod authenticates as itself",
}
UNSUPPORTED_PARAMS = {
    "userAssignedIdentityID": "it selects a VM managed identity (useVMManagedIdentity), which keygate "
    "does not use; use workload identity (clientID)",
    "cloudEnvFileName": "custom cloud files are not read; set backends.azure.vault_url_template and "
    "authority_host in the daemon configuration instead",
}

_VAULT_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]\Z")
_OBJECT_NAME = re.compile(r"\A[A-Za-z0-9-]{1,127}\Z")
_VERSION = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")
_TENANT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,99}\Z")
_CLIENT_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")
_AADSTS = re.compile(r"AADSTS\d+")


@dataclass(frozen=True, slots=True)
class Cloud:
    """The endpoints of one Azure cloud that the backend needs."""

    vault_dns_suffix: str
    authority_host: str


CLOUDS: dict[str, Cloud] = {
    "azurepubliccloud": Cloud("vault.azure.net", "https://login.microsoftonline.com"),
    "azureusgovernmentcloud": Cloud("vault.usgovcloudapi.net", "https://login.microsoftonline.us"),
    "azurechinacloud": Cloud("vault.azure.cn", "https://login.chinacloudapi.cn"),
    "azuregermancloud": Cloud("vault.microsoftazure.de", "https://login.microsoftonline.de"),
}


@dataclass(frozen=True, slots=True)
class Target:
    """The SPC-level parameters of one Mount, validated: which vault, tenant, cloud and identity."""

    vault: str
    vault_url: str
    tenant: str
    authority: str
    client_id: str


@dataclass(slots=True)
class Clients:
    """One authenticated identity's clients for one vault, sharing one credential."""

    secrets: SecretClient
    keys: KeyClient
    certificates: CertificateClient
    assertion: _PodAssertion | None
    key: tuple[str, ...] = ()

    def close(self) -> None:
        for client in (self.secrets, self.keys, self.certificates):
            client.close()


class _PodAssertion:
    """The client assertion callback: always the pod's most recent token.

    The credential caches the Entra access token it obtained; when that expires it calls this
    again, and by then a rotation Mount may have brought a fresh pod token.
    """

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self) -> str:
        return self.token


class _SerialCredential:
    """Lets one thread at a time ask the wrapped credential for a token.

    The three clients and every concurrent object of a Mount share one credential; without this,
    a cold cache sends one token exchange per object to Entra ID instead of one in total.
    """

    def __init__(self, inner: ClientAssertionCredential | ClientSecretCredential) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        with self._lock:
            return self._inner.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        with self._lock:
            return self._inner.get_token_info(*scopes, options=options)

    def close(self) -> None:
        self._inner.close()


@dataclass(frozen=True, slots=True)
class Value:
    """One object's content as Key Vault returned it, converted, plus its version id."""

    contents: bytes
    version: str


def _where(obj: SecretObject) -> str:
    return f"objects[{obj.index}] {obj.name!r}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified: only used to age the client cache, never to trust."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    except (IndexError, ValueError, binascii.Error):
        return None


class AzureBackend:
    """Reads Key Vault objects with the pod's workload identity (or a node-secret principal).

    Settings (``backends.azure`` in the daemon config file), all optional:

    - ``vault_url_template``: vault URL with ``{vault}`` and ``{dns_suffix}`` placeholders
      (default ``https://{vault}.{dns_suffix}``, the suffix coming from ``cloudName``).
    - ``authority_host``: Entra ID authority (default: the one of ``cloudName``).
    - ``ca_bundle``: PEM file of CAs to trust instead of the system store (private endpoints).
    - ``proxy``: HTTPS proxy URL for vault and Entra traffic.
    - ``disable_instance_discovery``: for authorities MSAL does not know (Azure Stack, tests).
    - ``token_audience``: audience of the pod token exchanged (default api://AzureADTokenExchange).
    - ``workers``: threads for the blocking SDK (default 16).
    - ``request_timeout``: seconds one HTTP request may take, so a hung vault frees its worker
      thread even after the mount deadline has already failed the Mount (default 20).
    - ``sdk_log_level``: level of the ``azure``/``msal`` loggers (default warning: the SDK logs
      every request's headers at info).
    """

    name: ClassVar[str] = "azure"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._url_template = str(settings.get("vault_url_template") or DEFAULT_URL_TEMPLATE)
        if "{vault}" not in self._url_template or not self._url_template.startswith("https://"):
            raise KeygateError(
                "backends.azure.vault_url_template must be an https:// URL containing '{vault}'"
            )
        self._authority_override = str(settings.get("authority_host") or "").rstrip("/")
        if self._authority_override and not self._authority_override.startswith("https://"):
            raise KeygateError("backends.azure.authority_host must be an https:// URL")
        self._ca_bundle = str(settings.get("ca_bundle") or "")
        self._proxy = str(settings.get("proxy") or "")
        self._disable_discovery = bool(settings.get("disable_instance_discovery", False))
        self._audience = str(settings.get("token_audience") or DEFAULT_AUDIENCE)
        self._request_timeout = float(settings.get("request_timeout") or 20.0)
        self._pool = WorkerPool(self.name, int(settings.get("workers") or 16))
        self._cache: ClientCache[tuple[str, ...], Clients] = ClientCache()
        self._live: dict[tuple[str, ...], Clients] = {}
        sdk_level = str(settings.get("sdk_log_level") or "warning").upper()
        for logger_name in ("azure", "msal"):
            logging.getLogger(logger_name).setLevel(sdk_level)

    # ----- validation -------------------------------------------------------------------------

    def _target(self, parameters: Mapping[str, str]) -> Target:
        """The vault and identity an SPC names; raises InvalidSPC naming the parameter at fault."""
        for param, why in UNSUPPORTED_TRUE_PARAMS.items():
            if _truthy(parameters.get(param)):
                raise InvalidSPC(f"parameter {param!r} is not supported by keygate: {why}")
        for param, why in UNSUPPORTED_PARAMS.items():
            if (parameters.get(param) or "").strip():
                raise InvalidSPC(f"parameter {param!r} is not supported by keygate: {why}")
        vault = (parameters.get("keyvaultName") or "").strip()
        if not vault:
            raise InvalidSPC("parameter 'keyvaultName' is required for Azure Key Vault objects")
        if not _VAULT_NAME.match(vault):
            raise InvalidSPC(
                f"parameter 'keyvaultName' {vault[:40]!r} is not a Key Vault name "
                "(3-24 letters, digits and hyphens, starting with a letter)"
            )
        tenant = (parameters.get("tenantId") or parameters.get("tenantID") or "").strip()
        if not tenant:
            raise InvalidSPC("parameter 'tenantId' is required for Azure Key Vault (the vault's tenant)")
        if not _TENANT.match(tenant):
            raise InvalidSPC("parameter 'tenantId' must be a tenant GUID or domain name")
        cloud_name = (parameters.get("cloudName") or "AzurePublicCloud").strip() or "AzurePublicCloud"
        cloud = CLOUDS.get(cloud_name.lower())
        if cloud is None:
            raise InvalidSPC(
                f"parameter 'cloudName' {cloud_name[:40]!r} is unknown; use one of AzurePublicCloud, "
                "AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud"
            )
        client_id = (parameters.get("clientID") or "").strip()
        if client_id and not _CLIENT_ID.match(client_id):
            raise InvalidSPC("parameter 'clientID' must be the application (client) id GUID")
        vault_url = self._url_template.format(vault=vault.lower(), dns_suffix=cloud.vault_dns_suffix)
        return Target(
            vault=vault.lower(),
            vault_url=vault_url.rstrip("/"),
            tenant=tenant,
            authority=self._authority_override or cloud.authority_host,
            client_id=client_id,
        )

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        where = _where(obj)
        self._target(parameters)
        if not _OBJECT_NAME.match(obj.name):
            raise InvalidSPC(f"{where}: objectName must be 1-127 letters, digits and hyphens")
        object_type = obj.str_field("objectType").lower()
        if object_type not in OBJECT_TYPES:
            raise InvalidSPC(f"{where}: objectType must be one of secret, key, cert")
        version = obj.str_field("objectVersion")
        if version and not _VERSION.match(version):
            raise InvalidSPC(f"{where}: objectVersion must be a Key Vault version id (letters and digits)")
        object_format = obj.str_field("objectFormat", "pem").lower() or "pem"
        if object_format not in FORMATS:
            raise InvalidSPC(f"{where}: objectFormat must be pem or pfx")
        if object_format == "pfx" and object_type != "secret":
            raise InvalidSPC(f"{where}: objectFormat pfx is only supported with objectType secret")
        encoding = obj.str_field("objectEncoding", "utf-8").lower() or "utf-8"
        if encoding not in ENCODINGS:
            raise InvalidSPC(f"{where}: objectEncoding must be utf-8, base64 or hex")
        self._history(obj)

    @staticmethod
    def _history(obj: SecretObject) -> int:
        raw = obj.str_field("objectVersionHistory", "0") or "0"
        try:
            count = int(raw)
        except ValueError:
            raise InvalidSPC(f"{_where(obj)}: objectVersionHistory must be a whole number") from None
        if not 0 <= count <= MAX_HISTORY:
            raise InvalidSPC(f"{_where(obj)}: objectVersionHistory must be between 0 and {MAX_HISTORY}")
        return count

    # ----- clients ----------------------------------------------------------------------------

    def _sdk_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "retry_total": 0,
            "user_agent": "keygate",
            "connection_timeout": min(10.0, self._request_timeout),
            "read_timeout": self._request_timeout,
        }
        if self._ca_bundle:
            options["connection_verify"] = self._ca_bundle
        if self._proxy:
            options["proxies"] = {"https": self._proxy}
        return options

    async def _clients(self, target: Target, ctx: FetchContext) -> Clients:
        options = self._sdk_options()
        if target.client_id:
            token = ctx.token_for(self._audience)
            if not token:
                raise Unauthenticated(
                    f"Azure workload identity needs the pod's service-account token for audience "
                    f"{self._audience!r}; add it to the CSIDriver's spec.tokenRequests"
                )
            pod = ctx.pod
            key: tuple[str, ...] = (
                "workload",
                target.vault_url,
                target.tenant,
                target.client_id,
                target.authority,
                pod.namespace,
                pod.service_account,
                pod.name,
                pod.uid,
            )
            exp = _jwt_expiry(token)
            expires = time.monotonic() + (exp - time.time() if exp is not None else STATIC_CLIENT_TTL)

            async def build_workload() -> tuple[Clients, float]:
                assertion = _PodAssertion(token)
                credential = ClientAssertionCredential(
                    target.tenant, target.client_id, assertion, authority=target.authority, **options
                )
                return self._build(key, target, credential, assertion, options), expires

            clients = await self._cache.get(key, build_workload)
            if clients.assertion is not None:
                clients.assertion.token = token
            return clients
        client_id = ctx.node_secrets.get("clientid", "")
        client_secret = ctx.node_secrets.get("clientsecret", "")
        if not client_id or not client_secret:
            raise Unauthenticated(
                "no Azure identity for this SPC: set parameter 'clientID' for workload identity, or "
                "reference a node publish secret (nodePublishSecretRef) with keys 'clientid' and "
                "'clientsecret' for a service principal"
            )
        if not _CLIENT_ID.match(client_id):
            raise InvalidSPC("node publish secret key 'clientid' must be the application (client) id GUID")
        secret_tag = hashlib.sha256(client_secret.encode()).hexdigest()
        static_key: tuple[str, ...] = (
            "static",
            target.vault_url,
            target.tenant,
            client_id,
            target.authority,
            secret_tag,
        )

        async def build_static() -> tuple[Clients, float]:
            credential = ClientSecretCredential(
                target.tenant,
                client_id,
                client_secret,
                authority=target.authority,
                disable_instance_discovery=self._disable_discovery,
                **options,
            )
            clients = self._build(static_key, target, credential, None, options)
            return clients, time.monotonic() + STATIC_CLIENT_TTL

        return await self._cache.get(static_key, build_static)

    def _build(
        self,
        key: tuple[str, ...],
        target: Target,
        credential: ClientAssertionCredential | ClientSecretCredential,
        assertion: _PodAssertion | None,
        options: Mapping[str, Any],
    ) -> Clients:
        shared = _SerialCredential(credential)
        clients = Clients(
            secrets=SecretClient(target.vault_url, shared, **options),
            keys=KeyClient(target.vault_url, shared, **options),
            certificates=CertificateClient(target.vault_url, shared, **options),
            assertion=assertion,
            key=key,
        )
        old = self._live.pop(key, None)
        if old is not None:
            old.close()
        self._live[key] = clients
        return clients

    # ----- fetching ---------------------------------------------------------------------------

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        target = self._target(ctx.parameters)
        clients = await self._clients(target, ctx)
        try:
            results = await gather_all([self._fetch_object(obj, target, clients, ctx) for obj in objects])
        except (DeadlineExceeded, asyncio.CancelledError):
            # A worker may still be blocked in a token exchange holding the credential's lock;
            # the next Mount gets fresh clients instead of queueing behind it.
            self._cache.invalidate(clients.key)
            raise
        counts: dict[str, int] = {}
        for fetched in results:
            for item in fetched:
                counts[item.object_id] = counts.get(item.object_id, 0) + 1
        out: list[Fetched] = []
        for fetched in results:
            for item in fetched:
                if counts[item.object_id] > 1:
                    suffix = item.path if item.path is not None else item.obj.path
                    item = Fetched(
                        item.obj, f"{item.object_id}:{suffix}", item.contents, item.version, item.path
                    )
                out.append(item)
        return out

    async def _fetch_object(
        self, obj: SecretObject, target: Target, clients: Clients, ctx: FetchContext
    ) -> list[Fetched]:
        object_type = obj.str_field("objectType").lower()
        version = obj.str_field("objectVersion")
        base_id = f"azure/{target.vault}/{object_type}/{obj.name}"
        history = self._history(obj)
        if history <= 1:
            value = await self._call(ctx, partial(self._get, obj, target, clients, version))
            return [Fetched(obj, base_id, value.contents, value.version)]
        versions = await self._call(ctx, partial(self._versions, obj, target, clients))
        if version:
            if version not in versions:
                raise SecretNotFound(
                    f"{_where(obj)}: Key Vault {target.vault!r} has no enabled version {version!r} "
                    f"of {object_type} {obj.name!r}"
                )
            versions = versions[versions.index(version) :]
        chosen = versions[:history]
        values = await gather_all(
            [self._call(ctx, partial(self._get, obj, target, clients, v)) for v in chosen]
        )
        return [
            Fetched(obj, f"{base_id}/{i}", value.contents, value.version, f"{obj.path}/{i}")
            for i, value in enumerate(values)
        ]

    async def _call(self, ctx: FetchContext, fn: Callable[[Mapping[str, Any]], T]) -> T:
        """Run one blocking SDK call on the pool, retried on throttling within the deadline.

        ``fn`` gets per-request timeouts capped at the time left, so a vault that never answers
        frees the worker thread at the mount deadline rather than after ``request_timeout``.
        """

        async def attempt() -> T:
            left = ctx.remaining()
            limits = {
                "connection_timeout": min(10.0, self._request_timeout, left),
                "read_timeout": min(self._request_timeout, left),
            }
            return await self._pool.run(lambda: fn(limits))

        return await with_retries(attempt, ctx)

    # The methods below run on worker threads: only SDK calls and pure conversions.

    def _get(
        self, obj: SecretObject, target: Target, clients: Clients, version: str, limits: Mapping[str, Any]
    ) -> Value:
        object_type = obj.str_field("objectType").lower()
        what = f"{object_type} {obj.name!r}" + (f" version {version!r}" if version else "")
        try:
            if object_type == "secret":
                secret = clients.secrets.get_secret(obj.name, version or None, **limits)
                return Value(self._secret_contents(obj, secret), secret.properties.version or "")
            if object_type == "key":
                key = clients.keys.get_key(obj.name, version or None, **limits)
                return Value(_public_key_pem(obj, key.key), key.properties.version or "")
            cert = (
                clients.certificates.get_certificate_version(obj.name, version, **limits)
                if version
                else clients.certificates.get_certificate(obj.name, **limits)
            )
            if not cert.cer:
                raise BackendUnavailable(f"{_where(obj)}: Key Vault returned certificate without content")
            der = bytes(cert.cer)
            pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
            return Value(pem, (cert.properties.version if cert.properties else None) or "")
        except Exception as exc:  # noqa: BLE001 - mapped to a keygate error below
            raise _map_error(exc, obj, target, what) from None

    def _versions(
        self, obj: SecretObject, target: Target, clients: Clients, limits: Mapping[str, Any]
    ) -> list[str]:
        """Enabled version ids of one object, newest first (by creation time)."""
        object_type = obj.str_field("objectType").lower()
        try:
            listing: Any
            if object_type == "secret":
                listing = clients.secrets.list_properties_of_secret_versions(obj.name, **limits)
            elif object_type == "key":
                listing = clients.keys.list_properties_of_key_versions(obj.name, **limits)
            else:
                listing = clients.certificates.list_properties_of_certificate_versions(obj.name, **limits)
            found = [(p.created_on, p.version) for p in listing if p.enabled is not False and p.version]
        except Exception as exc:  # noqa: BLE001 - mapped to a keygate error below
            raise _map_error(exc, obj, target, f"versions of {object_type} {obj.name!r}") from None
        if not found:
            raise SecretNotFound(
                f"{_where(obj)}: Key Vault {target.vault!r} has no enabled versions of "
                f"{object_type} {obj.name!r}"
            )
        found.sort(key=lambda item: item[0].timestamp() if item[0] else 0.0, reverse=True)
        return [version for _, version in found]

    @staticmethod
    def _secret_contents(obj: SecretObject, secret: Any) -> bytes:
        """A secret's bytes: certificate-backed secrets converted like the Azure provider does."""
        value: str = secret.value or ""
        props = secret.properties
        if props.key_id:
            content_type = (props.content_type or "").lower()
            object_format = obj.str_field("objectFormat", "pem").lower() or "pem"
            if content_type == PFX_CONTENT_TYPE:
                if object_format == "pem":
                    value = pfx_to_pem(value, _where(obj))
            elif content_type != PEM_CONTENT_TYPE:
                raise InvalidSPC(
                    f"{_where(obj)}: certificate-backed secret has unknown content type "
                    f"{content_type[:60]!r} (expected {PFX_CONTENT_TYPE} or {PEM_CONTENT_TYPE})"
                )
        return _encode(obj, value)

    async def close(self) -> None:
        for clients in self._live.values():
            clients.close()
        self._live.clear()
        self._cache.clear()
        self._pool.close()


def _encode(obj: SecretObject, value: str) -> bytes:
    """objectEncoding: how the secret's text becomes file bytes (utf-8 as is, or decoded)."""
    encoding = obj.str_field("objectEncoding", "utf-8").lower() or "utf-8"
    try:
        if encoding == "base64":
            return base64.b64decode(value, validate=True)
        if encoding == "hex":
            return bytes.fromhex(value)
    except (ValueError, binascii.Error):
        raise InvalidSPC(
            f"{_where(obj)}: the secret value is not valid {encoding}; fix objectEncoding"
        ) from None
    return value.encode()


def pfx_to_pem(value: str, where: str) -> str:
    """PKCS#12 (base64, no password, as Key Vault stores it) to PEM: the private key, then the
    certificate chain ordered leaf -> intermediates -> root, like the Azure provider writes it.
    """
    try:
        data = base64.b64decode(value, validate=True)
        bundle = pkcs12.load_pkcs12(data, None)
    except (ValueError, binascii.Error, TypeError):
        raise InvalidSPC(f"{where}: the certificate-backed secret is not a readable PKCS#12 bundle") from None
    certs = [c.certificate for c in ([bundle.cert] if bundle.cert else []) + list(bundle.additional_certs)]
    parts: list[bytes] = []
    if bundle.key is not None:
        parts.append(
            bundle.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    key_public = (
        bundle.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if bundle.key is not None
        else None
    )
    parts.extend(c.public_bytes(serialization.Encoding.PEM) for c in order_chain(certs, key_public))
    return b"".join(parts).decode()


def order_chain(certs: list[x509.Certificate], key_public: bytes | None = None) -> list[x509.Certificate]:
    """Leaf first, then each issuer in turn; certificates outside the chain keep their order last.

    The leaf is the certificate of the private key when there is one, else the certificate that
    issued no other certificate in the bundle.
    """
    if not certs:
        return []

    def spki(cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    leaf = next((c for c in certs if key_public is not None and spki(c) == key_public), None)
    if leaf is None:
        issuers = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
        leaf = next((c for c in certs if c.subject.public_bytes() not in issuers), certs[0])
    ordered = [leaf]
    remaining = [c for c in certs if c is not leaf]
    current = leaf
    while current.issuer != current.subject:
        parent = next((c for c in remaining if c.subject == current.issuer), None)
        if parent is None:
            break
        ordered.append(parent)
        remaining.remove(parent)
        current = parent
    return ordered + remaining


_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
    "P-256K": ec.SECP256K1,
}


def _enum_text(value: Any) -> str:
    """The wire text of an SDK enum member (``JsonWebKeyType.EC`` -> ``EC``) or plain string."""
    return str(getattr(value, "value", value) or "")


def _public_key_pem(obj: SecretObject, jwk: Any) -> bytes:
    """A Key Vault JSON web key's public half as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo)."""
    kty = _enum_text(jwk.kty)
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kty in ("RSA", "RSA-HSM"):
        public = rsa.RSAPublicNumbers(
            int.from_bytes(bytes(jwk.e), "big"), int.from_bytes(bytes(jwk.n), "big")
        ).public_key()
    elif kty in ("EC", "EC-HSM"):
        crv = _enum_text(jwk.crv)
        curve = _CURVES.get(crv)
        if curve is None:
            raise InvalidSPC(f"{_where(obj)}: key curve {crv[:20]!r} is not supported")
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(bytes(jwk.x), "big"), int.from_bytes(bytes(jwk.y), "big"), curve()
        ).public_key()
    else:
        raise InvalidSPC(
            f"{_where(obj)}: key type {kty[:20]!r} has no public key to export (RSA and EC keys only)"
        )
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _map_error(exc: Exception, obj: SecretObject, target: Target, what: str) -> KeygateError:
    """An SDK exception as a keygate error; SDK messages are not copied (they may quote content)."""
    if isinstance(exc, KeygateError):
        return exc
    where = f"{_where(obj)}: Key Vault {target.vault!r} {what}"
    if isinstance(exc, ResourceNotFoundError):
        return SecretNotFound(f"{where} was not found (404)")
    if isinstance(exc, ClientAuthenticationError) and exc.status_code in (None, 400, 401):
        codes = sorted(set(_AADSTS.findall(str(exc.message or ""))))
        detail = f" ({', '.join(codes)})" if codes else ""
        return Unauthenticated(
            f"{where}: Entra ID did not issue a token for tenant {target.tenant!r}{detail}; check the "
            "federated credential (issuer, subject system:serviceaccount:<ns>:<sa>, audience) or the "
            "node publish secret's client id/secret"
        )
    if isinstance(exc, ClientAuthenticationError):
        status = exc.status_code or 0
        answered = 200 <= status < 300
        message = f"{where}: Entra ID answered {'without a usable token' if answered else status}"
        if answered or status in RETRYABLE_STATUSES:
            return Retryable(f"{message} for tenant {target.tenant!r}")
        return BackendUnavailable(f"{message} for tenant {target.tenant!r}")
    if isinstance(exc, DecodeError):
        url = str(getattr(getattr(exc.response, "request", None), "url", "") or "")
        service = "Key Vault" if url.startswith(target.vault_url) else "Entra ID" if url else "Azure"
        if isinstance(exc, IncompleteReadError):
            return Retryable(f"{where}: {service} broke off its answer ({type(exc).__name__})")
        return Retryable(f"{where}: {service} answered {exc.status_code or 0} with a body that is not JSON")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status == 403:
            return PermissionDenied(
                f"{where}: access denied (403); grant the identity 'get' (and 'list' for "
                "objectVersionHistory) on this vault"
            )
        if status in RETRYABLE_STATUSES:
            return Retryable(f"{where}: Key Vault answered {status}")
        return BackendUnavailable(f"{where}: Key Vault answered {status}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Retryable(f"{where}: cannot reach Key Vault ({type(exc).__name__})")
    if isinstance(exc, ValueError):
        return BackendUnavailable(f"{where}: the request was refused by the SDK ({type(exc).__name__})")
    log.error("unexpected Azure SDK error", extra={"error_type": type(exc).__name__, "vault": target.vault})
    return BackendUnavailable(f"{where}: unexpected error ({type(exc).__name__})")
