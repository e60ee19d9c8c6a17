"""Vault selectors: every secret below a kv path, one level or recursively to a depth.

kv v2 lists ``<mount>/metadata/<path>`` and reads ``<mount>/data/<path>/<key>``; kv v1 (and any
engine that answers LIST) lists and reads ``<path>/<key>``. Which one a path is comes from
``sys/internal/ui/mounts``, as for reads. Everything goes through the backend's own ``_session``
(the pod's login) and ``_call`` (the address's rate limit, retries, deadline) and the HTTP
client's ``send``; equal listings of concurrent Mounts are made once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from provider.domain import FetchContext, SecretObject
from provider.errors import BackendUnavailable, InvalidSPC, PermissionDenied, ResourceExhausted
from providers.common import selectors, shared_listings
from providers.common.runtime import gather_all
from providers.common.tokens import pod_token
from providers.vault import auth
from providers.vault.client import Session, VaultHTTP
from providers.vault.params import VaultParams, secret_path

if TYPE_CHECKING:
    from providers.vault.backend import VaultBackend

MAX_KEYS = 10 * selectors.MAX_LIMIT
# where a secretPath's query begins (vault-csi-provider's rule), so never part of a listed name
QUERY_START = "?"


async def list_keys(http: VaultHTTP, params: VaultParams, session: Session, path: str) -> list[str]:
    """One LIST (``GET ?list=true``); [] when Vault has nothing there (it answers 404)."""
    status, data = await http.send(
        params, "GET", path, f"listing {path!r}", token=session.token, query=[("list", "true")]
    )
    http.count("lists")
    if status == 404:
        return []
    if status == 403:
        raise PermissionDenied(
            f"{params.where}: role {params.role!r} may not list {path!r} (403 permission denied); "
            f'grant it `path "{path}/*" {{ capabilities = ["list"] }}`'
        )
    inner = data.get("data") if isinstance(data, dict) else None
    keys = inner.get("keys") if isinstance(inner, dict) else None
    if status != 200 or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BackendUnavailable(f"{params.where} answered {status} without a key list for {path!r}")
    if len(keys) > MAX_KEYS:
        raise ResourceExhausted(f"{params.where}: {path!r} lists {len(keys)} keys, over {MAX_KEYS}")
    return keys


def roots(base: str, known: bool, mount: str | None) -> tuple[str, str]:
    """(path to list, path to read below) for a selector's ``secretPath``."""
    if mount is None and not known and "/data/" in f"{base}/":
        mount = base.split("/data/", 1)[0] if "/data/" in base else base.rsplit("/data", 1)[0]
    if mount is None:
        return base, base
    rest = base[len(mount) :].strip("/")
    for head in ("data", "metadata"):
        if rest == head or rest.startswith(f"{head}/"):
            rest = rest[len(head) :].strip("/")
            break
    tail = f"/{rest}" if rest else ""
    return f"{mount}/metadata{tail}", f"{mount}/data{tail}"


def held_below(obj: SecretObject) -> str:
    """A regular expression for the ids of every secret a selector may list: ``vault/<read
    root>/...``, for each mount its ``secretPath`` may sit on (kv v1, or v2 with ``data``)."""
    base = secret_path(obj.str_field("secretPath")).strip("/")
    parts = base.split("/")
    bases = {base, *(roots(base, True, "/".join(parts[:i]))[1] for i in range(1, len(parts) + 1))}
    return "vault/(?:" + "|".join(re.escape(b) for b in sorted(bases)) + ")/.+"


async def expand(
    backend: VaultBackend, objs: Sequence[SecretObject], ctx: FetchContext
) -> list[SecretObject]:
    """Every selector of ``objs`` listed with the pod's own Vault token, each listing shared with
    equal ones of other Mounts of the same identity (:mod:`providers.common.shared_listings`)."""
    params = backend.params(ctx.parameters)
    jwt = pod_token(ctx, [params.audience], " (or set the SPC parameter 'audience' to one it requests)")
    token_key = auth.token_key(params, ctx, jwt)
    reader = backend._reader(params, ctx, jwt)

    async def one(obj: SecretObject) -> list[SecretObject]:
        base = secret_path(obj.str_field("secretPath")).strip("/")

        async def lister(expansion: selectors.Expansion) -> None:
            session = await backend._session(params, ctx, jwt, token_key)
            await _list_into(backend, params, ctx, session, base, expansion)

        key = ("list", *reader, base)
        selector = selectors.read(obj)
        return await shared_listings.expand(backend.listings, key, obj, selector, "Vault key", lister, ctx)

    parts = await gather_all([one(obj) for obj in objs])
    return [item for part in parts for item in part]


async def _list_into(
    backend: VaultBackend,
    params: VaultParams,
    ctx: FetchContext,
    session: Session,
    base: str,
    expansion: selectors.Expansion,
) -> None:
    """LIST ``base`` and its folders to the selector's depth, every key into ``expansion``; each
    request goes through ``_call`` (the address's rate limit, retries, deadline)."""
    obj, selector = expansion.obj, expansion.selector
    http = backend._http
    known, mount = await backend._call(params, ctx, lambda: http.mount_of(params, session, base))
    list_root, read_root = roots(base, known, mount)
    folders: list[tuple[str, int]] = [("", 1)]
    listed = 0
    while folders:
        folder, level = folders.pop(0)
        listed += 1
        if listed > selector.limit:
            raise ResourceExhausted(
                f"{selectors.where(obj)}: more than {selector.limit} folders to list below "
                f"{list_root!r}; lower selector.depth"
            )
        path = f"{list_root}/{folder}".rstrip("/")
        keys: list[str] = await backend._call(params, ctx, partial(list_keys, http, params, session, path))
        for key in sorted(keys):
            relative = folder + key
            if QUERY_START in key:
                raise InvalidSPC(
                    f"{selectors.where(obj)}: Vault key {key[:120]!r} below {list_root!r} contains "
                    f"{QUERY_START!r}, where a secretPath's query begins; rename it in Vault"
                )
            if key.endswith("/"):
                expansion.check_name(relative.rstrip("/"), f"{list_root}/{relative}")
                if level < selector.depth:
                    folders.append((relative, level + 1))
                continue
            name = f"{obj.path}/{relative}"
            expansion.add(relative, name, {"secretPath": f"{read_root}/{relative}", "objectName": name})
