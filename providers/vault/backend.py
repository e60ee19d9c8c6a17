"""The Vault (and OpenBao) backend: logs in *as the pod* and reads what the SPC lists.

Parameters mirror hashicorp/vault-csi-provider so an SPC moves over by changing only
``spec.provider`` (see :mod:`providers.vault.params`). The pod's own projected service-account
token (for ``audience``) is exchanged at the ``kubernetes`` or ``jwt`` auth method for a Vault
token; the daemon never uses a token of its own. Identical reads within a Mount happen once;
distinct reads run concurrently on the event loop, over a keep-alive pool of at most ``workers``
connections per Vault endpoint (:mod:`providers.vault.transport`).

Dynamic secrets (anything with a lease, and every POST or PUT) are either re-requested on every Mount
(``per-mount``) or reused while most of their lease remains (``reuse``, the default), so the
driver's rotation poll does not mint a new database user every two minutes.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from provider.domain import FetchContext, Fetched, Revoked, SecretObject
from provider.errors import KeygateError, PermissionDenied
from providers.common import selectors
from providers.common.ids import unique_ids
from providers.common.rate_limit import RateLimits
from providers.common.revoked import settle
from providers.common.runtime import ClientCache, gather_all, with_retries
from providers.common.schema import FirstError, Schema
from providers.common.shared_listings import Entries
from providers.common.shared_reads import SharedReads, identity
from providers.common.tokens import pod_token
from providers.vault import auth, gone, leases, objects
from providers.vault.client import Forbidden, Read, Result, Session, VaultHTTP
from providers.vault.params import AUTH_METHODS, DEFAULT_AUDIENCE, DYNAMIC_MODES, SCHEMA, VaultParams
from providers.vault.response_json import StableRequestIds

log = logging.getLogger("keygate.vault")

MAX_CACHED = 4096


class VaultBackend:
    """Reads Vault/OpenBao secrets with the pod's own identity."""

    name: ClassVar[str] = "vault"
    schema: ClassVar[Schema | None] = SCHEMA

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.default_audience = str(settings.get("default_audience", DEFAULT_AUDIENCE))
        self.settings["default_audience"] = self.default_audience
        if str(settings.get("dynamic_secrets", "reuse")) not in DYNAMIC_MODES:
            raise KeygateError(f"backends.vault.dynamic_secrets must be one of {', '.join(DYNAMIC_MODES)}")
        if str(settings.get("auth_method", "kubernetes")) not in AUTH_METHODS:
            raise KeygateError(f"backends.vault.auth_method must be one of {', '.join(AUTH_METHODS)}")
        workers = int(settings.get("workers", 16))
        self.stats: Counter[str] = Counter()
        self._http = VaultHTTP(float(settings.get("request_timeout", 10.0)), workers, self._count)
        self._tokens: ClientCache[tuple[Any, ...], Session] = ClientCache(margin=0.0)
        self._leases = leases.Leases(MAX_CACHED)
        self.limits = RateLimits.from_settings(self.name, settings)
        self.shared: SharedReads[Result] = SharedReads.from_settings(self.name, settings)
        self.listings: SharedReads[Entries] = SharedReads.from_settings(self.name, settings)
        self._kv2_prefix: dict[tuple[Any, ...], str | None] = {}
        self._request_ids = StableRequestIds(MAX_CACHED)

    def _count(self, name: str) -> None:
        """Counters (logins, renewals, reads, ...) for metrics and tests."""
        self.stats[name] += 1

    def params(self, parameters: Mapping[str, str]) -> VaultParams:
        """The SPC-level Vault settings, read through the schema (first error raised)."""
        return VaultParams.of(SCHEMA.check_parameters(parameters, self.settings, FirstError()))

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def fetch(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched | Revoked]:
        params = self.params(ctx.parameters)
        jwt = pod_token(ctx, [params.audience], " (or set the SPC parameter 'audience' to one it requests)")
        if params.tls.skip_verify:
            log.warning(
                "vault TLS verification disabled by vaultSkipTLSVerify (insecure)",
                extra={"vault": params.address, "namespace": ctx.pod.namespace, "spc": ctx.spc_name},
            )
        key = auth.token_key(params, ctx, jwt)
        reader = auth.pod_key(params, ctx)  # request ids per pod: a refreshed JWT changes no file
        wanted = [objects.read_of(obj) for obj in objs]
        reads = list(dict.fromkeys(wanted))
        who = self._reader(params, ctx, jwt), self._lease_who(ctx, jwt)
        results = dict(
            zip(
                reads,
                await gather_all([self._settled(params, ctx, jwt, key, r, who) for r in reads]),
                strict=True,
            )
        )
        out: list[Fetched] = []
        revoked: list[Fetched | Revoked] = []
        for obj, read in zip(objs, wanted, strict=True):
            result = results[read]
            if isinstance(result, KeygateError):
                revoked.append(Revoked.of(obj, result, gone.held(obj)))
                continue
            body = objects.contents(
                obj, read, result, functools.partial(self._request_ids.render, (reader, read))
            )
            out.append(
                Fetched(obj=obj, object_id=objects.object_id(obj), contents=body, version=result.version)
            )
        return [*unique_ids(out, lambda item: f"~{item.obj.name}"), *revoked]

    async def _settled(
        self,
        params: VaultParams,
        ctx: FetchContext,
        jwt: str,
        token_key: tuple[Any, ...],
        read: Read,
        who: tuple[tuple[Any, ...], tuple[Any, ...]],
    ) -> Result | KeygateError:
        """One read, or its error when Vault says the secret is gone (:mod:`providers.vault.gone`)."""
        return await settle(gone.classified(self._read(params, ctx, jwt, token_key, read, who)))

    async def expand(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
        """Selectors to the secrets they list (:mod:`providers.vault.listing`)."""
        from providers.vault import listing

        return await listing.expand(self, objs, ctx)

    def held(self, obj: SecretObject, parameters: Mapping[str, str]) -> str:
        """The ids ``obj`` is served under, or for a selector the ids of anything it may list,
        as a regular expression and without a read (:mod:`provider.revocation`)."""
        from providers.vault import listing

        return listing.held_below(obj) if selectors.is_selector(obj) else gone.held(obj)

    async def _session(
        self, params: VaultParams, ctx: FetchContext, jwt: str, key: tuple[Any, ...]
    ) -> Session:
        return await auth.session(self._tokens, self._http, self._call, params, ctx, jwt, key)

    async def _read(
        self,
        params: VaultParams,
        ctx: FetchContext,
        jwt: str,
        token_key: tuple[Any, ...],
        read: Read,
        who: tuple[tuple[Any, ...], tuple[Any, ...]],
    ) -> Result:
        """One read: a dynamic secret still mostly valid (renewed if its lease allows), else a
        read shared with identical ones of other Mounts (:mod:`providers.common.shared_reads`).

        ``who`` is the Mount's :meth:`_reader` and :meth:`_lease_who`, computed once per Mount."""
        reader, lease_who = who
        lease_key = (*reader, *lease_who, read)
        if params.dynamic == "reuse":
            kept = await self._leases.current(
                lease_key, lambda lease_id: self._renew(params, ctx, jwt, token_key, lease_id)
            )
            if kept is not None:
                self._count("lease_reuses")
                return kept
        result = await self.shared.read(
            (*reader, read),
            lambda: self._read_fresh(params, ctx, jwt, token_key, read),
            ctx,
            owner=ctx.pod.uid,
            private=lambda got: got.dynamic,
        )
        if result.dynamic and params.dynamic == "reuse":
            self._leases.keep(lease_key, result)
        return result

    def _reader(self, params: VaultParams, ctx: FetchContext, jwt: str) -> tuple[Any, ...]:
        """Who Vault sees, for shared reads and listings: the endpoint, the auth role and the
        service account (the pod too with ``jwt`` auth, whose roles may bind any claim)."""
        per_pod = params.auth_method == "jwt"
        return (
            params.endpoint,
            params.auth_method,
            params.auth_mount,
            params.role,
            params.audience,
            params.dynamic,
            *identity(ctx, verified=self.shared.verified, token=jwt, per_pod=per_pod),
        )

    def _lease_who(self, ctx: FetchContext, jwt: str) -> tuple[str, ...]:
        """The pod itself, for dynamic secrets kept per pod (``reuse``)."""
        return identity(ctx, verified=self.shared.verified, token=jwt, per_pod=True)

    async def _renew(
        self, params: VaultParams, ctx: FetchContext, jwt: str, token_key: tuple[Any, ...], lease_id: str
    ) -> tuple[int, Any]:
        """``sys/leases/renew`` with the pod's token (Vault's default policy allows it)."""
        session = await self._session(params, ctx, jwt, token_key)
        body = {"lease_id": lease_id}
        what = "renewing a lease"
        answer: tuple[int, Any] = await self._call(
            params,
            ctx,
            lambda: self._http.send(params, "PUT", "sys/leases/renew", what, token=session.token, body=body),
        )
        self._count("lease_renewals")
        return answer

    async def _read_fresh(
        self, params: VaultParams, ctx: FetchContext, jwt: str, token_key: tuple[Any, ...], read: Read
    ) -> Result:
        session = await self._session(params, ctx, jwt, token_key)
        path = await self._kv_path(params, ctx, session, read)
        try:
            result: Result = await self._call(
                params, ctx, lambda: self._http.read(params, session, read, path)
            )
        except Forbidden:
            current = await self._session(params, ctx, jwt, token_key)
            if current.token == session.token:
                self._tokens.invalidate(token_key)
                current = await self._session(params, ctx, jwt, token_key)
            self._count("relogins_after_403")
            try:
                result = await self._call(params, ctx, lambda: self._http.read(params, current, read, path))
            except Forbidden:
                raise PermissionDenied(
                    f"{params.where}: role {params.role!r} may not {read.method} {read.path!r} "
                    "(403 permission denied); grant it in the role's policies"
                ) from None
        return result

    async def _kv_path(self, params: VaultParams, ctx: FetchContext, session: Session, read: Read) -> str:
        """The path to request: ``secret/x`` on a kv-v2 mount becomes ``secret/data/x``.

        vault-csi-provider accepts both spellings; the mount's kv version comes from
        ``sys/internal/ui/mounts``, asked once per path and remembered.
        """
        if read.method != "GET" or "/data/" in read.path:
            return read.path
        key = (params.endpoint, read.path)
        if key in self._kv2_prefix:
            mount = self._kv2_prefix[key]
        else:
            known, mount = await self._call(
                params, ctx, lambda: self._http.mount_of(params, session, read.path)
            )
            if known:
                if len(self._kv2_prefix) > MAX_CACHED:
                    self._kv2_prefix.clear()
                self._kv2_prefix[key] = mount
        if mount is None:
            return read.path
        rest = read.path[len(mount) :].lstrip("/")
        if rest.startswith(("data/", "metadata/")) or not rest:
            return read.path
        return f"{mount}/data/{rest}"

    async def _call(self, params: VaultParams, ctx: FetchContext, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``fn`` (one exchange with Vault) with retries and the endpoint's rate limit,
        until the mount deadline."""
        return await with_retries(fn, ctx, gate=self.limits.gate(params.address))

    async def close(self) -> None:
        await self._http.close()
        self._tokens.clear()
        self._leases.clear()
        self.shared.clear()
        self.listings.clear()
        self._request_ids.clear()
