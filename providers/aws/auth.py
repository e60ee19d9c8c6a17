"""Who an AWS Mount acts as: the pod's IAM role through its own web-identity token (IRSA), the
pod's EKS Pod Identity association (``usePodIdentity``, :mod:`providers.aws.pod_identity`), or
static keys from the volume's nodePublishSecretRef; never the node's or the daemon's identity."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from provider.domain import FetchContext, PodIdentity
from provider.errors import InvalidSPC, KeygateError
from providers.aws.params import ROLE_ANNOTATION
from providers.aws.pod_identity import PodIdentityRequest, request_for
from providers.common.schema import Values
from providers.common.tokens import pod_token

DEFAULT_AUDIENCE = "sts.amazonaws.com"
STATIC_KEY_ID = "awsAccessKeyId"
STATIC_SECRET_KEY = "awsSecretAccessKey"  # noqa: S105 - a field name, not a secret
STATIC_SESSION_TOKEN = "awsSessionToken"  # noqa: S105 - a field name, not a secret
ROLE_ARN_RE = re.compile(r"\Aarn:[A-Za-z0-9-]+:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+\Z")

RoleResolver = Callable[[PodIdentity], Awaitable[str | None]]
"""Looks up a pod's IAM role (e.g. its service account's ``eks.amazonaws.com/role-arn``)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Temporary or static AWS keys; repr never shows them."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Auth:
    """How this mount authenticates: web identity as the pod, Pod Identity, or static keys."""

    kind: str
    cache_key: tuple[str, ...]
    role_arn: str = ""
    session_name: str = ""
    token: str = field(default="", repr=False)
    static: Credentials | None = None
    pod_identity: PodIdentityRequest | None = None


def session_name(pod: PodIdentity) -> str:
    """The STS role session name: names the pod in CloudTrail; AWS allows [\\w+=,.@-]{2,64}."""
    raw = f"keygate-{pod.namespace}-{pod.name}"
    clean = re.sub(r"[^\w+=,.@-]", "-", raw)
    if len(clean) > 64:
        clean = clean[:55] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return clean


async def _annotated_role(ctx: FetchContext) -> str:
    """The role named by the pod's service account (as the AWS provider reads it for IRSA)."""
    account = f"{ctx.pod.namespace}/{ctx.pod.service_account}"
    fix = f"set the SPC parameter 'roleArn' or annotate the service account {account} with {ROLE_ANNOTATION}"
    if ctx.service_account_annotations is None:
        raise InvalidSPC(f"no IAM role for this pod: {fix}")
    try:
        annotations = await ctx.service_account_annotations()
    except KeygateError as exc:
        raise KeygateError(f"no IAM role for this pod: {exc.message}; or {fix}", code=exc.code) from None
    role = annotations.get(ROLE_ANNOTATION, "")
    if not role:
        raise InvalidSPC(f"no IAM role for this pod: the service account has no {ROLE_ANNOTATION}; {fix}")
    if not ROLE_ARN_RE.fullmatch(role):
        raise InvalidSPC(
            f"service account {account}: {ROLE_ANNOTATION} {role[:120]!r} is not an IAM role ARN "
            "(arn:aws:iam::<account>:role/<name>); fix the annotation or set the SPC parameter 'roleArn'"
        )
    return role


async def resolve(
    ctx: FetchContext, values: Values, audience: str, role_resolver: RoleResolver | None
) -> Auth:
    """Pod Identity when the SPC asks for it; else static keys if the node publish secret holds
    them; else the pod's role (SPC or resolver)."""
    agent_request = request_for(ctx, values)
    if agent_request is not None:
        return Auth("pod-identity", agent_request.cache_key, pod_identity=agent_request)
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
    role = values.text("roleArn")
    if not role and role_resolver is not None:
        role = await role_resolver(ctx.pod) or ""
    if not role:
        role = await _annotated_role(ctx)
    elif not ROLE_ARN_RE.fullmatch(role):
        raise InvalidSPC(f"role {role[:120]!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    token = pod_token(ctx, [audience])
    pod = ctx.pod
    key = ("web", role, pod.namespace, pod.service_account, pod.name, pod.uid)
    return Auth("web", key, role_arn=role, session_name=session_name(pod), token=token)
