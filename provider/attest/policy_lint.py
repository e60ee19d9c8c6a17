"""``keygate lint --policy``: what the release policy will say about a pod, offline.

Offline means: the policy file is parsed exactly as the daemon parses it (so unreadable or
malformed public keys and trusted roots are reported here), the rule covering each pod is
found, its image allowlists are applied, and the images that need signatures are listed with
the requirements they must meet. Whether the signatures exist and verify needs the registry;
the daemon checks that at Mount time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provider.attest.images import check_images, parse_image, reference_problem, repository_allowed
from provider.attest.kube import Container
from provider.attest.policy import Policy, PolicyError, parse_policy
from provider.errors import PermissionDenied

if TYPE_CHECKING:
    from provider.lint import Doc, Linter

KINDS = {
    "containers": "container",
    "initContainers": "initContainer",
    "ephemeralContainers": "ephemeralContainer",
}
PodSpecs = Sequence[tuple["Doc", tuple[str | int, ...], dict[str, Any]]]


def load(linter: Linter, path: str) -> Policy | None:
    """The policy file parsed as the daemon parses it; None (the error reported) if it cannot be."""
    from provider.lint import Doc

    where = Doc(file=path, data=None, node=None)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        linter.add("error", where, None, "release policy", f"cannot read {path}: {exc.strerror}")
        return None
    try:
        return parse_policy(text, path)
    except PolicyError as exc:
        linter.add("error", where, None, "release policy", exc.message)
        return None


def _describe(requirement: Any) -> str:
    if requirement.keyless is not None:
        return f"{requirement.name!r} (Sigstore keyless: {requirement.keyless.describe()})"
    count = len(requirement.keys)
    return f"{requirement.name!r} (cosign key{'s' * (count != 1)}: {', '.join(requirement.key_sources)})"


def lint_policy(linter: Linter, pods: PodSpecs, namespace: str | None) -> None:
    """Add, per pod, the covering rule and signature needs of ``--policy`` to the report (the
    file's own errors are reported by :meth:`provider.lint.Linter.release_policy`)."""
    policy = linter.release_policy()
    if policy is None:
        return
    from provider.lint import _pod_label

    for doc, spec_path, spec in pods:
        label = _pod_label(doc)
        meta = doc.data.get("metadata") if isinstance(doc.data, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        ns = ns if isinstance(ns, str) and ns else namespace or "default"
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        sa = sa if isinstance(sa, str) else "default"
        try:
            rule = policy.rule_for(ns, sa)
        except PermissionDenied as exc:
            linter.add("error", doc, doc.line(*spec_path), label, exc.message)
            continue
        if rule is None:
            linter.report.summaries.append(
                f"{label}: no release policy rule covers service account {sa!r} in namespace {ns!r} "
                "(default allow: digest pinning only, no signatures required)"
            )
            continue
        linter.report.summaries.append(
            f"{label}: release policy rule {rule.name!r} covers service account {sa!r} in namespace {ns!r}"
        )
        for group, kind in KINDS.items():
            for index, item in enumerate(spec.get(group) or []):
                if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                    continue
                name = item.get("name", f"{group}[{index}]")
                image = item["image"]
                if reference_problem(image) is not None or parse_image(image).digest is None:
                    continue  # lint already reports unpinned and malformed references
                line = doc.line(*spec_path, group, index, "image")
                container = Container(kind, str(name), image)
                try:
                    check_images([container], rule.images, f"pod {ns}/{label}")
                except PermissionDenied as exc:
                    linter.add("error", doc, line, label, exc.message)
                    continue
                repository = parse_image(image).repository
                needed = [
                    r
                    for r in rule.images.signatures
                    if not r.repositories or repository_allowed(repository, r.repositories)
                ]
                if needed:
                    linter.report.summaries.append(
                        f"{label}: {kind} {name!r} image {image} needs signatures: "
                        + "; ".join(_describe(r) for r in needed)
                        + " (verified against its registry by the daemon at Mount time)"
                    )
