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
from providers.common import selectors, shared_listings
from providers.common.runtime import gather_all, with_retries

if TYPE_CHECKING:
    from providers.azure.backend import AzureBackend

MAX_SEEN = 25_000


Item = tuple[str, dict[str, str], bool]


def list_page(
    obj: SecretObject, target: Target, clients: Clients, limits: Mapping[str, Any], token: str | None
) -> tuple[list[Item], str | None]:
    """One page of the vault's secrets (name, tags, enabled) and the token of the next (blocking):
    one request, so each page takes its own slot of the vault's rate limit."""
    try:
        pages = clients.secrets.list_properties_of_secrets(**limits).by_page(continuation_token=token)
        page = next(pages, None)
        items: list[Item] = [
            (item.name, {str(k): str(v) for k, v in (item.tags or {}).items()}, item.enabled is not False)
            for item in page or ()
            if isinstance(item.name, str)
        ]
        following = getattr(pages, "continuation_token", None)
    except Exception as exc:  # noqa: BLE001 - mapped to a keygate error
        raise _map_error(exc, obj, target, "secrets listing") from None
    return items, following if isinstance(following, str) and following else None


async def list_secrets(
    backend: AzureBackend, obj: SecretObject, target: Target, clients: Clients, ctx: FetchContext
) -> list[tuple[str, dict[str, str]]]:
    """(name, tags) of every enabled secret whose name starts with the prefix, page by page, each
    through the vault's rate limit with the reads' retry policy."""
    gate = backend.limits.gate(target.vault_url)
    found: list[tuple[str, dict[str, str]]] = []
    seen = 0
    token: str | None = None
    while True:

        async def attempt(token: str | None = token) -> tuple[list[Item], str | None]:
            left = ctx.remaining()
            limits = {
                "connection_timeout": min(10.0, backend._kv.request_timeout, left),
                "read_timeout": min(backend._kv.request_timeout, left),
            }
            return await backend._pool.run(lambda: list_page(obj, target, clients, limits, token))

        items, token = await with_retries(attempt, ctx, gate=gate)
        seen += len(items)
        if seen > MAX_SEEN:
            raise ResourceExhausted(
                f"{selectors.where(obj)}: Key Vault {target.vault!r} lists more than {MAX_SEEN} secrets"
            )
        found += [(name, tags) for name, tags, enabled in items if enabled and name.startswith(obj.name)]
        if token is None:
            return found


async def expand(
    backend: AzureBackend, objs: Sequence[SecretObject], ctx: FetchContext
) -> list[SecretObject]:
    """Every selector of ``objs``, listed with the identity the SPC chooses for reads, each
    listing shared with equal ones of other Mounts of the same identity."""
    target = backend._target(ctx.parameters)
    clients = await auth.clients_for(backend._kv, target, ctx, backend._audience)
    parts = await gather_all([_one(backend, target, clients, obj, ctx) for obj in objs])
    return [item for part in parts for item in part]


async def _one(
    backend: AzureBackend, target: Target, clients: Clients, obj: SecretObject, ctx: FetchContext
) -> list[SecretObject]:
    selector = selectors.read(obj, "tags")

    async def lister(expansion: selectors.Expansion) -> None:
        found = await list_secrets(backend, obj, target, clients, ctx)
        for name, tags in sorted(found):
            if all(tags.get(key) == value for key, value in selector.filters):
                expansion.add(name[len(obj.name) :], name, {"objectName": name}, upstream=name)

    key = ("list", target.vault_url, backend._reader(clients, ctx))
    return await shared_listings.expand(backend.listings, key, obj, selector, "Key Vault secret", lister, ctx)
