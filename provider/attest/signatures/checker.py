"""Per-Mount signature checks: every container of the pod against every requirement that covers it.

Images are checked concurrently, each distinct (repository, digest) once. A verified
(repository, digest, requirement) is remembered in a bounded cache for ``cache_ttl`` seconds:
within it the registry is not asked again, so a registry outage does not stop pods whose
images were verified recently; after it, an unreachable registry refuses the Mount (fail
closed). Refusals are never cached: a user who signs the image is served on the kubelet's
next retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provider.attest.images import ImageRef, parse_image, repository_allowed, shown
from provider.attest.kube import Container
from provider.attest.reasons import Denial, tag
from provider.attest.signatures import cosign
from provider.attest.signatures.registry import RegistryClient, RegistryFailure, RegistrySettings
from provider.attest.signatures.requirements import SignatureRequirement
from provider.bounded_cache import BoundedCache
from provider.errors import BackendUnavailable, KeygateError, PermissionDenied

log = logging.getLogger("keygate.attest")

MAX_CACHE_TTL = 86400.0
CacheKey = tuple[str, str, str]


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped: parts of a refusal come
    from registry answers and certificates, and a message must not forge log lines."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Denial
    message: str
    requirement: str


class SignatureChecker:
    """Verifies image signatures for the attestor; one registry client and one cache per daemon."""

    def __init__(
        self,
        settings: RegistrySettings | None = None,
        *,
        cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < cache_ttl <= MAX_CACHE_TTL:
            raise KeygateError(f"signature_cache_ttl must be above 0 and at most {MAX_CACHE_TTL:g} seconds")
        self.registry = RegistryClient(settings)
        self.cache_ttl = cache_ttl
        self.verified: BoundedCache[CacheKey, bool] = BoundedCache(
            "signature_verifications", max_entries=4096, max_bytes=4 * 1024 * 1024, ttl=cache_ttl, clock=clock
        )

    async def aclose(self) -> None:
        await self.registry.aclose()

    async def check(
        self, containers: Sequence[Container], requirements: Sequence[SignatureRequirement], where: str
    ) -> None:
        """Raise for the first container (in pod order) whose image fails a requirement."""
        if not requirements:
            return
        jobs: dict[tuple[str, str], list[SignatureRequirement]] = {}
        owners: list[tuple[Container, ImageRef, list[SignatureRequirement]]] = []
        for c in containers:
            ref = parse_image(c.image)
            assert ref.digest is not None  # check_images ran first
            applicable = [
                r
                for r in requirements
                if not r.repositories or repository_allowed(ref.repository, r.repositories)
            ]
            if applicable:
                owners.append((c, ref, applicable))
                todo = jobs.setdefault((ref.repository, ref.digest), [])
                todo.extend(r for r in applicable if r not in todo)
        keys = list(jobs)
        results = await asyncio.gather(
            *(self._image(repo, digest, jobs[(repo, digest)]) for repo, digest in keys)
        )
        outcome = dict(zip(keys, results, strict=True))
        for c, ref, _ in owners:
            refusal = outcome[(ref.repository, ref.digest or "")]
            if refusal is not None:
                raise self._error(c, ref, refusal, where)

    def _error(self, c: Container, ref: ImageRef, refusal: Refusal, where: str) -> KeygateError:
        text = (
            f"{c.kind} `{shown(c.name)}` image `{shown(c.image)}` {printable(refusal.message)} "
            f"(release policy signature requirement {refusal.requirement!r}; {where})"
        )
        exc: KeygateError
        if refusal.reason is Denial.REGISTRY_UNREACHABLE:
            exc = BackendUnavailable(text)
        else:
            exc = PermissionDenied(text)
        exc.log_fields["image"] = shown(c.image)
        exc.log_fields["container"] = shown(c.name)
        return tag(exc, refusal.reason)

    async def _image(
        self, repository: str, digest: str, requirements: list[SignatureRequirement]
    ) -> Refusal | None:
        """The first requirement ``repository@digest`` fails, or None; registry reads shared."""
        manifest: list[cosign.Layer] | None = None
        payloads: list[bytes | RegistryFailure | None] | None = None
        for requirement in requirements:
            key = (repository, digest, requirement.fingerprint)
            if self.verified.get(key):
                continue
            try:
                if requirement.keyless is not None:
                    from provider.attest.signatures.keyless import verify_keyless

                    failure = await verify_keyless(self.registry, repository, digest, requirement.keyless)
                else:
                    if manifest is None or payloads is None:
                        manifest, payloads = await self._cosign_material(repository, digest)
                    if not manifest:
                        failure = cosign.Failure(
                            Denial.SIGNATURE_MISSING,
                            f"has no cosign signature (no simple-signing layer in "
                            f"`{repository}:{cosign.signature_tag(digest)}`); sign it with "
                            f"`cosign sign --key cosign.key {repository}@{digest}`",
                        )
                    else:
                        failure = cosign.verify_layers(
                            manifest, payloads, requirement.keys, digest, repository
                        )
            except RegistryFailure as exc:
                failure = cosign.Failure(exc.reason, exc.message)
            except Exception as exc:  # noqa: BLE001 - an unforeseen answer refuses; it never crashes the Mount
                log.warning(
                    "image signature check failed unexpectedly",
                    extra={"repository": repository, "error_type": type(exc).__name__},
                )
                failure = cosign.Failure(
                    Denial.SIGNATURE_INVALID,
                    f"could not be verified ({type(exc).__name__}); see the daemon log",
                )
            if failure is not None:
                return Refusal(failure.reason, failure.message, requirement.name)
            self.verified.put(key, True)
        return None

    async def _payload(self, repository: str, digest: str) -> bytes | RegistryFailure | None:
        """One layer's payload; a bad blob fails that layer only, an unreachable registry all."""
        try:
            return await self.registry.blob(repository, digest)
        except RegistryFailure as exc:
            if exc.reason is Denial.REGISTRY_UNREACHABLE:
                raise
            return exc

    async def _cosign_material(
        self, repository: str, digest: str
    ) -> tuple[list[cosign.Layer], list[bytes | RegistryFailure | None]]:
        tag_name = cosign.signature_tag(digest)
        found = await self.registry.manifest(repository, tag_name)
        if found is None:
            raise RegistryFailure(
                Denial.SIGNATURE_MISSING,
                f"has no signature (`{repository}:{tag_name}` does not exist); sign it with "
                f"`cosign sign --key cosign.key {repository}@{digest}`",
            )
        layers = cosign.parse_manifest(*found)
        if len(layers) > cosign.MAX_LAYERS:
            raise RegistryFailure(
                Denial.SIGNATURE_INVALID,
                f"has {len(layers)} signatures in `{repository}:{tag_name}`, over keygate's limit of "
                f"{cosign.MAX_LAYERS}; remove stale ones (`cosign clean`) and sign again",
            )
        payloads = await asyncio.gather(*(self._payload(repository, layer.digest) for layer in layers))
        return layers, list(payloads)
