"""AWS Secrets Manager and SSM Parameter Store, authenticated as the pod (IRSA or EKS Pod Identity).

The SPC vocabulary is the AWS provider's (``region``, ``failoverRegion``, ``pathTranslation``,
``objects`` with ``objectName``/``objectType``/``objectAlias``/``objectVersion``/
``objectVersionLabel``/``jmesPath``/``failoverObject``/``filePermission``) so its manifests carry
over with only ``spec.provider`` changed.

Credentials come from ``sts:AssumeRoleWithWebIdentity`` with the pod's own projected
service-account token (audience ``sts.amazonaws.com``), so a pod gets exactly what its IAM role's
trust policy grants its service account, never the node's or the daemon's permissions; with
``usePodIdentity`` the node's EKS Pod Identity Agent makes that exchange instead
(:mod:`providers.aws_pod_identity`). Static keys
are accepted only from the volume's nodePublishSecretRef. boto3 is blocking, so every AWS call
runs on this backend's bounded :class:`WorkerPool`; boto3 is imported on first use because it
costs a few hundred milliseconds to load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from provider.bounded_cache import bounded_memo
from provider.errors import (
    BackendUnavailable,
    Code,
    DeadlineExceeded,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
)
from providers import aws_pod_identity
from providers.base import FetchContext, Fetched, PodIdentity, SecretObject
from providers.runtime import (
    RETRYABLE_STATUSES,
    ClientCache,
    Retryable,
    WorkerPool,
    gather_all,
    with_retries,
)

log = logging.getLogger("keygate.aws")

# botocore logs full request and response bodies (secret values included) at DEBUG; keygate's
# own debug level must never switch that on.
for _noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

SECRETS_MANAGER = "secretsmanager"
SSM_PARAMETER = "ssmparameter"
OBJECT_TYPES = (SECRETS_MANAGER, SSM_PARAMETER)
SERVICE_BY_TYPE = {SECRETS_MANAGER: "secretsmanager", SSM_PARAMETER: "ssm"}
TYPE_BY_ARN_SERVICE = {"secretsmanager": SECRETS_MANAGER, "ssm": SSM_PARAMETER}
DEFAULT_AUDIENCE = "sts.amazonaws.com"
ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
SSM_BATCH = 10
STATIC_KEY_ID = "awsAccessKeyId"
STATIC_SECRET_KEY = "awsSecretAccessKey"  # noqa: S105 - a field name, not a secret
STATIC_SESSION_TOKEN = "awsSessionToken"  # noqa: S105 - a field name, not a secret
STATIC_LIFETIME = 3600.0

ARN_RE = re.compile(
    r"\Aarn:(?P<partition>[A-Za-z0-9-]+):(?P<service>[A-Za-z0-9-]+):(?P<region>[A-Za-z0-9-]*):"
    r"(?P<account>[0-9]*):(?P<resource>.+)\Z"
)
ROLE_ARN_RE = re.compile(r"\Aarn:[A-Za-z0-9-]+:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+\Z")
REGION_RE = re.compile(r"\A[a-z]{2}(-[a-z]+)+-[0-9]+\Z")

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
BAD_REQUEST = frozenset({"ValidationException", "InvalidParameterException", "InvalidRequestException"})

RoleResolver = Callable[[PodIdentity], Awaitable[str | None]]
"""Looks up a pod's IAM role (e.g. its service account's ``eks.amazonaws.com/role-arn``)."""


# --- SPC parsing ---------------------------------------------------------------------------


def translate_path(name: str, parameters: Mapping[str, str]) -> str:
    """``name`` with "/" replaced per ``pathTranslation`` (default "_"; "False" keeps it)."""
    raw = parameters.get("pathTranslation")
    if raw is None or raw == "":
        return name.replace("/", "_")
    if raw.lower() == "false":
        return name
    if len(raw) != 1 or raw in ("\x00", "\\"):
        raise InvalidSPC(
            f"parameter 'pathTranslation' must be a single character or \"False\", not {raw[:20]!r}"
        )
    return name.replace("/", raw)


@dataclass(frozen=True, slots=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str

    @classmethod
    def parse(cls, text: str) -> Arn | None:
        match = ARN_RE.match(text)
        return cls(**match.groupdict()) if match else None

    def with_region(self, region: str) -> str:
        return f"arn:{self.partition}:{self.service}:{region}:{self.account}:{self.resource}"


@dataclass(frozen=True, slots=True)
class Target:
    """One AWS read: what to ask for, where."""

    object_type: str
    name: str
    region: str
    version: str = ""
    label: str = ""

    @property
    def ssm_request(self) -> str:
        """The GetParameters name with its selector (``name:3`` or ``name:label``)."""
        selector = self.version or self.label
        return f"{self.name}:{selector}" if selector else self.name


@dataclass(frozen=True, slots=True)
class JmesEntry:
    path: str
    alias: str


@dataclass(frozen=True, slots=True)
class Plan:
    """An SPC object resolved to its primary read, optional failover read and extractions."""

    obj: SecretObject
    primary: Target
    failover: Target | None
    jmes: tuple[JmesEntry, ...]

    @property
    def where(self) -> str:
        return f"objects[{self.obj.index}] {self.obj.name!r}"


@bounded_memo("jmespath", max_entries=256, max_bytes=512 * 1024, max_entry_bytes=8 * 1024)
def _compile_jmes(expression: str) -> Any:
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(expression)
    except JMESPathError:
        raise InvalidSPC(f"jmesPath {expression[:100]!r} is not a valid JMESPath expression") from None


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidSPC(f"{what} must be a string")
    return str(value)


def _type_of(name: str, declared: str, where: str, region: str) -> str:
    arn = Arn.parse(name) if name.startswith("arn:") else None
    declared = declared.lower()
    if name.startswith("arn:"):
        if arn is None or arn.service not in TYPE_BY_ARN_SERVICE:
            raise InvalidSPC(
                f"{where}: objectName looks like an ARN but is not a Secrets Manager or SSM parameter ARN"
            )
        from_arn = TYPE_BY_ARN_SERVICE[arn.service]
        if declared and declared != from_arn:
            raise InvalidSPC(
                f"{where}: objectType {declared!r} does not match the ARN's service ({from_arn})"
            )
        if arn.region and region and arn.region != region:
            raise InvalidSPC(f"{where}: the ARN's region {arn.region} is not the SPC region {region}")
        return from_arn
    if declared not in OBJECT_TYPES:
        raise InvalidSPC(
            f"{where}: objectType must be 'secretsmanager' or 'ssmparameter' "
            f"(or give a full ARN as objectName), not {declared[:40]!r}"
        )
    return declared


def _version_fields(spec: Mapping[str, Any], object_type: str, where: str) -> tuple[str, str]:
    version = _str(spec.get("objectVersion"), f"{where}: objectVersion")
    label = _str(spec.get("objectVersionLabel"), f"{where}: objectVersionLabel")
    if object_type == SSM_PARAMETER:
        if version and label:
            raise InvalidSPC(f"{where}: an SSM parameter takes objectVersion or objectVersionLabel, not both")
        if version and not version.isdigit():
            raise InvalidSPC(f"{where}: objectVersion of an SSM parameter must be a version number")
    elif version and not 32 <= len(version) <= 64:
        raise InvalidSPC(f"{where}: objectVersion must be a Secrets Manager VersionId (32 to 64 characters)")
    return version, label


def _jmes_entries(spec: Mapping[str, Any], where: str) -> tuple[JmesEntry, ...]:
    raw = spec.get("jmesPath")
    if raw in (None, ""):
        return ()
    if not isinstance(raw, list) or not raw:
        raise InvalidSPC(f"{where}: jmesPath must be a list of {{path, objectAlias}} entries")
    entries: list[JmesEntry] = []
    for i, entry in enumerate(raw):
        at = f"{where} jmesPath[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidSPC(f"{at} must be a mapping with 'path' and 'objectAlias'")
        path = _str(entry.get("path"), f"{at}: path")
        alias = _str(entry.get("objectAlias"), f"{at}: objectAlias")
        if not path or not alias:
            raise InvalidSPC(f"{at} needs both 'path' and 'objectAlias'")
        _compile_jmes(path)
        entries.append(JmesEntry(path, alias))
    return tuple(entries)


# --- AWS calls (run on worker threads) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """Temporary or static AWS keys; repr never shows them."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Auth:
    """How this mount authenticates: web identity as the pod, or static node-secret keys."""

    kind: str
    cache_key: tuple[str, ...]
    role_arn: str = ""
    session_name: str = ""
    token: str = field(default="", repr=False)
    static: Credentials | None = None
    pod_identity: aws_pod_identity.PodIdentityRequest | None = None


