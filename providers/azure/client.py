"""Key Vault through the Azure SDK: clients per identity, the reads (secret, key, certificate,
version listings), and SDK failures as keygate errors. Reads are blocking; they run on the
backend's worker pool."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provider.domain import SecretObject
from provider.errors import (
    BackendUnavailable,
    Gone,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
    gone,
)
from providers.azure.certs import pfx_to_pem, public_key_pem
from providers.azure.sdk import (
    AccessToken,
    AccessTokenInfo,
    CertificateClient,
    ClientAssertionCredential,
    ClientAuthenticationError,
    ClientSecretCredential,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    KeyClient,
    ManagedIdentityCredential,
    ResourceNotFoundError,
    SecretClient,
    ServiceRequestError,
    ServiceResponseError,
    TokenRequestOptions,
)
from providers.common.encoding import decode
from providers.common.errors import is_retryable
from providers.common.rate_limit import parse_retry_after
from providers.common.runtime import ClientCache, Retryable

log = logging.getLogger("keygate.azure")

PFX_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"
_AADSTS = re.compile(r"AADSTS\d+")
DISABLED_CODES = frozenset({"SecretDisabled", "KeyDisabled", "CertificateDisabled"})
MAX_ERROR_BODY = 64 * 1024


def _where(obj: SecretObject) -> str:
    return f"objects[{obj.index}] {obj.name!r}"


@dataclass(frozen=True, slots=True)
class Target:
    """The SPC-level parameters of one Mount, validated: which vault, tenant, cloud and identity."""

    vault: str
    vault_url: str
    tenant: str
    authority: str
    client_id: str
    managed_identity: bool = False
    user_assigned: str = ""


@dataclass(slots=True)
class Clients:
    """One authenticated identity's clients for one vault, sharing one credential."""

    secrets: SecretClient
    keys: KeyClient
    certificates: CertificateClient
    assertion: PodAssertion | None
    key: tuple[str, ...] = ()

    def close(self) -> None:
        for client in (self.secrets, self.keys, self.certificates):
            client.close()


class PodAssertion:
    """The client assertion callback: always the pod's most recent token.

    The credential caches the Entra access token it obtained; when that expires it calls this
    again, and by then a rotation Mount may have brought a fresh pod token.
    """

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self) -> str:
        return self.token


class SerialCredential:
    """Lets one thread at a time ask the wrapped credential for a token.

    The three clients and every concurrent object of a Mount share one credential; without this,
    a cold cache sends one token exchange per object to Entra ID instead of one in total.
    """

    def __init__(
        self, inner: ClientAssertionCredential | ClientSecretCredential | ManagedIdentityCredential
    ) -> None:
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


class KeyVault:
    """SDK options from the daemon settings, and the live clients of each identity."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.request_timeout = float(settings.get("request_timeout") or 20.0)
        self.ca_bundle = str(settings.get("ca_bundle") or "")
        self.proxy = str(settings.get("proxy") or "")
        self.disable_discovery = bool(settings.get("disable_instance_discovery", False))
        self.cache: ClientCache[tuple[str, ...], Clients] = ClientCache(close=Clients.close)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "retry_total": 0,
            "user_agent": "keygate",
            "connection_timeout": min(10.0, self.request_timeout),
            "read_timeout": self.request_timeout,
        }
        if self.ca_bundle:
            options["connection_verify"] = self.ca_bundle
        if self.proxy:
            options["proxies"] = {"https": self.proxy}
        return options

    def build(
        self,
        key: tuple[str, ...],
        target: Target,
        credential: ClientAssertionCredential | ClientSecretCredential | ManagedIdentityCredential,
        assertion: PodAssertion | None,
        options: Mapping[str, Any],
    ) -> Clients:
        shared = SerialCredential(credential)
        clients = Clients(
            secrets=SecretClient(target.vault_url, shared, **options),
            keys=KeyClient(target.vault_url, shared, **options),
            certificates=CertificateClient(target.vault_url, shared, **options),
            assertion=assertion,
            key=key,
        )
        return clients

    def close(self) -> None:
        self.cache.clear()


def get(
    obj: SecretObject, target: Target, clients: Clients, version: str, limits: Mapping[str, Any]
) -> Value:
    """One object (``limits``: the per-request connect/read timeouts, capped at the time left)."""
    object_type = obj.str_field("objectType").lower()
    what = f"{object_type} {obj.name!r}" + (f" version {version!r}" if version else "")
    try:
        if object_type == "secret":
            secret = clients.secrets.get_secret(obj.name, version or None, **limits)
            return Value(secret_contents(obj, secret), secret.properties.version or "")
        if object_type == "key":
            key = clients.keys.get_key(obj.name, version or None, **limits)
            return Value(public_key_pem(_where(obj), key.key), key.properties.version or "")
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


def versions(obj: SecretObject, target: Target, clients: Clients, limits: Mapping[str, Any]) -> list[str]:
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
        raise gone(
            SecretNotFound(
                f"{_where(obj)}: Key Vault {target.vault!r} has no enabled versions of "
                f"{object_type} {obj.name!r}"
            ),
            Gone.DISABLED,
        )
    found.sort(key=lambda item: item[0].timestamp() if item[0] else 0.0, reverse=True)
    return [version for _, version in found]


def secret_contents(obj: SecretObject, secret: Any) -> bytes:
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


def _encode(obj: SecretObject, value: str) -> bytes:
    """objectEncoding: how the secret's text becomes file bytes (utf-8 as is, or decoded)."""
    encoding = obj.str_field("objectEncoding", "utf-8").lower() or "utf-8"
    return decode(
        value, encoding, f"{_where(obj)}: the secret value is not valid {encoding}; fix objectEncoding"
    )


