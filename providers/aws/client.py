"""boto3 for one backend: clients per (service, region, endpoint, identity), the pod's STS
exchange, the reads themselves, and AWS error codes as keygate errors.

boto3 is blocking and costs a few hundred milliseconds to import, so it is imported on first use
and every call runs on the backend's worker pool. AWS error messages are never echoed (only the
error code), so nothing the service quotes back can reach the driver or the logs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from provider.errors import (
    Code,
    Gone,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
    gone,
)
from providers.aws.auth import Auth, Credentials
from providers.aws.params import Plan, Target
from providers.aws.pod_identity import PodIdentityAgent
from providers.common.errors import is_retryable
from providers.common.rate_limit import parse_retry_after
from providers.common.runtime import ClientCache, Retryable, WorkerPool

STATIC_LIFETIME = 3600.0

NOT_FOUND = frozenset(
    {
        "ResourceNotFoundException",
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "ParameterVersionLabelNotFound",
    }
)
ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "DecryptionFailure",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "InvalidKeyId",
    }
)
UNAUTHENTICATED = frozenset(
    {
        "InvalidIdentityToken",
        "IDPRejectedClaim",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
    }
)
THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ThrottledException",
        "IDPCommunicationError",
    }
)
TRANSIENT = frozenset(
    {
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
ACCESS_REMOVED = frozenset({"AccessDenied", "AccessDeniedException"})
BAD_REQUEST = frozenset({"ValidationException", "InvalidParameterException", "InvalidRequestException"})


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _header(exc: Exception, name: str) -> str | None:
    response = getattr(exc, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}
    value = headers.get(name) if isinstance(headers, dict) else None
    return value if isinstance(value, str) else None


def translate_error(exc: Exception, what: str, region: str) -> KeygateError:
    """A botocore exception as a secret-free KeygateError; Retryable for throttling/faults.

    AWS error messages are not echoed (only the error code) so nothing the service quotes back
    can reach the driver or the logs.
    """
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        ParamValidationError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from botocore.parsers import ResponseParserError

    if isinstance(exc, HTTPClientError | BotoConnectionError):
        return Retryable(f"cannot reach AWS in {region} for {what} ({type(exc).__name__})")
    if isinstance(exc, ResponseParserError):
        return Retryable(f"{what}: AWS sent an unreadable answer in {region} ({type(exc).__name__})")
    if isinstance(exc, ParamValidationError):
        return InvalidSPC(f"{what}: AWS rejected the request parameters (check objectName and versions)")
    if not isinstance(exc, ClientError):
        return KeygateError(
            f"{what}: unexpected AWS client error ({type(exc).__name__})", code=Code.BACKEND_UNAVAILABLE
        )
    code, status = _error_code(exc)
    if code in NOT_FOUND:
        return SecretNotFound(f"{what} was not found in {region} ({code})")
    if code in ACCESS_DENIED:
        return PermissionDenied(
            f"{what}: access denied in {region} ({code}); check the IAM role's policy and the KMS key policy"
        )
    if code in UNAUTHENTICATED:
        return Unauthenticated(f"{what}: AWS rejected the credentials in {region} ({code})")
    retry_after = parse_retry_after(_header(exc, "retry-after"))
    if code in THROTTLED or status == 429:
        message = f"{what}: throttled by AWS in {region} ({code})"
        return Retryable(message, retry_after=retry_after, throttled=True)
    if code in TRANSIENT or is_retryable(status):
        return Retryable(f"{what}: AWS error in {region} ({code or status})", retry_after=retry_after)
    if code in BAD_REQUEST:
        return InvalidSPC(f"{what}: AWS refused the request in {region} ({code})")
    return KeygateError(f"{what}: AWS returned {code or status} in {region}", code=Code.BACKEND_UNAVAILABLE)


def read_error(exc: Exception, what: str, region: str) -> KeygateError:
    """:func:`translate_error` for a read made with working credentials, with the definite
    answers marked gone: not found, scheduled for deletion, access denied to the role."""
    code, _ = _error_code(exc)
    response = getattr(exc, "response", None) or {}
    message = str(response.get("Error", {}).get("Message", "")).lower()
    if code == "InvalidRequestException" and ("deleted" in message or "deletion" in message):
        scheduled = SecretNotFound(
            f"{what} is scheduled for deletion in {region} ({code}); restore it or remove it from the SPC"
        )
        return gone(scheduled, Gone.DELETED)
    error = translate_error(exc, what, region)
    if code in NOT_FOUND:
        return gone(error, Gone.NOT_FOUND)
    if code in ACCESS_REMOVED:
        return gone(error, Gone.FORBIDDEN)
    return error


@dataclass(slots=True)
class Value:
    """One answer; ``missing`` is set (and nothing else) for an SSM name the batch did not find."""

    object_id: str
    version: str
    contents: bytes
    missing: KeygateError | None = None


class AWSClients:
    """Clients and temporary credentials, cached until the credentials expire."""

    def __init__(
        self, settings: Mapping[str, Any], pool: WorkerPool, workers: int, stats: Counter[str]
    ) -> None:
        self.endpoint_url = str(settings.get("endpoint_url") or "") or None
        self.sts_endpoint_url = str(settings.get("sts_endpoint_url") or "") or None
        self.region_endpoint_urls = {
            str(k): str(v) for k, v in (settings.get("region_endpoint_urls") or {}).items()
        }
        self.connect_timeout = float(settings.get("connect_timeout", 5.0))
        self.read_timeout = float(settings.get("read_timeout", 10.0))
        self.stats = stats
        self.pod_identity = PodIdentityAgent(settings)
        self._pool = pool
        self._workers = workers
        self.credentials: ClientCache[tuple[str, ...], tuple[Credentials, float]] = ClientCache()
        self._clients: ClientCache[tuple[str, ...], Any] = ClientCache()
        self._session: Any = None
        self._session_lock = threading.Lock()

    def _endpoint(self, region: str) -> str | None:
        return self.region_endpoint_urls.get(region) or self.endpoint_url

    def endpoint(self, region: str) -> str | None:
        """The endpoint URL override for ``region``, if any (None: AWS's own endpoint)."""
        return self._endpoint(region)

    def _sts_endpoint(self, region: str) -> str | None:
        return self.sts_endpoint_url or self._endpoint(region)

    def _new_client(self, service: str, region: str, endpoint: str | None, creds: Credentials | None) -> Any:
        import boto3
        import botocore
        from botocore.config import Config

        config = Config(
            region_name=region,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self._workers,
            user_agent_extra="keygate",
            signature_version=botocore.UNSIGNED if creds is None else None,
        )
        with self._session_lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session.client(
                service,
                region_name=region,
                endpoint_url=endpoint,
                config=config,
                aws_access_key_id=creds.access_key if creds else None,
                aws_secret_access_key=creds.secret_key if creds else None,
                aws_session_token=creds.session_token if creds else None,
            )

    def _assume(self, auth: Auth, region: str) -> tuple[Credentials, float]:
        """Exchange the pod's token for temporary credentials (unsigned STS call, or the agent)."""
        if auth.pod_identity is not None:
            self.stats["PodIdentityAgent"] += 1
            got = self.pod_identity.credentials(auth.pod_identity)
            return Credentials(got.access_key, got.secret_key, got.session_token), got.expires
        sts = self._new_client("sts", region, self._sts_endpoint(region), None)
        self.stats["AssumeRoleWithWebIdentity"] += 1
        try:
            response = sts.assume_role_with_web_identity(
                RoleArn=auth.role_arn, RoleSessionName=auth.session_name, WebIdentityToken=auth.token
            )
        except Exception as exc:  # noqa: BLE001 - translated below, never echoed
            raise translate_error(
                exc, f"AssumeRoleWithWebIdentity for role {auth.role_arn}", region
            ) from None
        raw = response.get("Credentials")
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(k), str) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")
        ):
            what = f"AssumeRoleWithWebIdentity for role {auth.role_arn}"
            raise Retryable(f"{what}: AWS sent an unreadable answer in {region}")
        expiration = raw.get("Expiration")
        if isinstance(expiration, datetime):
            lifetime = (expiration - datetime.now(UTC)).total_seconds()
        else:
            lifetime = 900.0
        creds = Credentials(raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"])
        return creds, time.monotonic() + lifetime

    async def client(self, service: str, region: str, auth: Auth) -> Any:
        """A client for (service, region, endpoint, identity), rebuilt when its credentials expire."""
        if auth.static is not None:
            creds, expires, generation = auth.static, time.monotonic() + STATIC_LIFETIME, "static"
        else:
            sts_key = (*auth.cache_key, region, self._sts_endpoint(region) or "")

            async def assume() -> tuple[tuple[Credentials, float], float]:
                pair = await self._pool.run(lambda: self._assume(auth, region))
                return pair, pair[1]

            creds, expires = await self.credentials.get(sts_key, assume)
            generation = repr(expires)
        endpoint = self._endpoint(region)
        client_key = (service, region, endpoint or "", *auth.cache_key, generation)

        async def build() -> tuple[Any, float]:
            client = await self._pool.run(lambda: self._new_client(service, region, endpoint, creds))
            return client, expires

        return await self._clients.get(client_key, build)

    def get_secret(self, client: Any, plan: Plan, target: Target) -> Value:
        kwargs: dict[str, str] = {"SecretId": target.name}
        if target.version:
            kwargs["VersionId"] = target.version
        if target.label:
            kwargs["VersionStage"] = target.label
        self.stats["GetSecretValue"] += 1
        try:
            response = client.get_secret_value(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translated below, never echoed
            what = f"{plan.where}: Secrets Manager secret {target.name!r}"
            raise read_error(exc, what, target.region) from None
        arn = response.get("ARN")
        if not isinstance(arn, str) or (
            response.get("SecretString") is None and not response.get("SecretBinary")
        ):
            # a 200 whose body botocore could not read (it yields an empty result, not an error)
            what = f"{plan.where}: Secrets Manager secret {target.name!r}"
            raise Retryable(f"{what}: AWS sent an unreadable answer in {target.region}")
        if response.get("SecretString") is not None:
            contents = str(response["SecretString"]).encode()
        else:
            contents = bytes(response["SecretBinary"])
        return Value(arn, str(response.get("VersionId", "")), contents)

    def get_parameters(self, client: Any, batch: Sequence[tuple[Target, Sequence[Plan]]]) -> list[Value]:
        names = [target.ssm_request for target, _ in batch]
        self.stats["GetParameters"] += 1
        first = batch[0][1][0]
        try:
            response = client.get_parameters(Names=names, WithDecryption=True)
        except Exception as exc:  # noqa: BLE001 - translated below, never echoed
            what = ", ".join(f"{plans[0].where}" for _, plans in batch)
            raise translate_error(exc, f"SSM parameters for {what}", first.primary.region) from None
        if not isinstance(response.get("Parameters"), list):
            what = ", ".join(f"{plans[0].where}" for _, plans in batch)
            raise Retryable(
                f"SSM parameters for {what}: AWS sent an unreadable answer in {first.primary.region}"
            )
        invalid = set(response.get("InvalidParameters") or [])
        by_base: dict[str, dict[str, Any]] = {}
        for parameter in response.get("Parameters") or []:
            for key in (parameter.get("Name"), parameter.get("ARN")):
                if key:
                    by_base[str(key)] = parameter
        values: list[Value] = []
        for target, plans in batch:
            where = plans[0].where
            if target.ssm_request in invalid:
                missing = SecretNotFound(
                    f"{where}: SSM parameter {target.ssm_request!r} was not found in {target.region} "
                    "(or that version/label does not exist)"
                )
                values.append(Value(target.name, "", b"", gone(missing, Gone.NOT_FOUND)))
                continue
            parameter = by_base.get(target.name)
            if parameter is None:
                raise KeygateError(
                    f"{where}: SSM returned no value for {target.ssm_request!r}",
                    code=Code.BACKEND_UNAVAILABLE,
                )
            values.append(
                Value(
                    str(parameter.get("ARN") or target.name),
                    str(parameter.get("Version", "")),
                    str(parameter.get("Value", "")).encode(),
                )
            )
        return values

    def clear(self) -> None:
        self.credentials.clear()
        self._clients.clear()
