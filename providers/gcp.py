"""GCP Secret Manager backend, parameter-compatible with the GCP provider's ``secrets`` list.

Each object is one ``resourceName`` (``projects/P/secrets/S/versions/V`` on the global endpoint,
``projects/P/locations/L/secrets/S/versions/V`` on the regional endpoint of ``L``), written to
``fileName`` or ``path``, optionally reduced to one string value with ``extractJSONKey`` or
``extractYAMLKey``. Which Google identity reads it is chosen as the GCP provider chooses:

* a ``key.json`` in the nodePublishSecretRef: that service-account key (static credentials the
  app team put in its own namespace; only ``service_account`` keys, only towards the configured
  OAuth token endpoint, so a key file cannot make the daemon read node files or call arbitrary
  URLs);
* ``auth: provider-adc``: the daemon's own Application Default Credentials. Every namespace would
  share that identity, so keygate refuses it unless the cluster admin sets
  ``backends.gcp.insecure_allow_provider_adc``;
* otherwise (``auth: pod-adc`` or unset) the pod's workload identity: the pod's own
  service-account token is exchanged at STS for a federated access token, then optionally traded
  for a Google service account's token (``gcpServiceAccount``) through IAM Credentials.

The SDK is synchronous, so reads run on this backend's bounded worker pool. Access tokens are
cached per identity until shortly before they expire; gRPC channels are kept per endpoint and the
token travels as per-call metadata, so one pod reading global and regional secrets costs a single
token exchange. Google libraries are imported on first use only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import yaml

from provider.errors import (
    BackendUnavailable,
    InvalidRequest,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
)
from providers.base import FetchContext, Fetched, SecretObject
from providers.runtime import ClientCache, Retryable, WorkerPool, gather_all, with_retries

if TYPE_CHECKING:
    from google.auth.transport.requests import Request
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient

log = logging.getLogger("keygate.gcp")

GLOBAL_RESOURCE = re.compile(r"projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)")
REGIONAL_RESOURCE = re.compile(r"projects/([^/]+)/locations/([^/]+)/secrets/([^/]+)/versions/([^/]+)")
LOCATION = re.compile(r"[a-z][a-z0-9-]{0,29}")
SERVICE_ACCOUNT_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a token type name
AUTH_POD = "pod-adc"
AUTH_PROVIDER = "provider-adc"
NODE_KEY = "key.json"
IMPERSONATION_LIFETIME = 3600
DEFAULT_TOKEN_LIFETIME = 300.0

DEFAULTS: dict[str, Any] = {
    "endpoint": "secretmanager.googleapis.com:443",
    "regional_endpoint": "secretmanager.{location}.rep.googleapis.com:443",
    "sts_endpoint": "https://sts.googleapis.com/v1/token",
    "iam_endpoint": "https://iamcredentials.googleapis.com",
    "token_endpoint": "https://oauth2.googleapis.com/token",
    "workload_identity_pool": "",
    "identity_provider": "",
    "workload_identity_audience": "",
    "allow_node_publish_secret": True,
    "insecure_allow_provider_adc": False,
    "insecure_plaintext_endpoint": False,
    "workers": 16,
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class GCPSettings:
    """The ``backends.gcp`` section of the daemon config, validated once at construction.

    The ``insecure_plaintext_endpoint`` switch exists for tests against local servers: it turns
    off TLS for every Google endpoint, and is refused unless every endpoint is on loopback, so a
    mistaken production config cannot send tokens in clear over a network.
    """

    endpoint: str
    regional_endpoint: str
    sts_endpoint: str
    iam_endpoint: str
    token_endpoint: str
    workload_identity_pool: str
    identity_provider: str
    workload_identity_audience: str
    allow_node_publish_secret: bool
    insecure_allow_provider_adc: bool
    insecure_plaintext_endpoint: bool
    workers: int

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> GCPSettings:
        unknown = sorted(set(raw) - set(DEFAULTS))
        if unknown:
            raise KeygateError(
                f"backends.gcp: unknown settings {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}"
            )
        values = {**DEFAULTS, **raw}
        for key, default in DEFAULTS.items():
            value = values[key]
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise KeygateError(f"backends.gcp.{key} must be true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                    raise KeygateError(f"backends.gcp.{key} must be an integer between 1 and 256")
            elif not isinstance(value, str):
                raise KeygateError(f"backends.gcp.{key} must be a string")
        settings = cls(**values)
        settings._check_endpoints()
        return settings

    def _check_endpoints(self) -> None:
        for key in ("endpoint", "regional_endpoint"):
            target: str = getattr(self, key)
            host = target.rsplit(":", 1)[0] if ":" in target else target
            if not host or "/" in target:
                raise KeygateError(f"backends.gcp.{key} must be host:port, not {target!r}")
            if self.insecure_plaintext_endpoint and not _is_loopback(host.replace("{location}", "x")):
                raise KeygateError(
                    f"backends.gcp.{key} {target!r}: insecure_plaintext_endpoint is only allowed "
                    "for loopback addresses (local test servers)"
                )
        for key in ("sts_endpoint", "iam_endpoint", "token_endpoint"):
            url = urlsplit(getattr(self, key))
            plaintext_ok = self.insecure_plaintext_endpoint and _is_loopback(url.hostname or "")
            if url.scheme != "https" and not (url.scheme == "http" and plaintext_ok):
                raise KeygateError(
                    f"backends.gcp.{key} must be an https:// URL (http:// only on loopback with "
                    "insecure_plaintext_endpoint)"
                )

    def endpoint_for(self, location: str | None) -> str:
        if location is None:
            return self.endpoint
        return self.regional_endpoint.replace("{location}", location)


def parse_resource(name: str, where: str) -> str | None:
    """The location of a regional resource name, None for a global one; InvalidSPC otherwise."""
    regional = REGIONAL_RESOURCE.fullmatch(name)
    if regional:
        location = regional.group(2)
        if not LOCATION.fullmatch(location):
            raise InvalidSPC(f"{where}: location {location[:40]!r} is not a valid GCP location")
        return location
    if GLOBAL_RESOURCE.fullmatch(name):
        return None
    raise InvalidSPC(
        f"{where}: resourceName must be projects/<project>/secrets/<secret>/versions/<version> or "
        "projects/<project>/locations/<location>/secrets/<secret>/versions/<version>"
    )


def _delegates(raw: str, where: str) -> tuple[str, ...]:
    """``gcpServiceAccountDelegates``: a JSON list (as the GKE annotation) or a comma list."""
    text = raw.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise InvalidSPC(f"{where}: gcpServiceAccountDelegates is not a valid JSON list") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidSPC(f"{where}: gcpServiceAccountDelegates must be a list of e-mail addresses")
        items = [v.strip() for v in value]
    else:
        items = [v.strip() for v in text.split(",") if v.strip()]
    for item in items:
        if not SERVICE_ACCOUNT_EMAIL.fullmatch(item):
            raise InvalidSPC(f"{where}: delegate {item[:80]!r} is not a service-account e-mail")
    return tuple(items)


@dataclass(frozen=True, slots=True)
class _Auth:
    """How one Mount authenticates: a cache key, a description for messages, a token builder."""

    kind: str
    key: tuple[str, ...]
    describe: str
    build: Callable[[Request], tuple[str, datetime | None]]


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    describe: str


@dataclass(frozen=True, slots=True)
class _Read:
    version: str
    data: bytes


def _oauth_reason(exc: BaseException) -> str:
    """A short reason from a google-auth error body (OAuth ``error`` or Google ``error.status``).

    The raw body is not passed on: only the documented error fields, truncated.
    """
    for arg in exc.args[1:]:
        body: Any = arg
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except ValueError:
                continue
        if not isinstance(body, dict):
            continue
        error = body.get("error")
        if isinstance(error, dict):
            parts = [str(error.get("status", "")), str(error.get("message", ""))]
        else:
            parts = [str(error or ""), str(body.get("error_description", ""))]
        reason = ": ".join(p for p in parts if p)
        if reason:
            return reason[:300]
    return type(exc).__name__


def _retryable(exc: BaseException) -> bool:
    """Throttling or a server fault at a token endpoint (worth another try), not a refusal."""
    if getattr(exc, "retryable", False):
        return True
    reason = _oauth_reason(exc)
    return reason.startswith(
        ("temporarily_unavailable", "server_error", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL")
    )


def _bounded_request(session: Any, timeout: float) -> Request:
    """A google-auth HTTP transport on the backend's shared session, never outliving the deadline."""
    from google.auth.transport.requests import Request

    class _Bounded(Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = min(float(kwargs.get("timeout") or timeout), timeout)
            return Request.__call__(self, *args, **kwargs)

    return _Bounded(session=session)


class GCPBackend:
    """Reads Secret Manager versions with the pod's workload identity (or the SPC's chosen auth)."""

    name: ClassVar[str] = "gcp"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = GCPSettings.from_mapping(settings)
        self._pool = WorkerPool("gcp", self.settings.workers)
        self._tokens: ClientCache[tuple[str, ...], _Token] = ClientCache()
        self._clients: dict[str, SecretManagerServiceClient] = {}
        self._clients_lock = threading.Lock()
        self._adc: Any = None
        self._adc_lock = threading.Lock()
        self._session: Any = None

    # -- validation ---------------------------------------------------------------------------

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        where = f"objects[{obj.index}] {obj.name!r}"
        parse_resource(resource_name(obj), where)
        file_name = obj.str_field("fileName")
        path = obj.str_field("path")
        named = obj.str_field("objectName") and obj.str_field("resourceName")
        if not (file_name or path or obj.str_field("objectAlias") or named):
            raise InvalidSPC(
                f"{where}: set fileName (or path) to name the file this secret is written to; "
                "the GCP provider requires one and keygate does too"
            )
        if file_name and path and file_name != path:
            raise InvalidSPC(f"{where}: set either fileName or path, not both with different values")
        if obj.str_field("extractJSONKey") and obj.str_field("extractYAMLKey"):
            raise InvalidSPC(f"{where}: set either extractJSONKey or extractYAMLKey, not both")
        auth = parameters.get("auth", "").strip()
        if auth not in ("", AUTH_POD, AUTH_PROVIDER):
            raise InvalidSPC(
                f"parameter 'auth' is {auth[:40]!r}; use {AUTH_POD!r} (the pod's workload identity, "
                f"the default) or {AUTH_PROVIDER!r} (the daemon's own credentials)"
            )
        gsa = parameters.get("gcpServiceAccount", "").strip()
        if gsa and not SERVICE_ACCOUNT_EMAIL.fullmatch(gsa):
            raise InvalidSPC(f"parameter 'gcpServiceAccount' {gsa[:80]!r} is not a service-account e-mail")
        _delegates(parameters.get("gcpServiceAccountDelegates", ""), "parameter 'gcpServiceAccountDelegates'")

    # -- fetching -------------------------------------------------------------------------------

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        auth = self._auth(ctx)
        # One token exchange (with its retries) before the fan-out, not one per secret.
        await with_retries(lambda: self._token(auth, ctx), ctx)
        targets: dict[str, str] = {}
        for obj in objects:
            name = resource_name(obj)
            targets.setdefault(name, self.settings.endpoint_for(parse_resource(name, name)))
        done = await gather_all([self._read(name, endpoint, auth, ctx) for name, endpoint in targets.items()])
        reads = dict(zip(targets, done, strict=True))
        repeated = Counter(resource_name(obj) for obj in objects)
        out: list[Fetched] = []
        for obj in objects:
            name = resource_name(obj)
            read = reads[name]
            object_id = name if repeated[name] == 1 else f"{name}#{obj.path}"
            out.append(Fetched(obj, object_id, _extract(obj, read.data), read.version))
        return out

    async def _read(self, name: str, endpoint: str, auth: _Auth, ctx: FetchContext) -> _Read:
        async def attempt() -> _Read:
            token = await self._token(auth, ctx)
            timeout = ctx.remaining()
            try:
                read = await self._pool.run(lambda: self._access(endpoint, name, token.value, timeout))
            except Exception as exc:  # noqa: BLE001 - mapped to a KeygateError or re-raised
                raise self._map_error(exc, name, endpoint, auth) from None
            log.debug(
                "gcp secret version read",
                extra={"resource": name, "endpoint": endpoint, "auth": auth.kind, "resolved": read.version},
            )
            return read

        return await with_retries(attempt, ctx)

    def _access(self, endpoint: str, name: str, token: str, timeout: float) -> _Read:
        """One blocking AccessSecretVersion call; the SDK's own retries are off (ours apply)."""
        import google_crc32c

        client = self._client(endpoint)
        response = client.access_secret_version(
            request={"name": name},
            retry=None,
            timeout=timeout,
            metadata=[("authorization", f"Bearer {token}")],
        )
        if "payload" not in response:
            raise BackendUnavailable(f"GCP Secret Manager answered for {name} without a payload")
        data = bytes(response.payload.data)
        if "data_crc32c" in response.payload and google_crc32c.value(data) != response.payload.data_crc32c:
            raise BackendUnavailable(
                f"GCP secret {name}: the payload checksum (data_crc32c) does not match; "
                "the response was corrupted in transit"
            )
        return _Read(version=response.name or name, data=data)

    def _client(self, endpoint: str) -> SecretManagerServiceClient:
        with self._clients_lock:
            client = self._clients.get(endpoint)
            if client is None:
                import grpc
                from google.cloud.secretmanager_v1 import SecretManagerServiceClient
                from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
                    SecretManagerServiceGrpcTransport,
                )

                channel = (
                    grpc.insecure_channel(endpoint)
                    if self.settings.insecure_plaintext_endpoint
                    else grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
                )
                client = SecretManagerServiceClient(
                    transport=SecretManagerServiceGrpcTransport(channel=channel)
                )
                self._clients[endpoint] = client
            return client

    def _map_error(self, exc: BaseException, name: str, endpoint: str, auth: _Auth) -> KeygateError:
        """SDK exceptions to keygate errors naming the resource and identity, never content."""
        from google.api_core import exceptions as gexc

        if isinstance(exc, KeygateError):
            return exc
        if isinstance(exc, gexc.NotFound):
            return SecretNotFound(f"GCP secret version {name} was not found (endpoint {endpoint})")
        if isinstance(exc, gexc.PermissionDenied):
            return PermissionDenied(
                f"GCP denied access to {name} for {auth.describe}; grant it "
                "roles/secretmanager.secretAccessor on that secret"
            )
        if isinstance(exc, gexc.Unauthenticated):
            self._tokens.invalidate(auth.key)
            return Unauthenticated(f"GCP did not accept the access token of {auth.describe} reading {name}")
        if isinstance(exc, gexc.FailedPrecondition):
            return SecretNotFound(f"GCP secret version {name} is disabled or destroyed")
        if isinstance(exc, gexc.InvalidArgument):
            return InvalidSPC(f"GCP rejected the resource name {name} as invalid")
        if isinstance(exc, gexc.ResourceExhausted | gexc.ServiceUnavailable | gexc.DeadlineExceeded):
            return Retryable(f"GCP Secret Manager at {endpoint} is busy or unavailable reading {name}")
        if isinstance(exc, gexc.GoogleAPICallError):
            status = getattr(exc, "grpc_status_code", None) or exc.code
            code = getattr(status, "name", None) or type(exc).__name__
            return BackendUnavailable(f"GCP Secret Manager failed reading {name} ({code})")
        raise exc

    # -- identities -----------------------------------------------------------------------------

    def _auth(self, ctx: FetchContext) -> _Auth:
        """Pick the identity as the GCP provider does: key.json, else ``auth``, else the pod."""
        auth = ctx.parameters.get("auth", "").strip()
        key_json = ctx.node_secrets.get(NODE_KEY)
        if key_json is not None:
            if auth:
                raise InvalidSPC(
                    f"the nodePublishSecretRef holds {NODE_KEY} and the SPC sets auth: {auth}; "
                    "use one or the other (as the GCP provider requires)"
                )
            if not self.settings.allow_node_publish_secret:
                raise PermissionDenied(
                    f"the nodePublishSecretRef holds {NODE_KEY}, but static keys are disabled on this "
                    "cluster (backends.gcp.allow_node_publish_secret: false); use workload identity"
                )
            return self._key_auth(key_json)
        if auth == AUTH_PROVIDER:
            if not self.settings.insecure_allow_provider_adc:
                raise PermissionDenied(
                    "auth: provider-adc would read with the keygate daemon's own Google identity, shared "
                    "by every namespace; the cluster admin has not enabled it "
                    "(backends.gcp.insecure_allow_provider_adc). Use the pod's workload identity"
                )
            return _Auth(
                "provider-adc", ("provider-adc",), "the keygate daemon's own credentials", self._adc_token
            )
        return self._workload_auth(ctx)

    def _workload_auth(self, ctx: FetchContext) -> _Auth:
        params = ctx.parameters
        pool = params.get("workloadIdentityPool", "").strip() or self.settings.workload_identity_pool
        provider = params.get("identityProvider", "").strip() or self.settings.identity_provider
        audience = (
            params.get("workloadIdentityAudience", "").strip() or self.settings.workload_identity_audience
        )
        if not audience and pool and provider:
            audience = f"identitynamespace:{pool}:{provider}"
        if not audience:
            raise InvalidSPC(
                "GCP workload identity is not configured: set backends.gcp.workload_identity_pool and "
                "identity_provider (or workload_identity_audience) in the keygate config, or the SPC "
                "parameters workloadIdentityPool and identityProvider"
            )
        candidates = [a for a in (pool, audience) if a]
        if audience.startswith("//"):
            candidates.append("https:" + audience)
        subject = next((t for a in candidates if (t := ctx.token_for(a))), None)
        if subject is None:
            raise Unauthenticated(
                f"the mount carries no service-account token for audience {candidates[0]!r}; add "
                f"'- audience: {candidates[0]}' to the CSIDriver's spec.tokenRequests"
            )
        gsa = params.get("gcpServiceAccount", "").strip()
        delegates = _delegates(params.get("gcpServiceAccountDelegates", ""), "gcpServiceAccountDelegates")
        who = f"workload identity {ctx.pod.namespace}/{ctx.pod.service_account}"
        describe = f"{who} impersonating {gsa}" if gsa else f"{who} (pool {pool or audience})"
        key = (
            "pod-adc",
            audience,
            ctx.pod.namespace,
            ctx.pod.service_account,
            ctx.pod.uid,
            gsa,
            ",".join(delegates),
            hashlib.sha256(subject.encode()).hexdigest(),
        )

        def build(request: Request) -> tuple[str, datetime | None]:
            return self._exchange(request, subject, audience, gsa, delegates, describe)

        return _Auth("pod-adc", key, describe, build)

    def _exchange(
        self,
        request: Request,
        subject: str,
        audience: str,
        gsa: str,
        delegates: tuple[str, ...],
        describe: str,
    ) -> tuple[str, datetime | None]:
        """STS token exchange with the pod's token, then IAM impersonation if a GSA is named."""
        from google.auth import exceptions as aexc
        from google.auth import identity_pool, impersonated_credentials

        class _PodToken(identity_pool.SubjectTokenSupplier):
            def get_subject_token(self, context: Any, request: Any) -> str:
                return subject

        federated = identity_pool.Credentials(
            audience=audience,
            subject_token_type=JWT_TOKEN_TYPE,
            token_url=self.settings.sts_endpoint,
            subject_token_supplier=_PodToken(),
            scopes=[CLOUD_SCOPE],
        )
        try:
            federated.refresh(request)
        except aexc.TransportError:
            raise Retryable(f"the GCP STS endpoint could not be reached for {describe}") from None
        except (ValueError, KeyError):
            raise Retryable(f"the GCP STS endpoint sent an unreadable answer for {describe}") from None
        except (aexc.RefreshError, aexc.OAuthError) as exc:
            if _retryable(exc):
                raise Retryable(f"the GCP STS endpoint is busy ({_oauth_reason(exc)})") from None
            raise Unauthenticated(
                f"GCP STS refused the pod's token for {describe} (audience {audience}): {_oauth_reason(exc)}"
            ) from None
        if not gsa:
            return str(federated.token), federated.expiry
        impersonated = impersonated_credentials.Credentials(
            source_credentials=federated,
            target_principal=gsa,
            target_scopes=[CLOUD_SCOPE],
            delegates=[f"projects/-/serviceAccounts/{d}" for d in delegates],
            lifetime=IMPERSONATION_LIFETIME,
            iam_endpoint_override=(
                f"{self.settings.iam_endpoint.rstrip('/')}/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken"
            ),
        )
        try:
            impersonated.refresh(request)
        except aexc.TransportError:
            raise Retryable(f"the GCP IAM Credentials endpoint could not be reached for {describe}") from None
        except (ValueError, KeyError):
            raise Retryable(
                f"the GCP IAM Credentials endpoint sent an unreadable answer for {describe}"
            ) from None
        except (aexc.RefreshError, aexc.OAuthError) as exc:
            if _retryable(exc):
                raise Retryable(f"the GCP IAM Credentials endpoint is busy ({_oauth_reason(exc)})") from None
            raise PermissionDenied(
                f"GCP IAM refused {describe}: {_oauth_reason(exc)}; grant the pod's principal "
                f"roles/iam.workloadIdentityUser (or serviceAccountTokenCreator) on {gsa}"
            ) from None
        return str(impersonated.token), impersonated.expiry

    def _key_auth(self, key_json: str) -> _Auth:
        """Static service-account key from the nodePublishSecretRef (the pod namespace's Secret)."""
        try:
            info = json.loads(key_json)
        except ValueError:
            raise InvalidRequest(f"the nodePublishSecretRef {NODE_KEY} is not valid JSON") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise InvalidRequest(
                f"the nodePublishSecretRef {NODE_KEY} must be a service-account key "
                '("type": "service_account"); other credential types are not accepted'
            )
        token_uri = info.get("token_uri") or self.settings.token_endpoint
        if token_uri != self.settings.token_endpoint:
            raise PermissionDenied(
                f"the nodePublishSecretRef {NODE_KEY} names token_uri {str(token_uri)[:100]!r}; keygate "
                f"only sends key assertions to {self.settings.token_endpoint}"
            )
        email = str(info.get("client_email", ""))[:200]
        describe = f"the service-account key of {email or 'an unnamed account'} (nodePublishSecretRef)"
        key = ("node-publish-secret", hashlib.sha256(key_json.encode()).hexdigest())

        def build(request: Request) -> tuple[str, datetime | None]:
            from google.auth import exceptions as aexc
            from google.oauth2 import service_account

            try:
                creds = service_account.Credentials.from_service_account_info(
                    {**info, "token_uri": self.settings.token_endpoint}, scopes=[CLOUD_SCOPE]
                )
            except (ValueError, KeyError, aexc.GoogleAuthError) as exc:
                raise InvalidRequest(
                    f"the nodePublishSecretRef {NODE_KEY} is not a usable service-account key "
                    f"({type(exc).__name__})"
                ) from None
            try:
                creds.refresh(request)
            except aexc.TransportError:
                raise Retryable("the GCP OAuth token endpoint could not be reached") from None
            except (ValueError, KeyError):
                raise Retryable("the GCP OAuth token endpoint sent an unreadable answer") from None
            except (aexc.RefreshError, aexc.OAuthError) as exc:
                if _retryable(exc):
                    raise Retryable(f"the GCP OAuth token endpoint is busy ({_oauth_reason(exc)})") from None
                raise Unauthenticated(f"GCP refused {describe}: {_oauth_reason(exc)}") from None
            return str(creds.token), creds.expiry

        return _Auth("node-publish-secret", key, describe, build)

    def _adc_token(self, request: Request) -> tuple[str, datetime | None]:
        """The daemon's Application Default Credentials, loaded once and refreshed on demand."""
        import google.auth
        from google.auth import exceptions as aexc

        with self._adc_lock:
            try:
                if self._adc is None:
                    self._adc, _ = google.auth.default(scopes=[CLOUD_SCOPE])
                self._adc.refresh(request)
            except aexc.DefaultCredentialsError:
                raise KeygateError(
                    "auth: provider-adc, but the keygate daemon has no Application Default Credentials"
                ) from None
            except aexc.TransportError:
                raise Retryable("the daemon's credentials could not be refreshed (network)") from None
            except (aexc.RefreshError, aexc.OAuthError) as exc:
                if _retryable(exc):
                    raise Retryable(
                        f"the daemon's credentials could not be refreshed ({_oauth_reason(exc)})"
                    ) from None
                raise Unauthenticated(
                    f"the daemon's own credentials were refused: {_oauth_reason(exc)}"
                ) from None
            return str(self._adc.token), self._adc.expiry

    def _http(self) -> Any:
        """One ``requests`` session for all token calls, so connections to STS/IAM are reused."""
        with self._clients_lock:
            if self._session is None:
                import requests

                self._session = requests.Session()
            return self._session

    async def _token(self, auth: _Auth, ctx: FetchContext) -> _Token:
        async def factory() -> tuple[_Token, float]:
            timeout = ctx.remaining()
            value, expiry = await self._pool.run(lambda: auth.build(_bounded_request(self._http(), timeout)))
            lifetime = DEFAULT_TOKEN_LIFETIME
            if expiry is not None:
                lifetime = (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
            log.info(
                "gcp credentials obtained",
                extra={"auth": auth.kind, "identity": auth.describe, "lifetime_s": int(lifetime)},
            )
            return _Token(value, auth.describe), time.monotonic() + lifetime

        return await self._tokens.get(auth.key, factory)

    async def close(self) -> None:
        self._tokens.clear()
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.transport.close()
        if self._session is not None:
            self._session.close()
        self._pool.close()


def _extract(obj: SecretObject, data: bytes) -> bytes:
    """``extractJSONKey`` / ``extractYAMLKey``: one top-level string value, as the GCP provider.

    Parse errors are reported without the parser's text, which quotes the payload.
    """
    where = f"objects[{obj.index}] {obj.name!r}"
    for field, kind in (("extractJSONKey", "JSON"), ("extractYAMLKey", "YAML")):
        key = obj.str_field(field)
        if not key:
            continue
        try:
            document = json.loads(data) if kind == "JSON" else yaml.safe_load(data)
        except (ValueError, yaml.YAMLError, RecursionError):
            raise InvalidSPC(
                f"{where}: {field} is set but the secret's payload is not valid {kind}"
            ) from None
        if not isinstance(document, dict):
            raise InvalidSPC(f"{where}: {field} is set but the secret's payload is not a {kind} mapping")
        if key not in document:
            raise SecretNotFound(f"{where}: key {key!r} was not found in the secret's {kind} payload")
        value = document[key]
        if not isinstance(value, str):
            raise InvalidSPC(
                f"{where}: the value of {key!r} is a {type(value).__name__}; only string values can be "
                f"extracted with {field}"
            )
        return value.encode()
    return data


def resource_name(obj: SecretObject) -> str:
    """The secret version to read: ``resourceName``, which an ``objects`` entry may pair with an
    ``objectName`` (a mixed SPC names every object), else the object's name."""
    return obj.str_field("resourceName") or obj.name
