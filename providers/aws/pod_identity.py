"""EKS Pod Identity for the AWS backend: the pod's token, exchanged by the node's Pod Identity Agent.

With ``usePodIdentity: "true"`` in the SPC (the AWS provider's parameter), keygate sends the pod's
projected service-account token for audience ``pods.eks.amazonaws.com`` in the ``Authorization``
header of a GET to the EKS Pod Identity Agent on the node (``http://169.254.170.23/v1/credentials``,
or ``http://[fd00:ec2::23]/v1/credentials``), which asks EKS for the role of the pod's Pod Identity
association and answers ``{AccessKeyId, SecretAccessKey, Token, Expiration}``. The pod thus gets
what its association grants, never the node's or the daemon's permissions.

``preferredAddressType`` picks the agent address: ``ipv4``, ``ipv6``, or ``auto`` (default: IPv4,
then IPv6 when IPv4 cannot be reached; an answer from IPv4, even a refusal, is final). The token
goes only to the configured agent URL: no proxy, no redirects. The answer is size-bounded and
checked; agent error text reaches messages only sanitised and never with the token in it.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from provider.domain import FetchContext
from provider.errors import (
    BackendUnavailable,
    KeygateError,
    PermissionDenied,
    Unauthenticated,
)
from providers.common.runtime import Retryable
from providers.common.schema import Values

AUDIENCE = "pods.eks.amazonaws.com"
IPV4_ENDPOINT = "http://169.254.170.23/v1/credentials"
IPV6_ENDPOINT = "http://[fd00:ec2::23]/v1/credentials"
PREFERENCES = ("auto", "ipv4", "ipv6")
MAX_ANSWER = 64 * 1024
MAX_LIFETIME = 12 * 3600.0

_ACCESS_KEY_RE = re.compile(r"\A[A-Z0-9]{16,128}\Z")
_TOKEN_RE = re.compile(r"\A[\x21-\x7e]{1,8192}\Z")
_ERROR_CODE_RE = re.compile(r"\(([A-Za-z]{1,64}Exception)\)")
_JWT_RE = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
_UNSAFE_RE = re.compile(r"[^\w .,:;()\[\]'/=-]")


@dataclass(frozen=True, slots=True)
class PodIdentityRequest:
    """One pod's Pod Identity exchange: its token and which agent address to ask."""

    token: str = field(repr=False)
    preference: str
    cache_key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AgentCredentials:
    """Temporary credentials from the agent; ``expires`` is on the monotonic clock."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires: float


def request_for(ctx: FetchContext, values: Values) -> PodIdentityRequest | None:
    """The Pod Identity exchange this Mount asks for, or None when the SPC uses IRSA or keys.

    ``values`` are the SPC parameters as the AWS schema read them (``usePodIdentity`` a bool,
    ``preferredAddressType`` one of :data:`PREFERENCES`, ``roleArn`` refused alongside).
    """
    if not values.flag("usePodIdentity"):
        return None
    preference = values.text("preferredAddressType") or "auto"
    token = ctx.token_for(AUDIENCE)
    if not token:
        raise Unauthenticated(
            f"usePodIdentity needs the pod's token for audience {AUDIENCE!r}, and the mount request "
            f"has none: add '- audience: {AUDIENCE}' to the CSIDriver's spec.tokenRequests "
            "(daemonset/components/csidriver-aws)"
        )
    pod = ctx.pod
    key = ("pod-identity", pod.namespace, pod.service_account, pod.name, pod.uid, preference)
    return PodIdentityRequest(token, preference, key)


def _check_endpoint(url: str, setting: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise KeygateError(f"backends.aws.{setting} must be an http(s)://host[:port]/path URL, not {url!r}")
    return url


class PodIdentityAgent:
    """Client of the node's EKS Pod Identity Agent (blocking; the AWS backend runs it on its pool).

    Settings (``backends.aws`` in the daemon config): ``pod_identity_endpoint_ipv4``,
    ``pod_identity_endpoint_ipv6`` (the agent URLs; override for a non-default agent or tests)
    and ``pod_identity_timeout`` (seconds per attempt, default 2).
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.endpoints = {
            "ipv4": _check_endpoint(
                str(settings.get("pod_identity_endpoint_ipv4") or IPV4_ENDPOINT), "pod_identity_endpoint_ipv4"
            ),
            "ipv6": _check_endpoint(
                str(settings.get("pod_identity_endpoint_ipv6") or IPV6_ENDPOINT), "pod_identity_endpoint_ipv6"
            ),
        }
        self.timeout = float(settings.get("pod_identity_timeout", 2.0))
        if not self.timeout > 0:
            raise KeygateError("backends.aws.pod_identity_timeout must be a number of seconds above 0")

    def credentials(self, request: PodIdentityRequest) -> AgentCredentials:
        """Ask the agent for the pod's credentials, trying the addresses the preference allows."""
        order = ["ipv4", "ipv6"] if request.preference == "auto" else [request.preference]
        unreachable: list[str] = []
        for family in order:
            url = self.endpoints[family]
            try:
                status, body = self._get(url, request.token)
            except (OSError, http.client.HTTPException) as exc:
                unreachable.append(f"{url} ({_reason(exc)})")
                continue
            return _answer(status, body, url, request.token)
        raise Retryable(
            "cannot reach the EKS Pod Identity Agent at "
            + " or ".join(unreachable)
            + "; is the eks-pod-identity-agent add-on running on this node? "
            "(preferredAddressType selects ipv4 or ipv6)"
        )

    def _get(self, url: str, token: str) -> tuple[int, bytes]:
        parts = urlsplit(url)
        connection_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = connection_type(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.request("GET", path, headers={"Authorization": token, "Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(MAX_ANSWER + 1)
            return response.status, body
        finally:
            conn.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _agent_says(body: bytes, token: str) -> str:
    """A short, safe excerpt of the agent's error text: never the token, nothing unprintable."""
    text = body[:400].decode("utf-8", "replace").replace(token, "<token>")
    text = _JWT_RE.sub("<token>", text)
    text = _UNSAFE_RE.sub(" ", text)
    return " ".join(text.split())[:160]


def _answer(status: int, body: bytes, url: str, token: str) -> AgentCredentials:
    """The agent's answer as credentials, or the keygate error it means."""
    if status != 200:
        said = _agent_says(body, token)
        match = _ERROR_CODE_RE.search(said)
        code = match.group(1) if match else ""
        reason = f"HTTP {status}" + (f": {said}" if said else "")
        where = f"the EKS Pod Identity Agent ({url})"
        error: KeygateError
        if status == 429 or (status >= 500 and code != "ResourceNotFoundException"):
            error = Retryable(f"{where} failed ({reason})")
        elif code == "ResourceNotFoundException" or status == 404:
            error = PermissionDenied(
                f"{where} found no Pod Identity association for this pod's service account ({reason}); "
                "create one with 'aws eks create-pod-identity-association'"
            )
        elif status == 403 or code == "AccessDeniedException":
            error = PermissionDenied(
                f"{where} refused the pod ({reason}); check the association's role and its trust policy "
                "(principal pods.eks.amazonaws.com, sts:AssumeRole and sts:TagSession)"
            )
        elif status in (400, 401):
            error = Unauthenticated(
                f"{where} rejected the pod's {AUDIENCE} token ({reason}); check the CSIDriver's "
                "tokenRequests and that the token is not expired"
            )
        else:
            error = BackendUnavailable(f"{where} answered {reason}")
        raise error
    if len(body) > MAX_ANSWER:
        raise BackendUnavailable(f"the EKS Pod Identity Agent ({url}) answered more than {MAX_ANSWER} bytes")
    return _parse_credentials(body, url)


def _parse_credentials(body: bytes, url: str) -> AgentCredentials:
    bad = f"the EKS Pod Identity Agent ({url}) answered credentials keygate cannot use"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BackendUnavailable(f"{bad}: not JSON") from None
    if not isinstance(data, dict):
        raise BackendUnavailable(f"{bad}: not a JSON object")
    access, secret, session, expiration = (
        data.get(k) for k in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
    )
    if not isinstance(access, str) or not _ACCESS_KEY_RE.match(access):
        raise BackendUnavailable(f"{bad}: AccessKeyId is missing or malformed")
    for name, value in (("SecretAccessKey", secret), ("Token", session)):
        if not isinstance(value, str) or not _TOKEN_RE.match(value):
            raise BackendUnavailable(f"{bad}: {name} is missing or malformed")
    try:
        expires_at = datetime.fromisoformat(str(expiration))
    except ValueError:
        raise BackendUnavailable(f"{bad}: Expiration is not an RFC 3339 time") from None
    if expires_at.tzinfo is None:
        raise BackendUnavailable(f"{bad}: Expiration has no time zone")
    lifetime = (expires_at - datetime.now(UTC)).total_seconds()
    if lifetime <= 0:
        raise BackendUnavailable(f"{bad}: they expired at {expires_at.isoformat()}")
    assert isinstance(secret, str) and isinstance(session, str)
    return AgentCredentials(access, secret, session, time.monotonic() + min(lifetime, MAX_LIFETIME))
