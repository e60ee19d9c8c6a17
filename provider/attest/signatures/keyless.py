"""Sigstore keyless verification with sigstore-python (the ``signatures`` extra), offline.

Only the trust root file named in the policy is trusted: no TUF refresh, no Rekor lookup.
"""

from __future__ import annotations

from typing import Any

from provider.errors import KeygateError


def load_trusted_root(data: bytes, source: str, where: str) -> Any:
    """A ``sigstore.models.TrustedRoot`` from trusted_root.json bytes; KeygateError if unusable."""
    try:
        from sigstore.models import TrustedRoot
        from sigstore_models.trustroot import v1 as trustroot_v1
    except ImportError:
        raise KeygateError(
            f"{where}: keyless signatures need sigstore-python: install keygate[signatures]"
        ) from None
    try:
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
    except Exception as exc:  # noqa: BLE001 - pydantic and sigstore raise many kinds
        raise KeygateError(
            f"{where}: {source} is not a Sigstore trusted root (trusted_root.json, media type "
            f"application/vnd.dev.sigstore.trustedroot+json;version=0.1): {type(exc).__name__}"
        ) from None


async def verify_keyless(registry: Any, repository: str, digest: str, identity: Any) -> Any:
    """Placeholder until bundle verification lands: keyless requirements refuse (fail closed)."""
    from provider.attest.reasons import Denial
    from provider.attest.signatures.cosign import Failure

    return Failure(Denial.SIGNATURE_MISSING, "cannot be checked: keyless verification is not available yet")
