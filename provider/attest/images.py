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
from provider.attest.signatures.requirements import SignatureRequirement
from provider.errors import PermissionDenied

DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
MAX_NAME_CHARS = 255
MAX_REFERENCE_CHARS = 1024

# The image reference grammar the container runtimes parse (distribution's reference format),
# written out here so that keygate and the runtime agree on where the name, tag and digest are.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
NAME_AND_TAG_RE = re.compile(rf"\A(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class ImageRef:
    raw: str
    repository: str  # fully qualified: registry/path (docker.io/library/... for short names)
    digest: str | None


@dataclass(frozen=True, slots=True)
class ImageRules:
    """Requirements beyond digest pinning (which is always required).

    ``signatures`` are checked after these (they need the registry): every one applies.
    """

    allowed_digests: frozenset[str] = field(default_factory=frozenset)
    allowed_repositories: tuple[str, ...] = ()
    signatures: tuple[SignatureRequirement, ...] = ()


def normalize_repository(name: str) -> str:
    """Expand Docker Hub short names as runtimes do (``nginx`` -> ``docker.io/library/nginx``)."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def shown(raw: str) -> str:
    """``raw`` as it may appear in a message: printable ASCII as is, anything else escaped."""
    text = raw if raw.isascii() and raw.isprintable() else ascii(raw)[1:-1]
    return text if len(text) <= 200 else text[:200] + "..."


def reference_problem(raw: str) -> str | None:
    """Why ``raw`` is not a well-formed image reference with a sha256 digest, as a clause after
    "image `raw`"; None when it is one, or is well formed but merely unpinned.

    The whole string must match: a reference with a trailing newline, a space, an upper-case
    repository or a second ``@`` is refused rather than read up to the first odd character.
    The daemon and ``keygate lint`` both use this, so lint flags exactly what attestation refuses.
    """
    if len(raw) > MAX_REFERENCE_CHARS:
        return f"is longer than {MAX_REFERENCE_CHARS} characters, which is not a valid image reference"
    name_and_tag, at, digest = raw.partition("@")
    match = NAME_AND_TAG_RE.fullmatch(name_and_tag)
    if match is None:
        return (
            "is not a valid image reference (expected [registry/]repository[:tag]@sha256:<digest>; "
            "lowercase repository, ASCII only, no spaces or control characters)"
        )
    if len(match.group("name")) > MAX_NAME_CHARS:
        return f"has a repository name longer than {MAX_NAME_CHARS} characters"
    if at and not DIGEST_RE.fullmatch(digest):
        return "has a malformed digest (expected @sha256: and 64 lowercase hex digits)"
    return None


def parse_image(raw: str) -> ImageRef:
    name, at, digest = raw.partition("@")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return ImageRef(raw=raw, repository=normalize_repository(name), digest=digest if at else None)


def pin_hint(image: str) -> str:
    """How to pin ``image`` by digest; the one wording the daemon's denial and lint both use."""
    repository = parse_image(image).repository
    return (
        f"use `{repository}@sha256:<digest>` (`docker buildx imagetools inspect {image}` prints the digest)"
    )


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
        label = f"{c.kind} `{shown(c.name)}`"
        problem = reference_problem(c.image)
        if problem is not None:
            raise tag(
                PermissionDenied(f"{label} image `{shown(c.image)}` {problem} ({where})"),
                Denial.IMAGE_UNPINNED,
            )
        ref = parse_image(c.image)
        if ref.digest is None:
            raise tag(
                PermissionDenied(
                    f"{label} image `{c.image}` is not pinned by digest; {pin_hint(c.image)} ({where})"
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
