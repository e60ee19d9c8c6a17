"""GCP selectors: the Secret Manager secrets of a project (global) or of a location (regional)
whose id starts with a prefix and that carry the given labels (ListSecrets with a filter, every
page), each expanded to its latest version.

The filter narrows the answer (``name:`` matches anywhere in the id), so each answer is checked
again here: exact prefix, every label. Listing sends only names and labels, never payloads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from provider.domain import FetchContext, SecretObject
from provider.errors import BackendUnavailable, PermissionDenied, Unauthenticated
from providers.common import selectors
from providers.common.runtime import gather_all, with_retries
from providers.common.schema import FirstError
from providers.gcp.client import SecretManager, map_error
from providers.gcp.oauth import TokenSource
from providers.gcp.params import SCHEMA, label_filter, parse_listing, resource_name

if TYPE_CHECKING:
    from providers.gcp.backend import GCPBackend

PAGE_SIZE = 250
MAX_PAGES = 1000


def list_secrets(
    sm: SecretManager, endpoint: str, parent: str, filter_text: str, token: str, timeout: float
) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every secret ``filter_text`` selects below ``parent`` (blocking)."""
    client = sm._clients.get(endpoint)
    out: list[tuple[str, dict[str, str]]] = []
    page_token = ""
    for _ in range(MAX_PAGES):
        request: dict[str, Any] = {"parent": parent, "filter": filter_text, "page_size": PAGE_SIZE}
        if page_token:
            request["page_token"] = page_token
        pager = client.list_secrets(
            request=request,
            retry=None,
            timeout=timeout,
            metadata=[("authorization", f"Bearer {token}")],
        )
        response = next(iter(pager.pages))
        out.extend((str(s.name), dict(s.labels)) for s in response.secrets)
        page_token = str(response.next_page_token or "")
        if not page_token:
            return out
    raise BackendUnavailable(f"GCP ListSecrets for {parent}: more than {MAX_PAGES} pages")


def held_below(obj: SecretObject) -> str:
    """A regular expression for the ids of every secret a selector may list (each expanded to
    its latest version, plus the ``#<file>`` suffix ``unique_ids`` may add)."""
    listing = parse_listing(resource_name(obj), selectors.where(obj))
    head = re.escape(f"{listing.parent}/secrets/{listing.prefix}")
    return head + r"[^/]+/versions/latest(?:#.+)?"


async def expand(backend: GCPBackend, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
    """Every selector of ``objs``, listed with the identity the SPC chooses for reads."""
    values = SCHEMA.check_parameters(ctx.parameters, backend._raw_settings, FirstError())
    auth = backend._identities.choose(ctx, values)
    await with_retries(lambda: backend._token(auth, ctx), ctx)
    parts = await gather_all([_one(backend, auth, obj, ctx) for obj in objs])
    return [item for part in parts for item in part]


async def _one(
    backend: GCPBackend, auth: TokenSource, obj: SecretObject, ctx: FetchContext
) -> list[SecretObject]:
    where = selectors.where(obj)
    selector = selectors.read(obj, "labels")
    listing = parse_listing(resource_name(obj), where)
    terms = ([f"name:{listing.prefix}"] if listing.prefix else []) + label_filter(selector, where)
    endpoint = backend.settings.endpoint_for(listing.location)
    wanted = dict(selector.filters)

    async def attempt() -> list[tuple[str, dict[str, str]]]:
        token = await backend._token(auth, ctx)
        timeout = ctx.remaining()
        try:
            return await backend._pool.run(
                lambda: list_secrets(
                    backend._sm, endpoint, listing.parent, " AND ".join(terms), token.value, timeout
                )
            )
        except Exception as exc:  # noqa: BLE001 - mapped to a KeygateError or re-raised
            error = map_error(exc, f"{listing.parent} (listing secrets)", endpoint, auth)
            if isinstance(error, Unauthenticated):
                backend._tokens.invalidate(auth.key)
            if isinstance(error, PermissionDenied):
                error = PermissionDenied(
                    f"GCP denied listing the secrets of {listing.parent} for {auth.describe}; grant it "
                    "secretmanager.secrets.list there (e.g. roles/secretmanager.viewer)"
                )
            raise error from None

    found = await with_retries(attempt, ctx)
    expansion = selectors.Expansion(obj, selector, "GCP secret")
    head = f"{listing.parent}/secrets/"
    for name, labels in sorted(found):
        secret_id = name[len(head) :] if name.startswith(head) else ""
        if not secret_id.startswith(listing.prefix) or "/" in secret_id:
            continue
        if any(labels.get(key) != value for key, value in wanted.items()):
            continue
        resource = f"{name}/versions/latest"
        expansion.add(secret_id[len(listing.prefix) :], resource, {"resourceName": resource}, upstream=name)
    return expansion.objects