def _map_error(exc: Exception, obj: SecretObject, target: Target, what: str) -> KeygateError:
    """An SDK exception as a keygate error; SDK messages are not copied (they may quote content)."""
    if isinstance(exc, KeygateError):
        return exc
    where = f"{_where(obj)}: Key Vault {target.vault!r} {what}"
    if isinstance(exc, ResourceNotFoundError):
        return gone(SecretNotFound(f"{where} was not found (404)"), Gone.NOT_FOUND)
    if isinstance(exc, ClientAuthenticationError) and target.managed_identity:
        which = (
            f"user-assigned identity {target.user_assigned!r}" if target.user_assigned else "system identity"
        )
        return Unauthenticated(
            f"{where}: the node's managed identity ({which}) got no token from the instance metadata "
            "service; check that the identity is assigned to the node's VM or scale set"
        )
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
        if answered or is_retryable(status):
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
        if status == 403 and _inner_code(exc) in DISABLED_CODES:
            return gone(
                PermissionDenied(f"{where} is disabled (403); enable it or remove it from the SPC"),
                Gone.DISABLED,
            )
        if status == 403:
            denied = PermissionDenied(
                f"{where}: access denied (403); grant the identity 'get' (and 'list' for "
                "objectVersionHistory) on this vault"
            )
            return gone(denied, Gone.FORBIDDEN)
        if is_retryable(status):
            headers = getattr(exc.response, "headers", None) or {}
            wait = parse_retry_after(headers.get("Retry-After"))
            throttled = status == 429
            return Retryable(f"{where}: Key Vault answered {status}", retry_after=wait, throttled=throttled)
        return BackendUnavailable(f"{where}: Key Vault answered {status}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Retryable(f"{where}: cannot reach Key Vault ({type(exc).__name__})")
    if isinstance(exc, ValueError):
        return BackendUnavailable(f"{where}: the request was refused by the SDK ({type(exc).__name__})")
    log.error("unexpected Azure SDK error", extra={"error_type": type(exc).__name__, "vault": target.vault})
    return BackendUnavailable(f"{where}: unexpected error ({type(exc).__name__})")


def _inner_code(exc: HttpResponseError) -> str:
    """Key Vault's ``error.innererror.code`` (``SecretDisabled``...), read from the answer body
    for classification only; never echoed."""
    try:
        text = exc.response.text() if exc.response is not None else ""
        if not text or len(text) > MAX_ERROR_BODY:
            return ""
        inner = json.loads(text).get("error", {}).get("innererror", {})
        code = inner.get("code") if isinstance(inner, dict) else None
    except (ValueError, AttributeError, TypeError):
        return ""
    return code if isinstance(code, str) else ""
