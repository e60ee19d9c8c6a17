"""Azure selectors: the enabled secrets of the vault whose name starts with ``objectName`` and
that carry the given tags (``list_properties_of_secrets``, every page; Key Vault has no
server-side filter, so at most MAX_SEEN entries are looked at). Listing returns properties only,
never values; disabled secrets are skipped, as they cannot be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from provider.domain import FetchContext, SecretObject
from provider.errors import ResourceExhausted
from providers.azure import auth
from providers.azure.client import Clients, Target, _map_error
from providers.common import selectors
from providers.common.runtime import gather_all, with_retries

if TYPE_CHECKING:
    from providers.azure.backend import AzureBackend

MAX_SEEN = 25_000


def list_secrets(
    obj: SecretObject, target: Target, clients: Clients, limits: Mapping[str, Any]
) -> list[tuple[str, dict[str, str]]]:
    """(name, tags) of every enabled secret whose name starts with the prefix (blocking)."""
    prefix = obj.name
    found: list[tuple[str, dict[str, str]]] = []
    try:
        for seen, item in enumerate(clients.secrets.list_properties_of_secrets(**limits)):
            if seen >= MAX_SEEN:
                raise ResourceExhausted(
                    f"{selectors.where(obj)}: Key Vault {target.vault!r} lists more than {MAX_SEEN} secrets"
                )
            name = item.name
            if not isinstance(name, str) or not name.startswith(prefix) or item.enabled is False:
                continue
            found.append((name, {str(k): str(v) for k, v in (item.tags or {}).items()}))
    except Exception as exc:  # noqa: BLE001 - mapped to a keygate error
        raise _map_error(exc, obj, target, "secrets listing") from None
    return found


async def expand(
    backend: AzureBackend, objs: Sequence[SecretObject], ctx: FetchContext
) -> list[SecretObject]:
    """Every selector of ``objs``, listed with the identity the SPC chooses for reads."""
    target = backend._target(ctx.parameters)
    clients = await auth.clients_for(backend._kv, target, ctx, backend._audience)
    parts = await gather_all([_one(backend, target, clients, obj, ctx) for obj in objs])
    return [item for part in parts for item in part]


async def _one(
    backend: AzureBackend, target: Target, clients: Clients, obj: SecretObject, ctx: FetchContext
) -> list[SecretObject]:
    selector = selectors.read(obj, "tags")

    async def attempt() -> list[tuple[str, dict[str, str]]]:
        left = ctx.remaining()
        limits = {
            "connection_timeout": min(10.0, backend._kv.request_timeout, left),
            "read_timeout": min(backend._kv.request_timeout, left),
        }
        found: list[tuple[str, dict[str, str]]] = await backend._pool.run(
            lambda: list_secrets(obj, target, clients, limits)
        )
        return found

    found = await with_retries(attempt, ctx)
    expansion = selectors.Expansion(obj, selector, "Key Vault secret")
    for name, tags in sorted(found):
        if all(tags.get(key) == value for key, value in selector.filters):
            expansion.add(name[len(obj.name) :], name, {"objectName": name}, upstream=name)
    return expansion.objects
