"""The pod's own service-account token for an audience, from the Mount request."""

from __future__ import annotations

from collections.abc import Sequence

from provider.domain import FetchContext
from provider.errors import Unauthenticated


def pod_token(ctx: FetchContext, audiences: Sequence[str], also: str = "") -> str:
    """The first token the Mount carries for one of ``audiences``; else an actionable refusal.

    The driver sends one token per audience listed in the CSIDriver's ``spec.tokenRequests``, so
    the fix is always there (``also`` adds a backend-specific alternative).
    """
    for audience in audiences:
        token = ctx.token_for(audience)
        if token:
            return token
    want = audiences[0]
    present = ", ".join(repr(a) for a in sorted(ctx.tokens)) or "none"
    raise Unauthenticated(
        f"no service-account token for audience {want!r} in the mount request (tokens present: "
        f"{present}); add '- audience: {want}' to spec.tokenRequests of the CSIDriver "
        f"secrets-store.csi.k8s.io{also}"
    )
