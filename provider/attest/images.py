"""Image policy: every container of the pod must run content-addressed code.

The kubelet mounts volumes before it pulls images, so status ``imageID``s are often empty at
mount time. The spec's ``@sha256:`` digest is what binds: the runtime verifies it on pull, so
a digest-pinned spec runs exactly that content; a tag binds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from provider.attest.kube import Container
from provider.attest.reasons import Denial, tag
from provider.errors import PermissionDenied

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    raw: str
    repository: str  # fully qualified: registry/path (docker.io/library/... for short names)
    digest: str | None


@dataclass(frozen=True, slots=True)
class ImageRules:
    """Requirements beyond digest pinning (which is always required)."""

    allowed_digests: frozenset[str] = field(default_factory=frozenset)
    allowed_repositories: tuple[str, ...] = ()


def normalize_repository(name: str) -> str:
    """Expand Docker Hub short names as runtimes do (``nginx`` -> ``docker.io/library/nginx``)."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def parse_image(raw: str) -> ImageRef:
    name, at, digest = raw.partition("@")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return ImageRef(raw=raw, repository=normalize_repository(name), digest=digest if at else None)


def repository_allowed(repository: str, prefixes: Iterable[str]) -> bool:
    """Prefix match on path boundaries: `ghcr.io/acme` allows `ghcr.io/acme/api`, not `ghcr.io/acme-x`."""
    for prefix in prefixes:
        base = normalize_repository(prefix.rstrip("/")) if "/" in prefix.rstrip("/") else prefix.rstrip("/")
        if repository == base or repository.startswith(base + "/"):
            return True
    return False


def check_images(containers: Sequence[Container], rules: ImageRules, where: str) -> None:
    """Raise PermissionDenied naming the first container that breaks a rule."""
    if not containers:
        raise PermissionDenied(f"{where} has no containers in its spec")
    for c in containers:
        label = f"{c.kind} `{c.name}`" if c.kind != "container" else f"container `{c.name}`"
        ref = parse_image(c.image)
        if ref.digest is None:
            raise tag(
                PermissionDenied(
                    f"{label} image `{c.image}` is not pinned by digest; "
                    f"use `{ref.repository}@sha256:<digest>` ({where})"
                ),
                Denial.IMAGE_UNPINNED,
            )
        if not DIGEST_RE.match(ref.digest):
            raise tag(
                PermissionDenied(
                    f"{label} image `{c.image}` has a malformed digest (expected sha256:<64 hex>) ({where})"
                ),
                Denial.IMAGE_UNPINNED,
            )
        if rules.allowed_repositories and not repository_allowed(ref.repository, rules.allowed_repositories):
            raise tag(
                PermissionDenied(
                    f"{label} image repository `{ref.repository}` is not allowed by the release policy "
                    f"(allowed: {', '.join(rules.allowed_repositories)}) ({where})"
                ),
                Denial.IMAGE_NOT_ALLOWED,
            )
        if rules.allowed_digests and ref.digest not in rules.allowed_digests:
            raise tag(
                PermissionDenied(
                    f"{label} image digest `{ref.digest}` is not in the release policy's "
                    f"digest allowlist ({where})"
                ),
                Denial.IMAGE_NOT_ALLOWED,
            )
