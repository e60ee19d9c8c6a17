"""AWS selectors: Secrets Manager secrets by name prefix and tags (ListSecrets with Filters), SSM
parameters by path (GetParametersByPath, recursive when ``depth`` > 1), both paginated.

The service's filters only narrow the answer: Secrets Manager matches name prefixes without
regard to case and ``tag-key``/``tag-value`` each against any tag, so every answer is checked
here again (exact prefix, each tag key with its value). Listing never decrypts: SSM is asked
``WithDecryption=False`` and the values it sends anyway are dropped; the secrets are read later,
once the release policy has seen their names. Every page is one request through the endpoint's
rate limit (the bucket of its reads) with the reads' retry policy.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from provider.domain import FetchContext, SecretObject
from provider.errors import BackendUnavailable
from providers.aws import auth
from providers.aws.auth import Auth
from providers.aws.client import translate_error
from providers.aws.params import SCHEMA, SECRETS_MANAGER, SSM_PARAMETER, fill_region
from providers.common import selectors, shared_listings
from providers.common.runtime import gather_all, with_retries
from providers.common.schema import FirstError

if TYPE_CHECKING:
    from providers.aws.backend import AWSBackend

PAGE_SECRETS = 100
PAGE_PARAMETERS = 10
MAX_PAGES = 1000


def ssm_path(name: str) -> str:
    """The GetParametersByPath ``Path`` for a selector's objectName (``/app``, ``/app/``, ``app``)."""
    return "/" + name.strip("/")


def held_below(obj: SecretObject) -> str:
    """A regular expression for the ids of everything a selector may list: the ARNs AWS answers
    with below the prefix (and, for SSM, the plain names), with any suffix ``held_ids`` allows."""
    if obj.str_field("objectType").lower() == SECRETS_MANAGER:
        return r"arn:[^:]+:secretsmanager:[^:]+:\d+:secret:" + re.escape(obj.name) + ".+"
    base = ssm_path(obj.name).rstrip("/") + "/"
    arn = r"arn:[^:]+:ssm:[^:]+:\d+:parameter/" + re.escape(base.lstrip("/"))
    return f"(?:{arn}|{re.escape(base)}).+"


Page = Callable[[str, str, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def _pages(
    page: Page, method: str, key: str, what: str, region: str, **kwargs: Any
) -> AsyncIterator[dict[str, Any]]:
    """The items of every page of ``method``, each page one request (through ``page``)."""
    token = ""
    for _ in range(MAX_PAGES):
        answer = await page(method, what, kwargs, token)
        items = answer.get(key)
        if not isinstance(items, list):
            raise BackendUnavailable(f"{what}: AWS sent an unreadable answer in {region}")
        for item in items:
            if isinstance(item, dict):
                yield item
        token = str(answer.get("NextToken") or "")
        if not token:
            return
    raise BackendUnavailable(f"{what}: more than {MAX_PAGES} pages in {region}")


def _tags_match(item: dict[str, Any], wanted: Sequence[tuple[str, str]]) -> bool:
    tags = {
        str(t.get("Key")): str(t.get("Value", ""))
        for t in item.get("Tags") or []
        if isinstance(t, dict) and t.get("Key") is not None
    }
    return all(tags.get(key) == value for key, value in wanted)


async def list_secrets(page: Page, expansion: selectors.Expansion, region: str) -> None:
    """Every secret whose name starts with the objectName and that carries all the tags."""
    obj, selector = expansion.obj, expansion.selector
    prefix = obj.name
    filters: list[dict[str, Any]] = [{"Key": "name", "Values": [prefix]}] if prefix else []
    for key, value in selector.filters:
        filters += [{"Key": "tag-key", "Values": [key]}, {"Key": "tag-value", "Values": [value]}]
    what = f"{selectors.where(obj)}: ListSecrets for prefix {prefix!r}"
    async for item in _pages(
        page, "list_secrets", "SecretList", what, region, Filters=filters, MaxResults=PAGE_SECRETS
    ):
        name = item.get("Name")
        if (
            not isinstance(name, str)
            or not name.startswith(prefix)
            or not _tags_match(item, selector.filters)
        ):
            continue
        fields = {"objectName": name, "objectType": SECRETS_MANAGER, "objectAlias": None}
        relative = name[len(prefix) :]
        if not prefix.endswith("/"):
            relative = relative.removeprefix("/")
        expansion.add(relative, name, fields, upstream=name)


async def list_parameters(page: Page, expansion: selectors.Expansion, region: str) -> None:
    """Every parameter below the objectName's path, to ``depth`` levels."""
    obj, selector = expansion.obj, expansion.selector
    path = ssm_path(obj.name)
    base = path.rstrip("/") + "/"
    what = f"{selectors.where(obj)}: GetParametersByPath {path!r}"
    async for item in _pages(
        page,
        "get_parameters_by_path",
        "Parameters",
        what,
        region,
        Path=path,
        Recursive=selector.depth > 1,
        WithDecryption=False,
        MaxResults=PAGE_PARAMETERS,
    ):
        name = item.get("Name")
        if not isinstance(name, str) or not name.startswith(base):
            continue
        fields = {"objectName": name, "objectType": SSM_PARAMETER, "objectAlias": None}
        expansion.add(name[len(base) :], name, fields, upstream=name)


async def expand(backend: AWSBackend, objs: Sequence[SecretObject], ctx: FetchContext) -> list[SecretObject]:
    """Every selector of ``objs``, listed with the pod's own credentials in the SPC's region, each
    listing shared with equal ones of other Mounts of the same identity."""
    values = SCHEMA.check_parameters(ctx.parameters, backend.settings, FirstError())
    if not values.text("region"):
        values = fill_region(values, await backend.node_region.get())
    region = values.text("region")
    who = await auth.resolve(ctx, values, backend.audience, backend.role_resolver)
    parts = await gather_all([_one(backend, who, region, obj, ctx) for obj in objs])
    return [item for part in parts for item in part]


async def _one(
    backend: AWSBackend, who: Auth, region: str, obj: SecretObject, ctx: FetchContext
) -> list[SecretObject]:
    secrets = obj.str_field("objectType").lower() == SECRETS_MANAGER
    service = "secretsmanager" if secrets else "ssm"
    endpoint = backend.clients.endpoint(region) or ""
    gate = backend.limits.gate((service, region, endpoint))  # the bucket its reads use

    async def page(method: str, what: str, kwargs: dict[str, Any], token: str) -> dict[str, Any]:
        """One page: a slot of the endpoint's bucket per attempt, throttling honoured."""

        async def attempt() -> dict[str, Any]:
            client = await backend.clients.client(service, region, who)

            def send() -> dict[str, Any]:
                try:
                    answer: dict[str, Any] = getattr(client, method)(
                        **kwargs, **({"NextToken": token} if token else {})
                    )
                except Exception as exc:  # noqa: BLE001 - translated, never echoed
                    raise translate_error(exc, what, region) from None
                return answer

            return await backend._pool.run(send)

        answer: dict[str, Any] = await with_retries(attempt, ctx, gate=gate)
        return answer

    async def lister(expansion: selectors.Expansion) -> None:
        await (list_secrets if secrets else list_parameters)(page, expansion, region)
        backend.stats["ListSecrets" if secrets else "GetParametersByPath"] += 1

    key = ("list", service, region, endpoint, backend._reader(who, ctx))
    selector = selectors.read(obj, "tags")
    return await shared_listings.expand(backend.listings, key, obj, selector, "AWS name", lister, ctx)
