"""``keygate lint --list``: what each selector of an SPC expands to, listed with a pod's token.

Offline, lint can only show a selector's limits. With a service-account token of the pod's
identity (``kubectl create token SA -n NS --audience AUD``) it runs the daemon's own expansion
(:func:`provider.expand.expand_selectors`, the daemon's backends and settings from ``--config``):
the same login as the pod's Mount, the same listing calls, caps, file names and schema checks,
and with ``--policy`` the release policy asked for every listed object. It never reads a
secret value: only the backends' ``expand`` runs, never ``fetch``.

The token is not verified here (the backend verifies it when keygate logs in with it); its
``kubernetes.io`` claims only tell which namespace, service account and pod to act as, and must
agree with what the flags and manifests say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from provider.attest.policy import Policy, object_ref
from provider.attest.tokens import MAX_TOKEN_CHARS, claim_audiences
from provider.domain import FetchContext, PodIdentity, SecretObject
from provider.errors import KeygateError
from provider.request import ATTR_POD_NAME, ATTR_POD_NAMESPACE, ATTR_POD_UID, ATTR_SERVICE_ACCOUNT
from providers.common.selectors import is_selector

if TYPE_CHECKING:
    from provider.lint import Doc, Linter, _ItemLoc

SHOWN_PER_SELECTOR = 50
LINT_POD_NAME = "keygate-lint"


@dataclass(frozen=True, slots=True)
class Token:
    """One ``--token`` file: the token, the audiences it is offered under, and its identity claims."""

    source: str
    value: str
    audiences: tuple[str, ...]
    namespace: str | None
    service_account: str | None
    pod_name: str | None
    pod_uid: str | None


def read_token(spec: str) -> Token:
    """``[AUDIENCE=]FILE``: the token in FILE, offered under AUDIENCE or else its ``aud`` claim."""
    audience, sep, path = spec.partition("=")
    if not sep or not audience or os.sep in audience:
        audience, path = "", spec
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise KeygateError(f"--token {spec}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeygateError(f"--token {spec}: {path} is not a text file holding a token") from None
    if not text or len(text) > MAX_TOKEN_CHARS:
        raise KeygateError(
            f"--token {spec}: {path} must hold one token of at most {MAX_TOKEN_CHARS} characters"
        )
    try:
        claims = jwt.decode(text, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise KeygateError(
            f"--token {spec}: {path} does not hold a JWT (what 'kubectl create token' prints)"
        ) from None
    audiences = (
        (audience,) if audience else tuple(a for a in claim_audiences(claims) if isinstance(a, str) and a)
    )
    if not audiences:
        raise KeygateError(f"--token {spec}: the token has no 'aud' claim; pass it as AUDIENCE={path}")
    k8s = claims.get("kubernetes.io")
    k8s = k8s if isinstance(k8s, dict) else {}

    def claim(section: str | None, name: str) -> str | None:
        holder = k8s if section is None else k8s.get(section)
        value = holder.get(name) if isinstance(holder, dict) else None
        return value if isinstance(value, str) and value else None

    return Token(
        source=path,
        value=text,
        audiences=audiences,
        namespace=claim(None, "namespace"),
        service_account=claim("serviceaccount", "name"),
        pod_name=claim("pod", "name"),
        pod_uid=claim("pod", "uid"),
    )


def identity_of(
    tokens: Sequence[Token],
    namespace: str | None,
    service_account: str | None,
    namespace_source: str = "--namespace",
) -> PodIdentity:
    """The pod to act as: the tokens' claims, which must agree with each other, the flags and
    the SPC's namespace (``namespace_source`` names where ``namespace`` came from)."""

    def agreed(what: str, given: str | None, flag: str, values: list[tuple[str, str | None]]) -> str:
        found = {v for _, v in values if v}
        if given and found and found != {given}:
            source = next(s for s, v in values if v and v != given)
            raise KeygateError(
                f"{source} is a token for {what} {next(iter(found - {given}))!r}, not {given!r} ({flag})"
            )
        if len(found) > 1:
            raise KeygateError(f"the --token files name different {what}s ({', '.join(sorted(found))})")
        value = given or next(iter(found), None)
        if not value:
            raise KeygateError(f"no token names the {what}; pass {flag}")
        return value

    ns = agreed("namespace", namespace, namespace_source, [(t.source, t.namespace) for t in tokens])
    sa = agreed(
        "service account",
        service_account,
        "--service-account",
        [(t.source, t.service_account) for t in tokens],
    )
    names = {(t.pod_name, t.pod_uid) for t in tokens if t.pod_name}
    name, uid = next(iter(names)) if len(names) == 1 else (LINT_POD_NAME, "")
    return PodIdentity(namespace=ns, name=name, uid=uid or "", service_account=sa)


class _PolicyCheck:
    """The release policy asked for each listed object, as the daemon's ``check_release`` does,
    but recording every refusal instead of stopping at the first."""

    def __init__(self, policy: Policy | None) -> None:
        self.policy = policy
        self.refused: list[tuple[SecretObject, str]] = []

    def refusals(
        self, identity: PodIdentity, objects: Sequence[SecretObject]
    ) -> list[tuple[SecretObject, str]]:
        if self.policy is None:
            return []
        found = self.policy.refused_each(identity.namespace, identity.service_account, objects)
        return [(obj, exc.message) for obj, exc in zip(objects, found, strict=True) if exc is not None]

    def check_release(self, identity: PodIdentity, objects: Sequence[SecretObject]) -> None:
        self.refused.extend(self.refusals(identity, objects))


