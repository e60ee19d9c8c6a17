"""AWS Secrets Manager and SSM Parameter Store, authenticated as the pod (IRSA or EKS Pod Identity).

The SPC vocabulary is the AWS provider's (``region``, ``failoverRegion``, ``pathTranslation``,
``objects`` with ``objectName``/``objectType``/``objectAlias``/``objectVersion``/
``objectVersionLabel``/``jmesPath``/``failoverObject``/``filePermission``; see
:mod:`providers.aws.params`) so its manifests carry over with only ``spec.provider`` changed.

Credentials come from ``sts:AssumeRoleWithWebIdentity`` with the pod's own projected
service-account token (audience ``sts.amazonaws.com``), so a pod gets exactly what its IAM role's
trust policy grants its service account, never the node's or the daemon's permissions; with
``usePodIdentity`` the node's EKS Pod Identity Agent makes that exchange instead
(:mod:`providers.aws.pod_identity`). Static keys are accepted only from the volume's
nodePublishSecretRef.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from provider.domain import FetchContext, Fetched, Revoked, SecretObject
from provider.errors import KeygateError
from providers.aws import auth, failover, objects
from providers.aws.auth import DEFAULT_AUDIENCE, Auth, RoleResolver
from providers.aws.client import AWSClients, Value
from providers.aws.params import SCHEMA, SECRETS_MANAGER, Plan, Target, fill_region, plan
from providers.aws.region import NodeRegion
from providers.common import selectors
from providers.common.ids import unique_ids
from providers.common.rate_limit import RateLimits
from providers.common.revoked import settle
from providers.common.runtime import WorkerPool, gather_all, with_retries
from providers.common.schema import FirstError, Schema
from providers.common.shared_listings import Entries
from providers.common.shared_reads import SharedReads, identity

log = logging.getLogger("keygate.aws")

# botocore logs full request and response bodies (secret values included) at DEBUG; keygate's
# own debug level must never switch that on.
for _noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

SERVICE_BY_TYPE = {SECRETS_MANAGER: "secretsmanager", "ssmparameter": "ssm"}


class AWSBackend:
    """Secrets Manager and SSM Parameter Store, each pod with its own STS credentials."""

    name: ClassVar[str] = "aws"
    schema: ClassVar[Schema | None] = SCHEMA

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.audience = str(settings.get("audience") or DEFAULT_AUDIENCE)
        workers = int(settings.get("workers", 16))
        self.role_resolver: RoleResolver | None = settings.get("role_resolver")
        self.stats: Counter[str] = Counter()
        self._pool = WorkerPool("aws", workers)
        self.clients = AWSClients(settings, self._pool, workers, self.stats)
        self._credentials = self.clients.credentials
        self.node_region = NodeRegion(settings)
        self.limits = RateLimits.from_settings(self.name, settings)
        self.shared: SharedReads[list[Value]] = SharedReads.from_settings(self.name, settings)
        self.listings: SharedReads[Entries] = SharedReads.from_settings(self.name, settings)

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def _read(self, targets: objects.Unit, who: Auth, ctx: FetchContext) -> list[Value]:
        """One unit of reads in one region (a secret, or an SSM batch), with retries."""
        target0 = targets[0][0]
        service = SERVICE_BY_TYPE[target0.object_type]

        endpoint = self.clients.endpoint(target0.region) or ""
        gate = self.limits.gate((service, target0.region, endpoint))

        async def attempt() -> list[Value]:
            client = await self.clients.client(service, target0.region, who)
            if target0.object_type == SECRETS_MANAGER:
                ((target, plans),) = targets
                return [await self._pool.run(lambda: self.clients.get_secret(client, plans[0], target))]
            return await self._pool.run(lambda: self.clients.get_parameters(client, targets))

        key = (service, target0.region, endpoint, self._reader(who, ctx), tuple(t for t, _ in targets))
        return await self.shared.read(
            key,
            lambda: with_retries(attempt, ctx, gate=gate),
            ctx,
            private=lambda values: any(v.missing is not None for v in values),  # never reuse a "gone"
        )

    def _reader(self, who: Auth, ctx: FetchContext) -> tuple[str, ...]:
        """The shared-read identity: the IAM role and service account (IRSA), the pod (Pod Identity
        tags its sessions with the pod's name), or the static keys' digest."""
        if who.kind == "web":
            verified = self.shared.verified
            return (who.kind, who.role_arn, *identity(ctx, verified=verified, token=who.token))
        if who.kind == "pod-identity" and not self.shared.verified and who.pod_identity is not None:
            return (*who.cache_key, *identity(ctx, verified=False, token=who.pod_identity.token))
        return who.cache_key

    async def _read_with_failover(
        self, group: objects.Unit, who: Auth, ctx: FetchContext
    ) -> list[tuple[Sequence[Plan], Value]]:
        """Read in the primary region and, with a failover target, in the failover region too
        (:mod:`providers.aws.failover`)."""
        return await failover.read_both(lambda unit, uctx: self._read(unit, who, uctx), group, ctx)

    async def fetch(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched | Revoked]:
        values = SCHEMA.check_parameters(ctx.parameters, self.settings, FirstError())
        if not values.text("region"):
            values = fill_region(values, await self.node_region.get())
        plans = [plan(obj, values, ctx.parameters) for obj in objs]
        who = await auth.resolve(ctx, values, self.audience, self.role_resolver)
        grouped: dict[Target, list[Plan]] = {}
        for item in plans:
            grouped.setdefault(item.primary, []).append(item)
        units = objects.units(list(grouped.items()))
        parts = await gather_all([settle(self._read_with_failover(unit, who, ctx)) for unit in units])
        pairs: list[tuple[Plan, Value]] = []
        revoked: list[Fetched | Revoked] = []
        for unit, part in zip(units, parts, strict=True):
            if isinstance(part, KeygateError):
                revoked.extend(
                    Revoked.of(item.obj, part, held_ids(item)) for _, plans in unit for item in plans
                )
                continue
            for readers, value in part:
                for item in readers:
                    if value.missing is not None:
                        revoked.append(Revoked.of(item.obj, value.missing, held_ids(item)))
                    else:
                        pairs.append((item, value))
        mains = unique_ids(
            [objects.main_file(item, value, ctx.parameters) for item, value in pairs],
            lambda f: f"#{f.obj.path}",
        )
        out: list[Fetched] = []
        for (item, _), main in zip(pairs, mains, strict=True):
            out.append(main)
            out.extend(objects.jmes_files(item, main, ctx.parameters))
        out.sort(key=lambda f: f.obj.index)
        return [*out, *revoked]

    def held(self, obj: SecretObject, parameters: Mapping[str, str]) -> str:
        """The ids ``obj`` is served under, or for a selector the ids of anything it may list,
        as a regular expression and without a read (:mod:`provider.revocation`)."""
        from providers.aws import listing

        if selectors.is_selector(obj):
            return listing.held_below(obj)
        return held_ids(
            plan(obj, SCHEMA.check_parameters(parameters, self.settings, FirstError()), parameters)
        )

    async def expand(self, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
        """Selectors to the secrets or parameters they list (:mod:`providers.aws.listing`)."""
        from providers.aws import listing

        return await listing.expand(self, objs, ctx)

    async def close(self) -> None:
        self._pool.close()
        self.shared.clear()
        self.listings.clear()
        self.clients.clear()
        await self.node_region.aclose()


def held_ids(item: Plan) -> str:
    """The ids an object is served under (a regular expression): the ARN AWS answered with
    (for a name, ``...:secret:<name>-xxxxxx``; for SSM, ``...:parameter/<name>``) or the name,
    for its primary or failover read, plus the ``#<file>`` and ``#jmesPath=`` suffixes."""
    forms: list[str] = []
    for target in (item.primary, item.failover):
        if target is None:
            continue
        name = re.escape(target.name)
        if target.name.startswith("arn:"):
            forms.append(name + r"(?:-[A-Za-z0-9]{6})?")
        elif target.object_type == SECRETS_MANAGER:
            forms.append(r"arn:[^:]+:secretsmanager:[^:]+:\d+:secret:" + name + r"-[A-Za-z0-9]{6}")
        else:
            forms.append(r"arn:[^:]+:ssm:[^:]+:\d+:parameter/" + re.escape(target.name.lstrip("/")))
            forms.append(name)
    suffix = re.escape(f"#{item.obj.path}")
    return f"(?:{'|'.join(forms)})(?:{suffix})?(?:#jmesPath=.+)?"
