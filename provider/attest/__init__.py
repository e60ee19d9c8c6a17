"""Attestation: prove who the pod is before any backend runs.

:class:`Attestor` is what the mount pipeline calls. The only implementation that does not verify
anything is :class:`InsecureTrustAttributes`, for demos and local development; its name says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from provider.request import MountContext
from providers.base import PodIdentity, SecretObject


class Attestor(Protocol):
    """Verifies the pod behind a Mount; raises Unauthenticated or PermissionDenied to refuse."""

    async def attest(self, ctx: MountContext, objects: Sequence[SecretObject]) -> PodIdentity: ...


class InsecureTrustAttributes:
    """Believes the kubelet-supplied pod attributes without checking any token or image."""

    async def attest(self, ctx: MountContext, objects: Sequence[SecretObject]) -> PodIdentity:
        return PodIdentity(
            namespace=ctx.pod.namespace,
            name=ctx.pod.name,
            uid=ctx.pod.uid,
            service_account=ctx.pod.service_account,
        )