@dataclass(slots=True)
class _Job:
    doc: Doc
    ctx: str
    parameters: dict[str, str]
    objects: list[tuple[SecretObject, _ItemLoc]]
    namespace: str | None


@dataclass(slots=True)
class SelectorPreview:
    """Collects the SPCs lint found clean, then lists their selectors in one event loop."""

    token_specs: Sequence[str]
    config_path: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    jobs: list[_Job] = field(default_factory=list)

    def queue(
        self,
        doc: Doc,
        ctx: str,
        parameters: Mapping[str, str],
        objects: list[tuple[SecretObject, _ItemLoc]],
        namespace: str | None,
    ) -> None:
        if any(is_selector(obj) for obj, _ in objects):
            self.jobs.append(_Job(doc, ctx, dict(parameters), objects, namespace))

    def run(self, linter: Linter) -> None:
        if not self.jobs:
            return
        policy = linter.release_policy()
        if linter.policy and policy is None:
            for job in self.jobs:  # listing without the policy asked for would hide its refusals
                line = next(loc.line() for obj, loc in job.objects if is_selector(obj))
                linter.add(
                    "info", job.doc, line, job.ctx, "selectors not listed: the release policy has errors"
                )
            return
        tokens = [read_token(spec) for spec in self.token_specs]
        config = _config(self.config_path)
        asyncio.run(self._list_all(linter, tokens, config, policy))

    async def _list_all(
        self, linter: Linter, tokens: list[Token], config: Any, policy: Policy | None
    ) -> None:
        from providers.registry import Registry

        # The backends' shared reads key on a verified identity; lint's identity is the token's
        # unverified claims (the backend verifies the token), so nothing is shared.
        registry = Registry(dataclasses.replace(config, insecure_skip_attestation=True).backend_settings())
        try:
            for job in self.jobs:
                await self._list(linter, job, tokens, config, registry, policy)
        finally:
            await registry.close()

    async def _list(
        self,
        linter: Linter,
        job: _Job,
        tokens: list[Token],
        config: Any,
        registry: Any,
        policy: Policy | None,
    ) -> None:
        from provider.expand import expand_selectors

        objects = [obj for obj, _ in job.objects]
        lines = {obj.index: loc.line() for obj, loc in job.objects}
        first = next(obj for obj in objects if is_selector(obj))
        try:
            identity = identity_of(
                tokens,
                self.namespace or job.namespace,
                self.service_account,
                "--namespace" if self.namespace else "the SecretProviderClass's namespace",
            )
        except KeygateError as exc:
            linter.add("error", job.doc, lines[first.index], job.ctx, f"cannot list selectors: {exc.message}")
            return
        check = _PolicyCheck(policy)
        for obj, message in check.refusals(identity, [o for o in objects if is_selector(o)])[:1]:
            linter.add("error", job.doc, lines[obj.index], _where(job.ctx, obj), f"not listed: {message}")
            return
        parameters = {
            **job.parameters,
            ATTR_POD_NAMESPACE: identity.namespace,
            ATTR_POD_NAME: identity.name,
            ATTR_POD_UID: identity.uid,
            ATTR_SERVICE_ACCOUNT: identity.service_account,
        }
        fctx = FetchContext(
            pod=identity,
            spc_name=str(job.doc.data.get("metadata", {}).get("name", ""))
            if isinstance(job.doc.data, dict)
            else "",
            parameters=parameters,
            tokens={aud: t.value for t in tokens for aud in t.audiences},
            node_secrets={},
            deadline=time.monotonic() + config.mount_timeout,
        )
        try:
            expanded = await expand_selectors(registry, check, config.selector_max_objects, fctx, objects)
        except KeygateError as exc:
            linter.add("error", job.doc, lines[first.index], job.ctx, f"listing failed: {exc.message}")
            return
        who = f"{identity.namespace}/{identity.service_account}"
        refused = {id(obj): message for obj, message in check.refused}
        for selector in (obj for obj in objects if is_selector(obj)):
            found = [o for o in expanded.objects if o.index == selector.index and not is_selector(o)]
            shown = [
                f"    {object_ref(o)} -> {o.path}"
                + (" (refused by the release policy)" if id(o) in refused else "")
                for o in found[:SHOWN_PER_SELECTOR]
            ]
            if len(found) > SHOWN_PER_SELECTOR:
                shown.append(f"    ... and {len(found) - SHOWN_PER_SELECTOR} more")
            policy_note = "" if policy is not None else " (no --policy: the release policy was not asked)"
            linter.add(
                "info",
                job.doc,
                lines[selector.index],
                _where(job.ctx, selector),
                f"selector lists {len(found)} object{'s' * (len(found) != 1)} as {who}{policy_note}"
                + "".join(f"\n{line}" for line in shown),
            )
        for obj, message in check.refused:
            linter.add(
                "error", job.doc, lines[obj.index], _where(job.ctx, obj), f"{object_ref(obj)!r}: {message}"
            )


def _where(ctx: str, obj: SecretObject) -> str:
    return f"{ctx}, objects[{obj.index}] {obj.name!r}"


def _config(path: str | None) -> Any:
    from provider.config import load

    return load(None, {**os.environ, "KEYGATE_CONFIG": path} if path else os.environ)
