"""A minimal OCI distribution (v2) client: manifests by tag and blobs by digest, read-only.

keygate needs two GETs per image (the signature manifest and its payload blobs) and nothing
else of a registry, so this is a few dozen lines over httpx2 (already a dependency for the
token issuer) rather than a full OCI library: every byte is size-capped as it streams, every
URL is HTTPS, redirects are followed by hand (HTTPS only, credentials kept to their origin),
and the node's pull credentials come from a docker ``config.json`` (``auths``: basic
credentials, used directly or for the bearer-token exchange) when one is configured.
Credentials and tokens never appear in an error message or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin, urlsplit

from provider.attest.reasons import Denial
from provider.bounded_cache import BoundedCache

if TYPE_CHECKING:
    import httpx2

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST_BYTES = 256 * 1024
MAX_BLOB_BYTES = 256 * 1024
MAX_TOKEN_BYTES = 64 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
MAX_REDIRECTS = 3
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_CHALLENGE_RE = re.compile(r'([A-Za-z_]+)="([^"]*)"')


class RegistryFailure(Exception):
    """The registry could not give an answer keygate can use; ``reason`` is the denial category."""

    def __init__(self, reason: Denial, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    ca_file: str = ""
    docker_config: str = ""
    timeout: float = 10.0


def split_repository(repository: str) -> tuple[str, str]:
    """``registry/path`` -> (host to contact, repository path); Docker Hub's API host is registry-1."""
    host, _, path = repository.partition("/")
    host = host.lower()
    if host in DOCKER_HUB:
        host = "registry-1.docker.io"
    return host, path


def _hub_alias(host: str) -> str:
    return "docker.io" if host in DOCKER_HUB else host


