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
from providers.common import selectors, shared_listings
from providers.common.runtime import gather_all, with_retries
from providers.common.schema import FirstError
from providers.gcp.client import SecretManager, map_error
from providers.gcp.oauth import TokenSource
from providers.gcp.params import SCHEMA, label_filter, parse_listing, resource_name

if TYPE_CHECKING:
    from providers.gcp.backend import GCPBackend

PAGE_SIZE = 250
MAX_PAGES = 1000


def list_page(
    sm: SecretManager, endpoint: str, request: dict[str, Any], token: str, timeout: float
) -> tuple[list[tuple[str, dict[str, str]]], str]:
    """One ListSecrets page, (name, labels) and the next page's token (blocking; one request)."""
    pager = sm._clients.get(endpoint).list_secrets(
        request=request,
        retry=None,
        timeout=timeout,
        metadata=[("authorization", f"Bearer {token}")],
    )
    response = next(iter(pager.pages))
    found = [(str(s.name), dict(s.labels)) for s in response.secrets]
    return found, str(response.next_page_token or "")


def held_below(obj: SecretObject) -> str:
    """A regular expression for the ids of every secret a selector may list (each expanded to
    its latest version, plus the ``#<file>`` suffix ``unique_ids`` may add)."""
    listing = parse_listing(resource_name(obj), selectors.where(obj))
    head = re.escape(f"{listing.parent}/secrets/{listing.prefix}")
    return head + r"[^/]+/versions/latest(?:#.+)?"


async def expand(backend: GCPBackend, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
    """Every selector of ``objs``, listed with the identity the SPC chooses for reads, each
    listing shared with equal ones of other Mounts of the same identity."""
    values = SCHEMA.check_parameters(ctx.parameters, backend._raw_settings, FirstError())
    auth = backend._identities.choose(ctx, values)
    await with_retries(lambda: backend._token(auth, ctx), ctx)
    parts = await gather_all([_one(backend, auth, obj, ctx) for obj in objs])
    return [item for part in parts for item in part]


async def list_secrets(
    backend: GCPBackend, auth: TokenSource, endpoint: str, parent: str, filter_text: str, ctx: FetchContext
) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every secret ``filter_text`` selects below ``parent``, page by page, each
    through the endpoint's rate limit (the bucket of its reads) with the reads' retry policy."""
    gate = backend.limits.gate(endpoint)
    out: list[tuple[str, dict[str, str]]] = []
    page_token = ""
    for _ in range(MAX_PAGES):
        request: dict[str, Any] = {"parent": parent, "filter": filter_text, "page_size": PAGE_SIZE}
        if page_token:
            request["page_token"] = page_token

        async def attempt(request: dict[str, Any] = request) -> tuple[list[tuple[str, dict[str, str]]], str]:
            token = await backend._token(auth, ctx)
            timeout = ctx.remaining()
            try:
                return await backend._pool.run(
                    lambda: list_page(backend._sm, endpoint, request, token.value, timeout)
                )
            except Exception as exc:  # noqa: BLE001 - mapped to a KeygateError or re-raised
                error = map_error(exc, f"{parent} (listing secrets)", endpoint, auth)
                if isinstance(error, Unauthenticated):
                    backend._tokens.invalidate(auth.key)
                if isinstance(error, PermissionDenied):
                    error = PermissionDenied(
                        f"GCP denied listing the secrets of {parent} for {auth.describe}; grant it "
                        "secretmanager.secrets.list there (e.g. roles/secretmanager.viewer)"
                    )
                raise error from None

        found, page_token = await with_retries(attempt, ctx, gate=gate)
        out += found
        if not page_token:
            return out
    raise BackendUnavailable(f"GCP ListSecrets for {parent}: more than {MAX_PAGES} pages")


async def _one(
    backend: GCPBackend, auth: TokenSource, obj: SecretObject, ctx: FetchContext
) -> list[SecretObject]:
    where = selectors.where(obj)
    selector = selectors.read(obj, "labels")
    listing = parse_listing(resource_name(obj), where)
    terms = ([f"name:{listing.prefix}"] if listing.prefix else []) + label_filter(selector, where)
    endpoint = backend.settings.endpoint_for(listing.location)
    wanted = dict(selector.filters)

    async def lister(expansion: selectors.Expansion) -> None:
        found = await list_secrets(backend, auth, endpoint, listing.parent, " AND ".join(terms), ctx)
        head = f"{listing.parent}/secrets/"
        for name, labels in sorted(found):
            secret_id = name[len(head) :] if name.startswith(head) else ""
            if not secret_id.startswith(listing.prefix) or "/" in secret_id:
                continue
            if any(labels.get(key) != value for key, value in wanted.items()):
                continue
            resource = f"{name}/versions/latest"
            expansion.add(
                secret_id[len(listing.prefix) :], resource, {"resourceName": resource}, upstream=name
            )

    key = ("list", endpoint, backend._reader(auth, ctx), listing.parent, listing.prefix)
    return await shared_listings.expand(backend.listings, key, obj, selector, "GCP secret", lister, ctx)
