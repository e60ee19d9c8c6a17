"""GCP Secret Manager backend, parameter-compatible with the GCP provider's ``secrets`` list.

Each object is one ``resourceName`` (``projects/P/secrets/S/versions/V`` on the global endpoint,
``projects/P/locations/L/secrets/S/versions/V`` on the regional endpoint of ``L``, or a Parameter
Manager version ``projects/P/locations/L/parameters/N/versions/V``, rendered, on Parameter
Manager's global endpoint for ``L = global`` and its regional one otherwise), written to
``fileName`` or ``path``, optionally reduced to one string value with ``extractJSONKey`` or
``extractYAMLKey`` (see :mod:`providers.gcp.params`). Which Google identity reads it is chosen
in :mod:`providers.gcp.auth`.

The SDK is synchronous, so reads run on this backend's bounded worker pool. Access tokens are
cached per identity until shortly before they expire; gRPC channels are kept per endpoint and the
token travels as per-call metadata, so one pod reading global and regional secrets costs a single
token exchange. Google libraries are imported on first use only.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from provider.domain import FetchContext, Fetched, Revoked, SecretObject
from provider.errors import KeygateError, Unauthenticated
from providers.common import selectors
from providers.common.ids import unique_ids
from providers.common.rate_limit import RUNTIME_KEY, RateLimits
from providers.common.revoked import id_pattern, settle
from providers.common.runtime import ClientCache, WorkerPool, gather_all, with_retries
from providers.common.schema import FirstError, Schema
from providers.common.shared_listings import Entries
from providers.common.shared_reads import SharedReads, identity
from providers.gcp import objects
from providers.gcp.auth import Identities
from providers.gcp.client import ParameterManager, Read, SecretManager, map_error
from providers.gcp.oauth import Token, TokenSource, bounded_request
from providers.gcp.params import AUTH_PROVIDER, SCHEMA, Resource, parse_target, resource_name
from providers.gcp.settings import DEFAULTS, GCPSettings

log = logging.getLogger("keygate.gcp")

DEFAULT_TOKEN_LIFETIME = 300.0
NODE_IDENTITY = "gcp daemon credentials (auth: provider-adc)"


class GCPBackend:
    """Reads Secret Manager versions with the pod's workload identity (or the SPC's chosen auth)."""

    name: ClassVar[str] = "gcp"
    schema: ClassVar[Schema | None] = SCHEMA

    def __init__(self, settings: Mapping[str, Any]) -> None:
        own = {k: v for k, v in settings.items() if k != RUNTIME_KEY}
        self.settings = GCPSettings.from_mapping(own)
        self._raw_settings = {**DEFAULTS, **own}
        self.limits = RateLimits.from_settings(self.name, settings)
        self.shared: SharedReads[Read] = SharedReads.from_settings(self.name, settings)
        self.listings: SharedReads[Entries] = SharedReads.from_settings(self.name, settings)
        self._pool = WorkerPool("gcp", self.settings.workers)
        self._tokens: ClientCache[tuple[str, ...], Token] = ClientCache()
        self._identities = Identities(self.settings)
        self._sm = SecretManager(self.settings)
        self._pm = ParameterManager(self.settings)
        self._session: Any = None
        self._session_lock = threading.Lock()

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def fetch(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched | Revoked]:
        values = SCHEMA.check_parameters(ctx.parameters, self._raw_settings, FirstError())
        auth = self._identities.choose(ctx, values)
        # One token exchange (with its retries) before the fan-out, not one per secret.
        await with_retries(lambda: self._token(auth, ctx), ctx)
        targets: dict[str, Resource] = {}
        for obj in objs:
            name = resource_name(obj)
            targets.setdefault(name, parse_target(name, name))
        done = await gather_all(
            [settle(self._read(name, target, auth, ctx)) for name, target in targets.items()]
        )
        reads = dict(zip(targets, done, strict=True))
        node = NODE_IDENTITY if auth.kind == AUTH_PROVIDER else ""
        out: list[Fetched] = []
        revoked: list[Fetched | Revoked] = []
        for obj in objs:
            read = reads[resource_name(obj)]
            if isinstance(read, KeygateError):
                revoked.append(
                    Revoked.of(obj, read, id_pattern(resource_name(obj), re.escape(f"#{obj.path}")))
                )
                continue
            contents = objects.contents(obj, read.data)
            out.append(Fetched(obj, resource_name(obj), contents, read.version, node_identity=node))
        return [*unique_ids(out, lambda f: f"#{f.obj.path}"), *revoked]

    async def _read(self, name: str, target: Resource, auth: TokenSource, ctx: FetchContext) -> Read:
        endpoint = self.settings.endpoint_for(target.location, parameters=target.parameter)
        read_one = self._pm.render if target.parameter else self._sm.access

        async def attempt() -> Read:
            token = await self._token(auth, ctx)
            timeout = ctx.remaining()
            try:
                read = await self._pool.run(lambda: read_one(endpoint, name, token.value, timeout))
            except Exception as exc:  # noqa: BLE001 - mapped to a KeygateError or re-raised
                error = map_error(exc, name, endpoint, auth, parameter=target.parameter)
                if isinstance(error, Unauthenticated):
                    self._tokens.invalidate(auth.key)
                raise error from None
            log.debug(
                "gcp secret version read",
                extra={"resource": name, "endpoint": endpoint, "auth": auth.kind, "resolved": read.version},
            )
            return read

        gate = self.limits.gate(endpoint)
        key = (endpoint, self._reader(auth, ctx), name, target.parameter)
        return await self.shared.read(key, lambda: with_retries(attempt, ctx, gate=gate), ctx)

    def _reader(self, auth: TokenSource, ctx: FetchContext) -> tuple[str, ...]:
        """The shared-read identity: for the pod's workload identity its audience, impersonated
        account and service account (the key without the pod); else the chosen identity."""
        if auth.kind == "pod-adc" and len(auth.key) == 8:
            _, audience, _, _, _, gsa, chain, digest = auth.key
            who = identity(ctx, verified=self.shared.verified, token=digest)
            return ("pod-adc", audience, gsa, chain, *who)
        return auth.key

    def held(self, obj: SecretObject, parameters: Mapping[str, str]) -> str:
        """The ids ``obj`` is served under, or for a selector the ids of anything it may list,
        as a regular expression and without a read (:mod:`provider.revocation`)."""
        from providers.gcp import listing

        if selectors.is_selector(obj):
            return listing.held_below(obj)
        return id_pattern(resource_name(obj), re.escape(f"#{obj.path}"))

    async def expand(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
        """Selectors to the secrets they list (:mod:`providers.gcp.listing`)."""
        from providers.gcp import listing

        return await listing.expand(self, objs, ctx)

    def _http(self) -> Any:
        """One ``requests`` session for all token calls, so connections to STS/IAM are reused."""
        with self._session_lock:
            if self._session is None:
                import requests

                self._session = requests.Session()
            return self._session

    async def _token(self, auth: TokenSource, ctx: FetchContext) -> Token:
        async def factory() -> tuple[Token, float]:
            timeout = ctx.remaining()
            value, expiry = await self._pool.run(lambda: auth.build(bounded_request(self._http(), timeout)))
            lifetime = DEFAULT_TOKEN_LIFETIME
            if expiry is not None:
                lifetime = (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
            log.info(
                "gcp credentials obtained",
                extra={"auth": auth.kind, "identity": auth.describe, "lifetime_s": int(lifetime)},
            )
            return Token(value, auth.describe), time.monotonic() + lifetime

        return await self._tokens.get(auth.key, factory)

    async def close(self) -> None:
        self.shared.clear()
        self.listings.clear()
        self._tokens.clear()
        self._sm.close()
        self._pm.close()
        if self._session is not None:
            self._session.close()
        self._pool.close()
