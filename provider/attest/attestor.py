"""The default :class:`~provider.attest.Attestor`: token, release policy, then the Pod's images.

Order matters for cost and for clarity: the token (local, microseconds with cached keys) proves
who is asking; the release policy (local) says whether that identity may have these objects;
only then is the Pod read from the API to check its UID, service account, node and images.
On a rotation, a policy with no rule for the identity (``default: deny``) is a
revocation, not a failure (:mod:`provider.revocation`): the Pod is checked first, and only then
is the refusal marked ``gone`` (``Gone.POLICY``), so a replaced or foreign pod still fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence

from provider import metrics
from provider.attest.images import ImageRules, check_images
from provider.attest.kube import KubeAPI, PodInfo
from provider.attest.policy import PolicyStore
from provider.attest.reasons import Denial, reason_of, tag
from provider.attest.signatures.checker import SignatureChecker
from provider.attest.tokens import TokenVerifier
from provider.domain import PodIdentity, SecretObject
from provider.errors import Gone, KeygateError, PermissionDenied, Unauthenticated, gone
from provider.request import ATTR_TOKENS, MountContext

CSI_DRIVER = "secrets-store.csi.k8s.io"


def _pod_mismatch(message: str) -> PermissionDenied:
    return tag(PermissionDenied(message), Denial.POD_MISMATCH)


class PodAttestor:
    """Verifies the pod behind a Mount before any backend runs; fails closed."""

    def __init__(
        self,
        verifier: TokenVerifier,
        policy: PolicyStore,
        kube: KubeAPI | None,
        *,
        node_name: str = "",
        signatures: SignatureChecker | None = None,
    ) -> None:
        self.signatures = signatures
        self.verifier = verifier
        self.policy = policy
        self.kube = kube
        self.node_name = node_name

    @property
    def audience(self) -> str:
        return self.verifier.audience

    def _token(self, ctx: MountContext) -> str:
        hint = (
            f"add `tokenRequests: [{{audience: {self.audience}}}]` to the CSIDriver `{CSI_DRIVER}` "
            "(and requiresRepublish: true so tokens are renewed)"
        )
        if not ctx.tokens_present:
            raise tag(
                Unauthenticated(
                    f"the mount carries no service-account token ({ATTR_TOKENS} is absent); {hint}"
                ),
                Denial.TOKEN_MISSING,
            )
        token = ctx.tokens.get(self.audience)
        if token is None:
            have = ", ".join(repr(a) for a in sorted(ctx.tokens)) or "none"
            raise tag(
                Unauthenticated(
                    f"the mount carries no token for audience {self.audience!r} "
                    f"(audiences present: {have}); {hint}"
                ),
                Denial.TOKEN_MISSING,
            )
        return token

    async def attest(self, ctx: MountContext, objects: Sequence[SecretObject]) -> PodIdentity:
        """Attest, counting every refusal in ``keygate_attestation_denials_total`` by category."""
        try:
            return await self._attest(ctx, objects)
        except KeygateError as exc:
            reason = reason_of(exc)
            tag(exc, reason)
            metrics.record_denial(reason.value)
            raise

    async def _attest(self, ctx: MountContext, objects: Sequence[SecretObject]) -> PodIdentity:
        pod = ctx.pod
        await self.verifier.verify(self._token(ctx), pod)
        try:
            rule = self.policy.current().rule_for(pod.namespace, pod.service_account)
        except PermissionDenied as exc:
            if not ctx.current_versions:
                raise
            # A rotation: the policy refuses a verified identity, a revocation once the Pod matches.
            if self.kube is not None:
                await self._read_pod(self.kube, ctx)
            raise gone(exc, Gone.POLICY) from None
        if rule is not None:
            for obj in objects:
                rule.check_object(obj, pod.namespace)
        if self.kube is not None:
            where = f"pod {pod.namespace}/{pod.name}"
            info = await self._read_pod(self.kube, ctx)
            check_images(info.containers, rule.images if rule is not None else ImageRules(), where)
            if rule is not None and rule.images.signatures:
                if self.signatures is None:
                    self.signatures = SignatureChecker()
                await self.signatures.check(info.containers, rule.images.signatures, where)
        elif rule is not None and rule.images.signatures:
            raise tag(
                PermissionDenied(
                    f"release policy rule {rule.name!r} requires image signatures, but the daemon does not "
                    "read the Pod (insecure_skip_image_check), so its images cannot be verified"
                ),
                Denial.SIGNATURE_MISSING,
            )
        return PodIdentity(
            namespace=pod.namespace,
            name=pod.name,
            uid=pod.uid,
            service_account=pod.service_account,
            node_identity=rule.node_identity if rule is not None else frozenset(),
        )

    async def _read_pod(self, kube: KubeAPI, ctx: MountContext) -> PodInfo:
        """The Pod from the API, refused unless its UID, service account and node match the mount."""
        pod = ctx.pod
        where = f"pod {pod.namespace}/{pod.name}"
        info = await kube.get_pod(pod.namespace, pod.name)
        if info.uid != pod.uid:
            raise _pod_mismatch(
                f"{where} in the Kubernetes API has UID {info.uid!r}, not the mount's {pod.uid!r} "
                "(the pod was replaced; the kubelet will retry with the new pod)"
            )
        if info.service_account != pod.service_account:
            raise _pod_mismatch(
                f"{where} runs as service account {info.service_account!r} in the API, "
                f"not {pod.service_account!r} as the mount claims"
            )
        if self.node_name and info.node_name and info.node_name != self.node_name:
            raise _pod_mismatch(f"{where} is scheduled on node {info.node_name!r}, not this node")
        return info

    def check_release(self, identity: PodIdentity, objects: Sequence[SecretObject]) -> None:
        """The release policy again, for objects known only after attestation (a selector's
        expansion, :mod:`provider.expand`); refusals are counted like those of ``attest``."""
        try:
            rule = self.policy.current().rule_for(identity.namespace, identity.service_account)
            if rule is not None:
                for obj in objects:
                    rule.check_object(obj, identity.namespace)
        except KeygateError as exc:
            reason = reason_of(exc)
            tag(exc, reason)
            metrics.record_denial(reason.value)
            raise

    async def aclose(self) -> None:
        await self.verifier.aclose()
        if self.signatures is not None:
            await self.signatures.aclose()
        if self.kube is not None:
            await self.kube.aclose()
