"""Azure Key Vault backend: secrets, keys and certificates, fetched *as the pod* (or as the node
where the release policy grants ``nodeIdentity: [azure]``).

SPC parameters mirror Azure/secrets-store-csi-driver-provider-azure so its manifests carry over
with only ``spec.provider`` changed (see :mod:`providers.azure.params`); identities are chosen
in :mod:`providers.azure.auth`. The synchronous SDK runs on this backend's bounded
:class:`WorkerPool`; authenticated clients are cached per (vault URL, tenant, client id, pod
identity) until the pod token expires; throttling and transient faults go through
:func:`with_retries` (the SDK's own retries are off so the mount deadline bounds everything).

Settings (``backends.azure`` in the daemon config file), all optional:

- ``vault_url_template``: vault URL with ``{vault}`` and ``{dns_suffix}`` placeholders
  (default ``https://{vault}.{dns_suffix}``, the suffix coming from ``cloudName``).
- ``authority_host``: Entra ID authority (default: the one of ``cloudName``).
- ``ca_bundle``: PEM file of CAs to trust instead of the system store (private endpoints).
- ``proxy``: HTTPS proxy URL for vault and Entra traffic.
- ``disable_instance_discovery``: for authorities MSAL does not know (Azure Stack, tests).
- ``token_audience``: audience of the pod token exchanged (default api://AzureADTokenExchange).
- ``workers``: threads for the blocking SDK (default 16).
- ``request_timeout``: seconds one HTTP request may take (default 20).
- ``sdk_log_level``: level of the ``azure``/``msal`` loggers (default warning: the SDK logs
  every request's headers at info).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar, TypeVar

from provider.domain import FetchContext, Fetched, Revoked, SecretObject
from provider.errors import DeadlineExceeded, Gone, KeygateError, SecretNotFound, gone
from providers.azure import auth, client
from providers.azure.client import Clients, KeyVault, Target
from providers.azure.params import CLOUDS, SCHEMA
from providers.common import selectors
from providers.common.ids import file_of, unique_ids
from providers.common.rate_limit import RateLimits
from providers.common.revoked import id_pattern, settle
from providers.common.runtime import WorkerPool, gather_all, with_retries
from providers.common.schema import FirstError, Schema
from providers.common.shared_listings import Entries
from providers.common.shared_reads import SharedReads, identity
from providers.common.tokens import pod_token

T = TypeVar("T")
DEFAULT_URL_TEMPLATE = "https://{vault}.{dns_suffix}"
HISTORY_IDS = r"/\d+(?::.+)?|:.+"  # objectVersionHistory files, and unique_ids' ":<file>"


class AzureBackend:
    """Reads Key Vault objects with the pod's workload identity (or a node-secret principal)."""

    name: ClassVar[str] = "azure"
    schema: ClassVar[Schema | None] = SCHEMA

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self._url_template = str(settings.get("vault_url_template") or DEFAULT_URL_TEMPLATE)
        if "{vault}" not in self._url_template or not self._url_template.startswith("https://"):
            raise KeygateError(
                "backends.azure.vault_url_template must be an https:// URL containing '{vault}'"
            )
        self._authority_override = str(settings.get("authority_host") or "").rstrip("/")
        if self._authority_override and not self._authority_override.startswith("https://"):
            raise KeygateError("backends.azure.authority_host must be an https:// URL")
        self._audience = str(settings.get("token_audience") or auth.DEFAULT_AUDIENCE)
        self._pool = WorkerPool(self.name, int(settings.get("workers") or 16))
        self._kv = KeyVault(settings)
        self.limits = RateLimits.from_settings(self.name, settings)
        self.shared: SharedReads[Any] = SharedReads.from_settings(self.name, settings)
        self.listings: SharedReads[Entries] = SharedReads.from_settings(self.name, settings)
        sdk_level = str(settings.get("sdk_log_level") or "warning").upper()
        for logger_name in ("azure", "msal"):
            logging.getLogger(logger_name).setLevel(sdk_level)

    def _target(self, parameters: Mapping[str, str]) -> Target:
        """The vault and identity an SPC names, read through the schema (first error raised)."""
        values = SCHEMA.check_parameters(parameters, self.settings, FirstError())
        vault = values.text("keyvaultName").lower()
        cloud = CLOUDS[values.text("cloudName")]
        vault_url = self._url_template.format(vault=vault, dns_suffix=cloud.vault_dns_suffix)
        return Target(
            vault=vault,
            vault_url=vault_url.rstrip("/"),
            tenant=values.text("tenantId"),
            authority=self._authority_override or cloud.authority_host,
            client_id=values.text("clientID"),
            managed_identity=values.flag("useVMManagedIdentity"),
            user_assigned=values.text("userAssignedIdentityID"),
        )

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched | Revoked]:
        target = self._target(ctx.parameters)
        clients = await auth.clients_for(self._kv, target, ctx, self._audience)
        try:
            results = await gather_all(
                [settle(self._fetch_object(obj, target, clients, ctx)) for obj in objects]
            )
        except (DeadlineExceeded, asyncio.CancelledError):
            # A worker may still be blocked in a token exchange holding the credential's lock;
            # the next Mount gets fresh clients instead of queueing behind it.
            self._kv.cache.invalidate(clients.key)
            raise
        node = auth.node_identity(target)
        items = [
            replace(item, node_identity=node) if node else item
            for fetched in results
            if not isinstance(fetched, KeygateError)
            for item in fetched
        ]
        revoked: list[Fetched | Revoked] = [
            Revoked.of(obj, result, id_pattern(self._base_id(obj, target), HISTORY_IDS))
            for obj, result in zip(objects, results, strict=True)
            if isinstance(result, KeygateError)
        ]
        return [*unique_ids(items, lambda f: ":" + file_of(f)), *revoked]

    @staticmethod
    def _base_id(obj: SecretObject, target: Target) -> str:
        return f"azure/{target.vault}/{SCHEMA.read_fields(obj).text('objectType')}/{obj.name}"

    async def _fetch_object(
        self, obj: SecretObject, target: Target, clients: Clients, ctx: FetchContext
    ) -> list[Fetched]:
        fields = SCHEMA.read_fields(obj)
        object_type = fields.text("objectType")
        version = fields.text("objectVersion")
        base_id = self._base_id(obj, target)
        history = fields.number("objectVersionHistory")
        share = (
            target.vault_url,
            self._reader(clients, ctx),
            object_type,
            obj.name,
            obj.str_field("objectFormat"),
            obj.str_field("objectEncoding"),
        )
        if history <= 1:
            get = partial(client.get, obj, target, clients, version)
            value = await self._call(ctx, get, (*share, version))
            return [Fetched(obj, base_id, value.contents, value.version)]
        listing = partial(client.versions, obj, target, clients)
        versions = await self._call(ctx, listing, (*share, "versions"))
        if version:
            if version not in versions and self.shared.ttl > 0:
                # a reused listing may predate the version's re-enabling: never revoke from one
                versions = await self._call(ctx, listing, (*share, "versions"), fresh=True)
            if version not in versions:
                missing = SecretNotFound(
                    f"objects[{obj.index}] {obj.name!r}: Key Vault {target.vault!r} has no enabled version "
                    f"{version!r} of {object_type} {obj.name!r}"
                )
                raise gone(missing, Gone.DISABLED)
            versions = versions[versions.index(version) :]
        chosen = versions[:history]
        values = await gather_all(
            [self._call(ctx, partial(client.get, obj, target, clients, v), (*share, v)) for v in chosen]
        )
        return [
            Fetched(obj, f"{base_id}/{i}", value.contents, value.version, f"{obj.path}/{i}")
            for i, value in enumerate(values)
        ]

    def _reader(self, clients: Clients, ctx: FetchContext) -> tuple[str, ...]:
        """The shared-read identity: a workload identity's federated credential is granted per
        service account (its key without the pod), the node's or static identities are theirs."""
        if clients.key[:1] == ("workload",) and len(clients.key) == 9:
            token = pod_token(ctx, [self._audience])
            return (*clients.key[:5], *identity(ctx, verified=self.shared.verified, token=token))
        return clients.key

    async def _call(
        self,
        ctx: FetchContext,
        fn: Callable[[Mapping[str, Any]], T],
        share: tuple[Any, ...],
        *,
        fresh: bool = False,
    ) -> T:
        """Run one blocking SDK call on the pool, retried on throttling within the deadline,
        shared with identical reads of other Mounts (``share`` is its key, vault URL first).

        ``fn`` gets per-request timeouts capped at the time left, so a vault that never answers
        frees the worker thread at the mount deadline rather than after ``request_timeout``.
        """
        gate = self.limits.gate(share[0])

        async def attempt() -> T:
            left = ctx.remaining()
            limits = {
                "connection_timeout": min(10.0, self._kv.request_timeout, left),
                "read_timeout": min(self._kv.request_timeout, left),
            }
            return await self._pool.run(lambda: fn(limits))

        result: T = await self.shared.read(
            share, lambda: with_retries(attempt, ctx, gate=gate), ctx, fresh=fresh
        )
        return result

    def held(self, obj: SecretObject, parameters: Mapping[str, str]) -> str:
        """The ids ``obj`` is served under, or for a selector the ids of every secret whose name
        starts with its prefix, as a regular expression and without a read."""
        base = re.escape(self._base_id(obj, self._target(parameters)))
        return base + ".+" if selectors.is_selector(obj) else f"{base}(?:{HISTORY_IDS})?"

    async def expand(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
        """Selectors to the secrets they list (:mod:`providers.azure.listing`)."""
        from providers.azure import listing

        return await listing.expand(self, objs, ctx)

    async def close(self) -> None:
        self.shared.clear()
        self.listings.clear()
        self._kv.close()
        self._pool.close()
