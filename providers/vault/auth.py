"""The pod's Vault token: logged in with the pod's own service-account token, renewed at 2/3 of
its TTL, cached per (endpoint, auth mount, role, pod, JWT digest) so only the very token that
logged in can reuse it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from provider.domain import FetchContext
from provider.errors import KeygateError
from providers.common.runtime import ClientCache
from providers.vault.client import Session, VaultHTTP
from providers.vault.params import VaultParams

Call = Callable[[VaultParams, FetchContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]


def pod_key(params: VaultParams, ctx: FetchContext) -> tuple[Any, ...]:
    """Who reads: the Vault endpoint and role, and the pod (without its JWT, which the kubelet
    refreshes)."""
    pod = ctx.pod
    return (
        params.endpoint,
        params.auth_mount,
        params.role,
        pod.namespace,
        pod.name,
        pod.uid,
        pod.service_account,
    )


def token_key(params: VaultParams, ctx: FetchContext, jwt: str) -> tuple[Any, ...]:
    return (*pod_key(params, ctx), hashlib.sha256(jwt.encode()).hexdigest())


async def session(
    tokens: ClientCache[tuple[Any, ...], Session],
    http: VaultHTTP,
    call: Call,
    params: VaultParams,
    ctx: FetchContext,
    jwt: str,
    key: tuple[Any, ...],
) -> Session:
    """The cached session for ``key``, logging in on a miss and renewing once it is due."""

    async def login() -> tuple[Session, float]:
        fresh: Session = await call(params, ctx, lambda: http.login(params, jwt))
        return fresh, fresh.expires

    current = await tokens.get(key, login)
    if current.renewable and not current.renewing and time.monotonic() > current.renew_after:
        current.renewing = True
        renewed: Session | None
        try:
            renewed = await call(params, ctx, lambda: http.renew(params, current))
        except KeygateError:
            renewed = None
        tokens.invalidate(key)

        async def reuse() -> tuple[Session, float]:
            assert renewed is not None
            return renewed, renewed.expires

        current = await tokens.get(key, reuse if renewed else login)
    return current
