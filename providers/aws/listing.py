"""AWS selectors: Secrets Manager secrets by name prefix and tags (ListSecrets with Filters), SSM
parameters by path (GetParametersByPath, recursive when ``depth`` > 1), both paginated.

The service's filters only narrow the answer: Secrets Manager matches name prefixes without
regard to case and ``tag-key``/``tag-value`` each against any tag, so every answer is checked
here again (exact prefix, each tag key with its value). Listing never decrypts: SSM is asked
``WithDecryption=False`` and the values it sends anyway are dropped; the secrets are read later,
once the release policy has seen their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from provider.domain import FetchContext, SecretObject
from provider.errors import BackendUnavailable
from providers.aws import auth
from providers.aws.auth import Auth
from providers.aws.client import translate_error
from providers.aws.params import SCHEMA, SECRETS_MANAGER, SSM_PARAMETER, fill_region
from providers.common import selectors
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


def _pages(call: Any, key: str, what: str, region: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    token = ""
    for _ in range(MAX_PAGES):
        try:
            page = call(**kwargs, **({"NextToken": token} if token else {}))
        except Exception as exc:  # noqa: BLE001 - translated below, never echoed
            raise translate_error(exc, what, region) from None
        items = page.get(key)
        if not isinstance(items, list):
            raise BackendUnavailable(f"{what}: AWS sent an unreadable answer in {region}")
        yield from (item for item in items if isinstance(item, dict))
        token = str(page.get("NextToken") or "")
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


def list_secrets(client: Any, expansion: selectors.Expansion, region: str) -> None:
    """Every secret whose name starts with the objectName and that carries all the tags."""
    obj, selector = expansion.obj, expansion.selector
    prefix = obj.name
    filters: list[dict[str, Any]] = [{"Key": "name", "Values": [prefix]}] if prefix else []
    for key, value in selector.filters:
        filters += [{"Key": "tag-key", "Values": [key]}, {"Key": "tag-value", "Values": [value]}]
    what = f"{selectors.where(obj)}: ListSecrets for prefix {prefix!r}"
    for item in _pages(
        client.list_secrets, "SecretList", what, region, Filters=filters, MaxResults=PAGE_SECRETS
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


def list_parameters(client: Any, expansion: selectors.Expansion, region: str) -> None:
    """Every parameter below the objectName's path, to ``depth`` levels."""
    obj, selector = expansion.obj, expansion.selector
    path = ssm_path(obj.name)
    base = path.rstrip("/") + "/"
    what = f"{selectors.where(obj)}: GetParametersByPath {path!r}"
    for item in _pages(
        client.get_parameters_by_path,
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
    """Every selector of ``objs``, listed with the pod's own credentials in the SPC's region."""
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
    object_type = obj.str_field("objectType").lower()
    secrets = object_type == SECRETS_MANAGER
    service = "secretsmanager" if secrets else "ssm"

    async def attempt() -> list[SecretObject]:
        expansion = selectors.Expansion(obj, selectors.read(obj, "tags"), "AWS name")
        client = await backend.clients.client(service, region, who)
        lister = list_secrets if secrets else list_parameters
        await backend._pool.run(lambda: lister(client, expansion, region))
        backend.stats["ListSecrets" if secrets else "GetParametersByPath"] += 1
        return expansion.objects

    return await with_retries(attempt, ctx)
