"""Who an Azure Mount reads as: workload identity when the SPC names ``clientID`` (the pod's own
token for ``api://AzureADTokenExchange`` is the client assertion), the node's VM managed identity
when the SPC sets ``useVMManagedIdentity`` *and* the release policy grants the pod's namespace
``nodeIdentity: [azure]``, else a service principal from the node publish secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

from provider.attest.policy import node_identity_refused
from provider.domain import FetchContext
from provider.errors import InvalidSPC, Unauthenticated
from providers.azure.client import Clients, KeyVault, PodAssertion, Target
from providers.azure.params import CLIENT_ID
from providers.azure.sdk import ClientAssertionCredential, ClientSecretCredential, ManagedIdentityCredential
from providers.common.tokens import pod_token

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
STATIC_CLIENT_TTL = 3600.0


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified: only used to age the client cache, never to trust."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    except (IndexError, ValueError, binascii.Error):
        return None


def node_identity(target: Target) -> str:
    """What the audit record says read the objects when it is the node, not the pod."""
    if not target.managed_identity:
        return ""
    if target.user_assigned:
        return f"azure VM managed identity (user-assigned {target.user_assigned})"
    return "azure VM managed identity (system-assigned)"


async def clients_for(kv: KeyVault, target: Target, ctx: FetchContext, audience: str) -> Clients:
    """The cached clients of this Mount's identity, built on a miss."""
    options = kv.options()
    if target.managed_identity:
        return await _managed_identity(kv, target, ctx, options)
    if target.client_id:
        token = pod_token(ctx, [audience], " (Azure workload identity exchanges it)")
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
        exp = jwt_expiry(token)
        expires = time.monotonic() + (exp - time.time() if exp is not None else STATIC_CLIENT_TTL)

        async def build_workload() -> tuple[Clients, float]:
            assertion = PodAssertion(token)
            credential = ClientAssertionCredential(
                target.tenant, target.client_id, assertion, authority=target.authority, **options
            )
            return kv.build(key, target, credential, assertion, options), expires

        clients = await kv.cache.get(key, build_workload)
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
    if not CLIENT_ID.fullmatch(client_id):
        raise InvalidSPC("node publish secret key 'clientid' must be the application (client) id GUID")
    secret_tag = hashlib.sha256(client_secret.encode()).hexdigest()
    static_key = ("static", target.vault_url, target.tenant, client_id, target.authority, secret_tag)

    async def build_static() -> tuple[Clients, float]:
        credential = ClientSecretCredential(
            target.tenant,
            client_id,
            client_secret,
            authority=target.authority,
            disable_instance_discovery=kv.disable_discovery,
            **options,
        )
        clients = kv.build(static_key, target, credential, None, options)
        return clients, time.monotonic() + STATIC_CLIENT_TTL

    return await kv.cache.get(static_key, build_static)


async def _managed_identity(
    kv: KeyVault, target: Target, ctx: FetchContext, options: dict[str, Any]
) -> Clients:
    """The node's VM managed identity (IMDS), only for pods the release policy grants it to.

    IMDS is link-local, so its requests never go through the configured proxy; the SDK's
    ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` variable is the documented way to point it elsewhere.
    """
    pod = ctx.pod
    if "azure" not in pod.node_identity:
        raise node_identity_refused(
            "azure", "useVMManagedIdentity (the VM managed identity)", pod.namespace, pod.service_account
        )
    key = ("node", target.vault_url, target.user_assigned or "system")

    async def build() -> tuple[Clients, float]:
        imds = {k: v for k, v in options.items() if k not in ("proxies", "connection_verify")}
        credential = (
            ManagedIdentityCredential(client_id=target.user_assigned, **imds)
            if target.user_assigned
            else ManagedIdentityCredential(**imds)
        )
        return kv.build(key, target, credential, None, options), time.monotonic() + STATIC_CLIENT_TTL

    return await kv.cache.get(key, build)
