"""One Mount, start to finish: parse, resolve objects, attest, fetch, assemble; all or nothing.

This module orchestrates and nothing else: it knows neither gRPC (the server converts the wire
messages) nor any backend's API (backends sit behind :class:`providers.base.Backend`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from provider import metrics, revocation
from provider.attest import Attestor
from provider.attest.service_accounts import ServiceAccounts
from provider.domain import FetchContext, Fetched, PodIdentity, Revoked, SecretObject
from provider.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidSPC,
    KeygateError,
    ResourceExhausted,
)
from provider.expand import Expanded, expand_selectors
from provider.files import PathClaims, clean_path
from provider.health import Readiness
from provider.memory import TRIMMER
from provider.request import MountContext, MountInput, parse
from provider.spc_memo import ObjectsMemo
from provider.target import TargetRules
from provider.versions import Versioner
from provider.writer import OutFile, write_atomic
from providers.base import Backend
from providers.common.runtime import gather_all
from providers.common.selectors import is_selector
from providers.registry import Registry

log = logging.getLogger("keygate.mount")

MAX_RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024


@dataclass(slots=True)
class MountResult:
    """The complete file set and one version per file."""

    files: list[OutFile]
    versions: list[tuple[str, str]]
    identity: PodIdentity
    spc_name: str
    objects: list[SecretObject]
    fetched: list[Fetched] = field(default_factory=list)
    revoked: list[revocation.Revocation] = field(default_factory=list)


class AuditHook(Protocol):
    """Told of every released and every refused Mount (see :mod:`provider.attest.audit`)."""

    def released(
        self,
        request_id: str,
        ctx: MountContext,
        identity: PodIdentity,
        fetched: Sequence[Fetched],
        versions: Sequence[tuple[str, str]],
        revoked: Sequence[revocation.Revocation] = (),
    ) -> None: ...

    def refused(
        self,
        request_id: str,
        ctx: MountContext | None,
        objects: Sequence[SecretObject],
        error: BaseException,
    ) -> None: ...

    def revoked(
        self,
        request_id: str,
        ctx: MountContext,
        identity: PodIdentity,
        revoked: Sequence[revocation.Revocation],
    ) -> None: ...


@dataclass(slots=True)
class _Seen:
    """What a Mount had established when it failed, for the audit record."""

    ctx: MountContext | None = None
    objects: Sequence[SecretObject] = ()


class Mounter:
    """Runs Mounts against a registry of backends; safe for concurrent use."""

    def __init__(
        self,
        registry: Registry,
        attestor: Attestor,
        versioner: Versioner,
        *,
        timeout: float = 25.0,
        write_files: bool = False,
        target_rules: TargetRules | None = None,
        audit: AuditHook | None = None,
        readiness: Readiness | None = None,
        service_accounts: ServiceAccounts | None = None,
        selector_max_objects: int = 1000,
    ) -> None:
        self.selector_max_objects = selector_max_objects
        self.readiness = readiness if readiness is not None else Readiness()
        self.registry = registry
        self._objects = ObjectsMemo(registry)
        self.attestor = attestor
        self.versioner = versioner
        self.timeout = timeout
        self.write_files = write_files
        self.target_rules = target_rules if target_rules is not None else TargetRules()
        self.audit = audit
        self.service_accounts = service_accounts

    async def mount(self, request: MountInput, request_id: str = "") -> MountResult:
        """Run one Mount; every outcome is reported to the audit hook, if any."""
        seen = _Seen()
        try:
            result = await self._mount(request, seen)
        except Exception as exc:
            if isinstance(exc, KeygateError) and seen.ctx is not None:
                exc.log_fields.update(
                    pod=f"{seen.ctx.pod.namespace}/{seen.ctx.pod.name}", spc=seen.ctx.spc_name
                )
            if self.audit is not None:
                self.audit.refused(request_id, seen.ctx, seen.objects, exc)
            raise
        finally:
            TRIMMER.note(len(request.attributes) + len(request.secrets))
        if self.audit is not None and seen.ctx is not None:
            self.audit.released(
                request_id, seen.ctx, result.identity, result.fetched, result.versions, result.revoked
            )
        taken = revocation.record(result.revoked)
        if taken and self.audit is not None and seen.ctx is not None:
            self.audit.revoked(request_id, seen.ctx, result.identity, taken)
        return result

    async def close(self) -> None:
        """Release the backends' and the attestor's clients."""
        await self.registry.close()
        if self.service_accounts is not None:
            await self.service_accounts.aclose()
        aclose = getattr(self.attestor, "aclose", None)
        if aclose is not None:
            await aclose()
        close = getattr(self.audit, "close", None)
        if close is not None:
            close()

    async def _mount(self, request: MountInput, seen: _Seen) -> MountResult:
        deadline = time.monotonic() + self.timeout
        try:
            async with asyncio.timeout(self.timeout):
                ctx = seen.ctx = parse(request)
                objects = seen.objects = self._objects.parse(ctx.parameters)
                spc_mode = revocation.spc_mode(ctx.parameters)
                decision = await revocation.attest(self.attestor, ctx, objects)
                identity, objects = decision.identity, decision.allowed(objects)
                expanded = Expanded(list(objects))
                if any(is_selector(obj) for obj in objects):
                    fctx = self._context(ctx, identity, deadline)
                    expanded = await expand_selectors(
                        self.registry,
                        self.attestor,
                        self.selector_max_objects,
                        fctx,
                        objects,
                        rotation=bool(ctx.current_versions),
                    )
                    objects = seen.objects = expanded.objects
                items = await self._fetch(ctx, identity, objects, deadline)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the mount did not finish within {self.timeout:g}s; a backend is slow or unreachable"
            ) from None
        fetched, revoked, skipped = revocation.settle(
            ctx,
            [*items, *decision.refused, *expanded.refused],
            decision.mode(spc_mode),
            self.versioner,
            expanded.listed,
        )
        if skipped:
            objects = [obj for obj in objects if id(obj) not in skipped]
        kept = revocation.kept(objects, revoked)
        files, versions = self._assemble(ctx, kept, [*fetched, *revocation.placeholders(revoked)])
        versions += revocation.tombstones(revoked, self.versioner, (i for i, _ in versions))
        revoked += revocation.vanished(ctx, expanded.domains, (i for i, _ in versions), self.versioner)
        if self.write_files:
            await asyncio.to_thread(
                write_atomic, ctx.target_path, files, pod_uid=identity.uid, rules=self.target_rules
            )
        return MountResult(files, versions, identity, ctx.spc_name, objects, fetched, revoked)

    async def _fetch(
        self,
        ctx: MountContext,
        identity: PodIdentity,
        objects: Sequence[SecretObject],
        deadline: float,
    ) -> list[Fetched | Revoked]:
        groups: dict[str, list[SecretObject]] = defaultdict(list)
        for obj in objects:
            groups[obj.backend].append(obj)
        fctx = self._context(ctx, identity, deadline)
        backends = {name: self.registry.get(name) for name in groups}
        if len(groups) == 1:
            ((name, group),) = groups.items()
            return await _guarded(backends[name], group, fctx)
        results = await gather_all([_guarded(backends[n], g, fctx) for n, g in groups.items()])
        return [item for part in results for item in part]

    def _context(self, ctx: MountContext, identity: PodIdentity, deadline: float) -> FetchContext:
        return FetchContext(
            pod=identity,
            spc_name=ctx.spc_name,
            parameters=ctx.parameters,
            tokens=ctx.tokens,
            node_secrets=ctx.node_secrets,
            deadline=deadline,
            service_account_annotations=(
                self.service_accounts.accessor(identity) if self.service_accounts is not None else None
            ),
        )

    def _assemble(
        self, ctx: MountContext, objects: Sequence[SecretObject], fetched: Sequence[Fetched]
    ) -> tuple[list[OutFile], list[tuple[str, str]]]:
        files: list[OutFile] = []
        versions: list[tuple[str, str]] = []
        paths = PathClaims()
        ids: set[str] = set()
        served: set[tuple[int, str, str]] = set()
        total = 0
        for item in fetched:
            obj = item.obj
            where = f"objects[{obj.index}] {obj.name!r}"
            path = obj.path if item.path is None else clean_path(item.path, where)
            paths.claim(path, where)
            if item.object_id in ids:
                raise InvalidSPC(f"{where}: object id {item.object_id!r} appears twice in this SPC")
            ids.add(item.object_id)
            served.add((obj.index, obj.name, obj.path))
            total += len(item.contents)
            mode = obj.mode if obj.mode is not None else ctx.default_mode
            files.append(OutFile(path, mode, item.contents))
            versions.append(
                (item.object_id, self.versioner.version(item.object_id, item.version, path, item.contents))
            )
        missing = [o.name for o in objects if (o.index, o.name, o.path) not in served]
        if missing:
            raise BackendUnavailable(f"the backend returned nothing for: {', '.join(missing)}")
        if total > MAX_RESPONSE_BYTES:
            raise ResourceExhausted(
                f"the files total {total} bytes, over the driver's 4 MiB message limit; "
                "split the objects across several volumes"
            )
        return files, versions


async def _guarded(
    backend: Backend, objects: list[SecretObject], ctx: FetchContext
) -> list[Fetched | Revoked]:
    """Run one backend; an unexpected exception becomes a secret-free error naming the backend.

    Each call is timed into ``keygate_backend_request_duration_seconds`` and, when it fails,
    counted in ``keygate_backend_errors_total`` with the error code (never the message).
    """
    started = time.perf_counter()
    try:
        fetched = list(await backend.fetch(objects, ctx))
    except KeygateError as exc:
        metrics.record_backend(backend.name, time.perf_counter() - started, error_code=exc.code.value)
        raise
    except (asyncio.CancelledError, TimeoutError):
        metrics.record_backend(backend.name, time.perf_counter() - started, error_code="DeadlineExceeded")
        raise
    except Exception as exc:  # noqa: BLE001 - a backend bug must not crash the daemon
        metrics.record_backend(backend.name, time.perf_counter() - started, error_code="Internal")
        log.error(
            "backend raised an unexpected error",
            extra={"backend": backend.name, "error_type": type(exc).__name__},
        )
        raise BackendUnavailable(
            f"backend {backend.name!r} failed unexpectedly ({type(exc).__name__}); see the keygate log"
        ) from None
    metrics.record_backend(backend.name, time.perf_counter() - started, objects=len(fetched))
    return fetched