def read_docker_config(path: str, host: str) -> tuple[str, str] | None:
    """(username, password) for ``host`` from a docker config.json's ``auths``; None if absent.

    Unreadable or malformed files are a refusal, not anonymous access: the operator configured
    credentials, so pulling without them would only hide the mistake behind a 401.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise RegistryFailure(
            Denial.REGISTRY_UNREACHABLE, f"cannot read the registry credentials file {path}: {exc.strerror}"
        ) from None
    try:
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError
        data = json.loads(raw)
        auths = data.get("auths") or {}
        if not isinstance(auths, dict):
            raise ValueError
    except (ValueError, AttributeError, RecursionError):
        raise RegistryFailure(
            Denial.REGISTRY_UNREACHABLE,
            f"the registry credentials file {path} is not a docker config.json with an `auths` mapping",
        ) from None
    want = _hub_alias(host)
    for key, entry in auths.items():
        name = str(key)
        name = name.split("://", 1)[1] if "://" in name else name
        if _hub_alias(name.split("/", 1)[0].lower()) != want or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if not sep:
                raise RegistryFailure(
                    Denial.REGISTRY_UNREACHABLE,
                    f"the registry credentials file {path}: `auths` entry for {name} has an `auth` "
                    "that is not base64 of user:password",
                )
            return user, password
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return entry["username"], entry["password"]
    return None


def _basic(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class RegistryClient:
    """Reads from OCI registries over HTTPS; one httpx2 client, bearer tokens cached briefly."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self._client: httpx2.AsyncClient | None = None
        self._tokens: BoundedCache[tuple[str, str], str] = BoundedCache(
            "registry_tokens", max_entries=256, max_bytes=2 * 1024 * 1024, max_entry_bytes=64 * 1024
        )

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            import httpx2

            ctx = ssl.create_default_context()
            if self.settings.ca_file:
                ctx.load_verify_locations(self.settings.ca_file)
            self._client = httpx2.AsyncClient(
                verify=ctx, timeout=self.settings.timeout, trust_env=False, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _credentials(self, host: str) -> tuple[str, str] | None:
        if not self.settings.docker_config:
            return None
        return read_docker_config(self.settings.docker_config, host)

    async def _get(
        self, url: str, headers: dict[str, str], limit: int, what: str
    ) -> tuple[int, dict[str, str], bytes]:
        """GET ``url`` following HTTPS redirects; (status, headers, body of at most ``limit`` bytes)."""
        import httpx2

        host = urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            body = bytearray()
            try:
                async with self._http().stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    got = {k.lower(): v for k, v in response.headers.items()}
                    if status in (301, 302, 303, 307, 308) and "location" in got:
                        target = urljoin(url, got["location"])
                        if urlsplit(target).scheme != "https":
                            raise RegistryFailure(
                                Denial.REGISTRY_UNREACHABLE,
                                f"registry {host} redirected the {what} to a non-HTTPS URL; refused",
                            )
                        if _origin(target) != _origin(url):
                            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                        url = target
                        continue
                    if status == 200:
                        declared = got.get("content-length", "")
                        if declared.isdigit() and int(declared) > limit:
                            raise RegistryFailure(
                                Denial.SIGNATURE_INVALID,
                                f"the {what} on registry {host} is {declared} bytes, over keygate's "
                                f"limit of {limit // 1024} KiB",
                            )
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > limit:
                                raise RegistryFailure(
                                    Denial.SIGNATURE_INVALID,
                                    f"the {what} on registry {host} is over keygate's limit of "
                                    f"{limit // 1024} KiB",
                                )
                    return status, got, bytes(body)
            except httpx2.TimeoutException:
                raise RegistryFailure(
                    Denial.REGISTRY_UNREACHABLE,
                    f"registry {host} did not answer within {self.settings.timeout:g}s",
                ) from None
            except (httpx2.HTTPError, httpx2.InvalidURL, OSError, ValueError) as exc:
                cause = exc.__context__ or exc.__cause__
                tls = (
                    isinstance(cause, ssl.SSLError)
                    or "SSL" in type(cause).__name__
                    or "CERTIFICATE" in str(exc)
                )
                detail = (
                    "TLS verification failed (set signature_registry_ca to the registry's CA bundle)"
                    if tls
                    else type(exc).__name__
                )
                raise RegistryFailure(
                    Denial.REGISTRY_UNREACHABLE, f"cannot reach registry {host}: {detail}"
                ) from None
        raise RegistryFailure(Denial.REGISTRY_UNREACHABLE, f"registry {host} redirected too many times")

    async def _token(self, challenge: str, host: str, scope: str) -> str:
        """A bearer token from the challenge's realm (distribution's token flow), cached till expiry."""
        params = dict(_CHALLENGE_RE.findall(challenge))
        realm = params.get("realm", "")
        if urlsplit(realm).scheme != "https":
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE,
                f"registry {host} asked for a token from a non-HTTPS realm; refused",
            )
        key = (realm, scope)
        cached = self._tokens.get(key)
        if cached is not None:
            return cached
        query = {k: v for k, v in (("service", params.get("service", "")), ("scope", scope)) if v}
        creds = self._credentials(host)
        headers = {"Authorization": _basic(creds)} if creds else {}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        status, _, body = await self._get(url, headers, MAX_TOKEN_BYTES, "token")
        if status != 200:
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE,
                f"registry {host}'s token service answered HTTP {status}"
                + ("" if creds else " (no credentials configured: set signature_docker_config)"),
            )
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, RecursionError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE, f"registry {host}'s token service gave no token"
            )
        self._tokens.put(key, token, expires=time.monotonic() + max(1.0, min(lifetime, 300.0) - 5))
        return token

    async def _fetch(
        self, repository: str, kind: str, reference: str, accept: str, limit: int, what: str
    ) -> tuple[int, dict[str, str], bytes]:
        host, path = split_repository(repository)
        url = f"https://{host}/v2/{path}/{kind}/{reference}"
        scope = f"repository:{path}:pull"
        headers = {"Accept": accept} if accept else {}
        status, got, body = await self._get(url, headers, limit, what)
        if status == 401:
            challenge = got.get("www-authenticate", "")
            if challenge.lower().startswith("bearer"):
                token = await self._token(challenge, host, scope)
                headers["Authorization"] = f"Bearer {token}"
            elif challenge.lower().startswith("basic") and (creds := self._credentials(host)):
                headers["Authorization"] = _basic(creds)
            else:
                raise RegistryFailure(
                    Denial.REGISTRY_UNREACHABLE,
                    f"registry {host} requires credentials to read {repository} "
                    "(set signature_docker_config to a docker config.json with an `auths` entry)",
                )
            status, got, body = await self._get(url, headers, limit, what)
            if status == 401:
                raise RegistryFailure(
                    Denial.REGISTRY_UNREACHABLE,
                    f"registry {host} refused keygate's credentials for {repository}",
                )
        if status >= 500 or status == 429:
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE, f"registry {host} answered HTTP {status} for the {what}"
            )
        if status == 403:
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE,
                f"registry {host} denies keygate access to {repository} (HTTP 403)",
            )
        return status, got, body

    async def manifest(self, repository: str, reference: str) -> tuple[str, bytes] | None:
        """(media type, bytes) of the manifest at tag or digest ``reference``; None when absent."""
        status, got, body = await self._fetch(
            repository,
            "manifests",
            reference,
            ", ".join((*MANIFEST_TYPES, INDEX_TYPE)),
            MAX_MANIFEST_BYTES,
            "signature manifest",
        )
        if status == 404:
            return None
        if status != 200:
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE,
                f"registry {split_repository(repository)[0]} answered HTTP {status} "
                "for the signature manifest",
            )
        media_type = got.get("content-type", "").split(";", 1)[0].strip()
        if reference.startswith("sha256:") and "sha256:" + hashlib.sha256(body).hexdigest() != reference:
            raise RegistryFailure(
                Denial.SIGNATURE_INVALID,
                f"the manifest {reference} served by the registry has another digest",
            )
        return media_type, body

    async def referrers(self, repository: str, digest: str) -> bytes | None:
        """The OCI image index of artifacts referring to ``digest``: the referrers API, else the
        referrers tag ``sha256-<hex>`` (distribution spec 1.1); None when there are none."""
        status, _, body = await self._fetch(
            repository, "referrers", digest, INDEX_TYPE, MAX_MANIFEST_BYTES, "referrers list"
        )
        if status == 200:
            return body
        if status not in (404, 400, 405):
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE,
                f"registry {split_repository(repository)[0]} answered HTTP {status} for the referrers list",
            )
        found = await self.manifest(repository, digest.replace(":", "-", 1))
        return found[1] if found is not None else None

    async def blob(self, repository: str, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes | None:
        """The blob ``digest`` (its sha256 checked); None when absent."""
        status, _, body = await self._fetch(repository, "blobs", digest, "", limit, "signature payload")
        if status == 404:
            return None
        if status != 200:
            raise RegistryFailure(
                Denial.REGISTRY_UNREACHABLE,
                f"registry {split_repository(repository)[0]} answered HTTP {status} for a signature payload",
            )
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryFailure(
                Denial.SIGNATURE_INVALID,
                f"the signature payload {digest[:19]}... does not match its digest (altered after signing)",
            )
        return body
