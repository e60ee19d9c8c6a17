"""Attestation: prove who the pod is before any backend runs.

:class:`Attestor` is what the mount pipeline calls. The default is
:class:`provider.attest.attestor.PodAttestor` (token, release policy, Pod and images; built by
``provider.app.build_attestor``). :class:`InsecureTrustAttributes` verifies nothing; it is used
only with the explicit ``insecure_skip_attestation`` option, and its name says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from provider.domain import PodIdentity, SecretObject
from provider.request import MountContext


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