def session_name(pod: PodIdentity) -> str:
    """The STS role session name: names the pod in CloudTrail; AWS allows [\\w+=,.@-]{2,64}."""
    raw = f"keygate-{pod.namespace}-{pod.name}"
    clean = re.sub(r"[^\w+=,.@-]", "-", raw)
    if len(clean) > 64:
        clean = clean[:55] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return clean


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


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
    if code in THROTTLED or status == 429:
        return Retryable(f"{what}: throttled by AWS in {region} ({code})")
    if code in TRANSIENT or status in RETRYABLE_STATUSES:
        return Retryable(f"{what}: AWS error in {region} ({code or status})")
    if code in BAD_REQUEST:
        return InvalidSPC(f"{what}: AWS refused the request in {region} ({code})")
    return KeygateError(f"{what}: AWS returned {code or status} in {region}", code=Code.BACKEND_UNAVAILABLE)


@dataclass(slots=True)
class Value:
    object_id: str
    version: str
    contents: bytes


class AWSBackend:
    """Secrets Manager and SSM Parameter Store, each pod with its own STS credentials."""

    name: ClassVar[str] = "aws"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.default_region = str(settings.get("region") or "")
        self.endpoint_url = str(settings.get("endpoint_url") or "") or None
        self.sts_endpoint_url = str(settings.get("sts_endpoint_url") or "") or None
        self.region_endpoint_urls = {
            str(k): str(v) for k, v in (settings.get("region_endpoint_urls") or {}).items()
        }
        self.audience = str(settings.get("audience") or DEFAULT_AUDIENCE)
        self.connect_timeout = float(settings.get("connect_timeout", 5.0))
        self.read_timeout = float(settings.get("read_timeout", 10.0))
        workers = int(settings.get("workers", 16))
        self.role_resolver: RoleResolver | None = settings.get("role_resolver")
        self._pool = WorkerPool("aws", workers)
        self._pod_identity = aws_pod_identity.PodIdentityAgent(settings)
        self._workers = workers
        self._credentials: ClientCache[tuple[str, ...], tuple[Credentials, float]] = ClientCache()
        self._clients: ClientCache[tuple[str, ...], Any] = ClientCache()
        self._session: Any = None
        self._session_lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    # -- SPC -------------------------------------------------------------------------------

    def default_path(self, item: Mapping[str, Any], parameters: Mapping[str, str]) -> str:
        """The file name for an object without objectAlias: its name with "/" translated."""
        return translate_path(str(item.get("objectName", "")), parameters)

    def _region(self, parameters: Mapping[str, str]) -> str:
        region = parameters.get("region") or self.default_region
        if not region:
            raise InvalidSPC(
                "AWS objects need the SPC parameter 'region' (or backends.aws.region in the daemon config)"
            )
        if not REGION_RE.match(region):
            raise InvalidSPC(f"parameter 'region' {region[:40]!r} is not an AWS region name")
        return region

    def _failover_region(self, parameters: Mapping[str, str], region: str) -> str:
        failover = parameters.get("failoverRegion") or ""
        if failover and not REGION_RE.match(failover):
            raise InvalidSPC(f"parameter 'failoverRegion' {failover[:40]!r} is not an AWS region name")
        if failover and failover == region:
            raise InvalidSPC("parameter 'failoverRegion' must differ from 'region'")
        return failover

    def plan(self, obj: SecretObject, parameters: Mapping[str, str]) -> Plan:
        """Resolve one object; raises InvalidSPC naming the field at fault."""
        where = f"objects[{obj.index}] {obj.name!r}"
        region = self._region(parameters)
        failover_region = self._failover_region(parameters, region)
        translate_path(obj.name, parameters)
        spec = obj.spec
        object_type = _type_of(obj.name, obj.str_field("objectType"), where, region)
        version, label = _version_fields(spec, object_type, where)
        primary = Target(object_type, obj.name, region, version, label)
        failover: Target | None = None
        raw_failover = spec.get("failoverObject")
        if raw_failover not in (None, ""):
            if not failover_region:
                raise InvalidSPC(f"{where}: failoverObject needs the SPC parameter 'failoverRegion'")
            if not isinstance(raw_failover, Mapping):
                raise InvalidSPC(f"{where}: failoverObject must be a mapping with objectName")
            f_where = f"{where} failoverObject"
            f_name = _str(raw_failover.get("objectName"), f"{f_where}: objectName")
            if not f_name:
                raise InvalidSPC(f"{f_where}: objectName is required")
            f_type = _type_of(f_name, object_type, f_where, failover_region)
            f_version, f_label = _version_fields(raw_failover, f_type, f_where)
            failover = Target(f_type, f_name, failover_region, f_version or version, f_label or label)
        elif failover_region:
            arn = Arn.parse(obj.name)
            name = arn.with_region(failover_region) if arn and arn.region else obj.name
            failover = Target(object_type, name, failover_region, version, label)
        return Plan(obj, primary, failover, _jmes_entries(spec, where))

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        self.plan(obj, parameters)
        alias = obj.spec.get("objectAlias")
        if isinstance(alias, str):
            translate_path(alias, parameters)

    # -- auth ------------------------------------------------------------------------------

    async def _auth(self, ctx: FetchContext) -> Auth:
        pod_identity = aws_pod_identity.request_for(ctx)
        if pod_identity is not None:
            return Auth("pod-identity", pod_identity.cache_key, pod_identity=pod_identity)
        node = ctx.node_secrets
        if node.get(STATIC_KEY_ID) or node.get(STATIC_SECRET_KEY):
            if not (node.get(STATIC_KEY_ID) and node.get(STATIC_SECRET_KEY)):
                raise InvalidSPC(
                    f"the nodePublishSecretRef secret must hold both {STATIC_KEY_ID} and {STATIC_SECRET_KEY}"
                )
            creds = Credentials(node[STATIC_KEY_ID], node[STATIC_SECRET_KEY], node.get(STATIC_SESSION_TOKEN))
            digest = hashlib.sha256(
                "\x00".join((creds.access_key, creds.secret_key, creds.session_token or "")).encode()
            ).hexdigest()
            return Auth("static", ("static", digest), static=creds)
        role = ctx.parameters.get("roleArn") or ""
        if not role and self.role_resolver is not None:
            role = await self.role_resolver(ctx.pod) or ""
        if not role:
            raise InvalidSPC(
                "no IAM role for this pod: set the SPC parameter 'roleArn' or annotate the service "
                f"account {ctx.pod.namespace}/{ctx.pod.service_account} with {ROLE_ANNOTATION}"
            )
        if not ROLE_ARN_RE.match(role):
            raise InvalidSPC(
                f"role {role[:120]!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
            )
        token = ctx.token_for(self.audience)
        if not token:
            raise Unauthenticated(
                f"no service-account token for audience {self.audience!r} in the mount request; add "
                f"'- audience: {self.audience}' to the CSIDriver's spec.tokenRequests"
            )
        pod = ctx.pod
        name = session_name(pod)
        key = ("web", role, pod.namespace, pod.service_account, pod.name, pod.uid)
        return Auth("web", key, role_arn=role, session_name=name, token=token)

    # -- clients ---------------------------------------------------------------------------

    def _endpoint(self, region: str) -> str | None:
        return self.region_endpoint_urls.get(region) or self.endpoint_url

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
            got = self._pod_identity.credentials(auth.pod_identity)
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

    async def _client(self, service: str, region: str, auth: Auth) -> Any:
        """A client for (service, region, endpoint, identity), rebuilt when its credentials expire."""
        if auth.static is not None:
            creds, expires, generation = auth.static, time.monotonic() + STATIC_LIFETIME, "static"
        else:
            sts_key = (*auth.cache_key, region, self._sts_endpoint(region) or "")

            async def assume() -> tuple[tuple[Credentials, float], float]:
                pair = await self._pool.run(lambda: self._assume(auth, region))
                return pair, pair[1]

            creds, expires = await self._credentials.get(sts_key, assume)
            generation = repr(expires)
        endpoint = self._endpoint(region)
        client_key = (service, region, endpoint or "", *auth.cache_key, generation)

        async def build() -> tuple[Any, float]:
            client = await self._pool.run(lambda: self._new_client(service, region, endpoint, creds))
            return client, expires

        return await self._clients.get(client_key, build)

    # -- reads -----------------------------------------------------------------------------

    def _get_secret(self, client: Any, plan: Plan, target: Target) -> Value:
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
            raise translate_error(exc, what, target.region) from None
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

    def _get_parameters(self, client: Any, batch: Sequence[tuple[Target, Sequence[Plan]]]) -> list[Value]:
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
                raise SecretNotFound(
                    f"{where}: SSM parameter {target.ssm_request!r} was not found in {target.region} "
                    "(or that version/label does not exist)"
                )
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

    async def _read(
        self, targets: Sequence[tuple[Target, Sequence[Plan]]], auth: Auth, ctx: FetchContext
    ) -> list[Value]:
        """One unit of reads in one region (a secret, or an SSM batch), with retries."""
        target0 = targets[0][0]
        service = SERVICE_BY_TYPE[target0.object_type]

        async def attempt() -> list[Value]:
            client = await self._client(service, target0.region, auth)
            if target0.object_type == SECRETS_MANAGER:
                ((target, plans),) = targets
                return [await self._pool.run(lambda: self._get_secret(client, plans[0], target))]
            return await self._pool.run(lambda: self._get_parameters(client, targets))

        return await with_retries(attempt, ctx)

    async def _read_with_failover(
        self, group: Sequence[tuple[Target, Sequence[Plan]]], auth: Auth, ctx: FetchContext
    ) -> list[tuple[Sequence[Plan], Value]]:
        """Read in the primary region; on an outage there, read the failover targets instead.

        With a failover target the primary gets half of the remaining mount time, so a region
        that swallows packets (connect/read timeouts) still leaves time for the failover read.
        Answers such as "not found" or "access denied" are not outages and never fail over.
        """
        fallback = [(plans[0].failover, plans) for _, plans in group]
        can_fail_over = all(target is not None for target, _ in fallback)
        primary_ctx = replace(ctx, deadline=time.monotonic() + ctx.remaining() / 2) if can_fail_over else ctx
        try:
            values = await self._read(group, auth, primary_ctx)
            return [(plans, value) for (_, plans), value in zip(group, values, strict=True)]
        except (BackendUnavailable, DeadlineExceeded) as primary_error:
            if not can_fail_over:
                raise
            region = fallback[0][0].region  # type: ignore[union-attr]
            log.warning(
                "AWS primary region unavailable; reading from the failover region",
                extra={"region": group[0][0].region, "failover_region": region, "objects": len(group)},
            )
            out: list[tuple[Sequence[Plan], Value]] = []
            try:
                for units in _units([(t, p) for t, p in fallback if t is not None]):
                    values = await self._read(units, auth, ctx)
                    out.extend((plans, value) for (_, plans), value in zip(units, values, strict=True))
            except KeygateError as failover_error:
                raise KeygateError(
                    f"{primary_error.message}; failover region {region}: {failover_error.message}",
                    code=failover_error.code,
                ) from None
            return out

    # -- Backend API -----------------------------------------------------------------------

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        plans = [self.plan(obj, ctx.parameters) for obj in objects]
        auth = await self._auth(ctx)
        grouped: dict[Target, list[Plan]] = {}
        for plan in plans:
            grouped.setdefault(plan.primary, []).append(plan)
        units = _units(list(grouped.items()))
        parts = await gather_all([self._read_with_failover(unit, auth, ctx) for unit in units])
        results = [pair for part in parts for pair in part]
        id_counts = Counter(value.object_id for readers, value in results for _ in readers)
        out: list[Fetched] = []
        for readers, value in results:
            for plan in readers:
                out.extend(self._files(plan, value, id_counts[value.object_id] > 1, ctx.parameters))
        out.sort(key=lambda f: f.obj.index)
        return out

    def _files(self, plan: Plan, value: Value, shared: bool, parameters: Mapping[str, str]) -> list[Fetched]:
        obj = plan.obj
        object_id = f"{value.object_id}#{obj.path}" if shared else value.object_id
        alias = obj.spec.get("objectAlias")
        main_path = translate_path(alias, parameters) if isinstance(alias, str) and alias else None
        files = [
            Fetched(
                obj=obj, object_id=object_id, contents=value.contents, version=value.version, path=main_path
            )
        ]
        if not plan.jmes:
            return files
        try:
            document = json.loads(value.contents)
        except (ValueError, RecursionError):
            raise InvalidSPC(
                f"{plan.where}: jmesPath is set but the value is not JSON; remove jmesPath or store JSON"
            ) from None
        for entry in plan.jmes:
            result = _compile_jmes(entry.path).search(document)
            if result is None:
                raise SecretNotFound(f"{plan.where}: jmesPath {entry.path!r} matched nothing in the value")
            contents = result.encode() if isinstance(result, str) else json.dumps(result).encode()
            files.append(
                Fetched(
                    obj=obj,
                    object_id=f"{object_id}#jmesPath={entry.path}",
                    contents=contents,
                    version=value.version,
                    path=translate_path(entry.alias, parameters),
                )
            )
        return files

    async def close(self) -> None:
        self._pool.close()
        self._credentials.clear()
        self._clients.clear()


def _units(grouped: Sequence[tuple[Target, Sequence[Plan]]]) -> list[list[tuple[Target, Sequence[Plan]]]]:
    """Split reads into calls: one per secret; SSM names in batches of up to ten.

    An SSM batch never holds two selectors of one parameter, since GetParameters answers by
    name and the answers could not be told apart.
    """
    units: list[list[tuple[Target, Sequence[Plan]]]] = []
    ssm: dict[str, list[list[tuple[Target, Sequence[Plan]]]]] = {}
    for target, plans in grouped:
        if target.object_type == SECRETS_MANAGER:
            units.append([(target, plans)])
            continue
        batches = ssm.setdefault(target.region, [])
        for batch in batches:
            if len(batch) < SSM_BATCH and all(t.name != target.name for t, _ in batch):
                batch.append((target, plans))
                break
        else:
            batches.append([(target, plans)])
    for batches in ssm.values():
        units.extend(batches)
    return units
