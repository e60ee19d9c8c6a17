"""Prefix mounts, the daemon's side: after attestation and before any read, each object with a
``selector`` becomes the concrete objects its backend lists with the pod's credentials; those are
checked like written ones (schema, then the release policy again, now for the concrete names).

Which upstream objects a selector names is only known once its backend has listed them, so
the release policy is asked twice: before (for the selector's own prefix, as for any object)
and after (for each concrete object); one refused object refuses a first mount. On a rotation
a refused object the pod holds is revoked instead, like any other (:mod:`provider.revocation`).
Each Mount lists anew, so rotation picks up added objects, and removed ones are simply not
returned any more (the driver removes their files; a rotation records each as revoked,
``not_found``, where the backend can tell which of the pod's ids were the selector's).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from provider import metrics, revocation
from provider.attest import InsecureTrustAttributes
from provider.domain import FetchContext, Revoked, SecretObject
from provider.errors import BackendUnavailable, InvalidSPC, KeygateError, PermissionDenied
from provider.spc import MAX_OBJECTS, check_objects
from provider.spc_memo import spc_parameters
from providers.common.runtime import gather_all
from providers.common.schema import FirstError
from providers.common.selectors import check_cap, check_counts, is_selector
from providers.registry import Registry

log = logging.getLogger("keygate.mount")


@dataclass(frozen=True, slots=True)
class Expanded:
    """A Mount's objects with selectors expanded; on a rotation also the expanded objects the
    release policy now refuses (revoked where held) and each selector's id pattern (for the
    objects its listing no longer returns, :func:`provider.revocation.vanished`)."""

    objects: list[SecretObject]
    refused: list[Revoked] = field(default_factory=list)
    domains: list[tuple[SecretObject, re.Pattern[str]]] = field(default_factory=list)
    listed: frozenset[int] = frozenset()  # id() of every object a selector expanded to


async def expand_selectors(
    registry: Registry,
    attestor: Any,
    maximum: int,
    ctx: FetchContext,
    objects: Sequence[SecretObject],
    *,
    rotation: bool = False,
) -> Expanded:
    """``objects`` with every selector replaced by its expansion, in SPC order; all checked."""
    check_cap(objects, maximum)
    groups: dict[str, list[SecretObject]] = defaultdict(list)
    for obj in objects:
        if is_selector(obj):
            groups[obj.backend].append(obj)
    for name in groups:
        if getattr(registry.get(name), "expand", None) is None:
            raise InvalidSPC(
                f"objects[{groups[name][0].index}] {groups[name][0].name!r}: backend {name!r} "
                "does not support selector; list its objects one by one"
            )
    parts = await gather_all([_guarded(registry, name, group, ctx) for name, group in groups.items()])
    by_index: dict[int, list[SecretObject]] = defaultdict(list)
    for part in parts:
        for item in part:
            by_index[item.index].append(item)
    out: list[SecretObject] = []
    expanded: list[SecretObject] = []
    for obj in objects:
        if not is_selector(obj):
            out.append(obj)
            continue
        found = by_index.get(obj.index, [])
        check_counts(obj, found, maximum)
        log.info(
            "selector expanded",
            extra={"backend": obj.backend, "object": obj.name, "objects": len(found)},
        )
        out.extend(found)
        expanded.extend(found)
    if len(out) > MAX_OBJECTS:
        raise InvalidSPC(
            f"the selectors expand this SecretProviderClass to {len(out)} objects; the limit is {MAX_OBJECTS}"
        )
    check_objects(expanded, spc_parameters(ctx.parameters), registry, FirstError())
    refusals = revocation.refused_now(attestor, ctx.pod, expanded) if rotation else None
    if refusals is not None:
        refused = revocation.expanded_refusals(refusals, registry.get, ctx.parameters)
        taken = {id(r.obj) for r in refused}
        domains = [
            (obj, pattern)
            for obj in objects
            if is_selector(obj)
            and (pattern := revocation.held_pattern(registry.get(obj.backend), obj, ctx.parameters))
        ]
        return Expanded(
            [obj for obj in out if id(obj) not in taken], refused, domains, frozenset(map(id, expanded))
        )
    recheck = getattr(attestor, "check_release", None)
    if recheck is not None:
        recheck(ctx.pod, expanded)
    elif not isinstance(attestor, InsecureTrustAttributes) and expanded:
        raise PermissionDenied(
            "this daemon's attestor cannot check expanded objects against the release policy "
            "(no check_release), so selectors are refused; list the objects one by one"
        )
    return Expanded(out, listed=frozenset(map(id, expanded)))


async def _guarded(
    registry: Registry, name: str, objects: list[SecretObject], ctx: FetchContext
) -> list[SecretObject]:
    """One backend's ``expand``; an unexpected exception becomes a secret-free error."""
    backend = registry.get(name)
    started = time.perf_counter()
    try:
        result: list[SecretObject] = await backend.expand(objects, ctx)  # type: ignore[attr-defined]
    except KeygateError as exc:
        metrics.record_backend(name, time.perf_counter() - started, error_code=exc.code.value)
        raise
    except (asyncio.CancelledError, TimeoutError):
        raise
    except Exception as exc:  # noqa: BLE001 - a backend bug must not crash the daemon
        metrics.record_backend(name, time.perf_counter() - started, error_code="Internal")
        log.error(
            "backend listing raised an unexpected error",
            extra={"backend": name, "error_type": type(exc).__name__},
        )
        raise BackendUnavailable(
            f"backend {name!r} failed unexpectedly while listing a selector ({type(exc).__name__}); "
            "see the keygate log"
        ) from None
    selectors = {obj.index for obj in objects}
    if any(item.index not in selectors or is_selector(item) for item in result):
        raise BackendUnavailable(f"backend {name!r} returned objects no selector asked for")
    return result
