"""Sigstore keyless verification with sigstore-python (the ``signatures`` extra), offline.

What keygate accepts: the Sigstore bundle (media type
``application/vnd.dev.sigstore.bundle.v0.3+json``) that cosign 2.4+ (``--new-bundle-format``,
the default from cosign 3) attaches to an image as an OCI 1.1 referrer: found with the
referrers API (``GET /v2/<name>/referrers/<digest>``) or, where a registry lacks it, the
referrers tag ``sha256-<hex>``; each referring manifest whose ``artifactType`` is the bundle
media type and whose ``subject`` is the image, with the bundle as its first layer. The bundle
must carry a DSSE envelope over an in-toto statement of predicate type
``https://sigstore.dev/cosign/sign/v1`` whose subject is the image digest. sigstore-python
verifies the certificate chain against the Fulcio CAs of the policy's trusted root at the
Rekor-attested signing time, the embedded SCT, the Rekor inclusion proof, checkpoint and
promise, and the DSSE signature; keygate checks the identity (issuer and SAN) itself.

Not accepted: the legacy ``.sig`` layers with ``dev.sigstore.cosign/certificate`` /
``.../bundle`` annotations (their Rekor SET alone is not something sigstore-python 4 verifies
offline), message-signature bundles (they carry no statement of which image was signed) and
bundles whose only signed time is an RFC 3161 timestamp from a TSA missing from the root.

Only the trusted root file named in the policy is trusted: no TUF refresh, no Rekor lookup,
no network but the image's own registry.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from provider.attest.reasons import Denial
from provider.attest.signatures.cosign import Failure
from provider.attest.signatures.registry import INDEX_TYPE, RegistryClient, RegistryFailure
from provider.attest.signatures.requirements import RequirementError
from provider.strict_json import loads as strict_json

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from provider.attest.signatures.requirements import KeylessIdentity

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO = "application/vnd.in-toto+json"
ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
OTHERNAME_SAN = "1.3.6.1.4.1.57264.1.7"
MAX_BUNDLES = 8
MAX_SAN_CHARS = 4096  # a policy regexp never runs over longer (attacker-chosen) identities

_RANK = {
    Denial.SIGNATURE_MISSING: 0,
    Denial.SIGNATURE_INVALID: 1,
    Denial.CERTIFICATE_UNTRUSTED: 2,
    Denial.SIGNATURE_IDENTITY_MISMATCH: 3,
    Denial.SIGNATURE_DIGEST_MISMATCH: 4,
}


def load_trusted_root(data: bytes, source: str, where: str) -> Any:
    """A ``sigstore.models.TrustedRoot`` from trusted_root.json bytes; RequirementError if unusable."""
    try:
        from sigstore.models import TrustedRoot
        from sigstore.verify import Verifier
        from sigstore_models.trustroot import v1 as trustroot_v1
    except ImportError:
        raise RequirementError(
            f"{where}: keyless signatures need sigstore-python: install keygate[signatures]"
        ) from None
    try:
        root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
        root.get_fulcio_certs()
        Verifier(trusted_root=root)  # needs a Rekor log instance
    except Exception as exc:  # noqa: BLE001 - pydantic and sigstore raise many kinds
        raise RequirementError(
            f"{where}: {source} is not a usable Sigstore trusted root (trusted_root.json, media type "
            f"application/vnd.dev.sigstore.trustedroot+json;version=0.1, with Fulcio CAs, a Rekor "
            f"log and a CT log): {type(exc).__name__}"
        ) from None
    return root


def _utf8_der(value: bytes) -> str:
    """A DER UTF8String's text (Fulcio's v2 extensions), or the raw bytes as text (v1)."""
    if len(value) >= 2 and value[0] == 0x0C:
        length, start = value[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, start = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
        return value[start : start + length].decode()
    return value.decode()


def certificate_identity(cert: Certificate) -> tuple[str, list[str]]:
    """(OIDC issuer, SAN identities) of a Fulcio certificate; issuer "" when absent."""
    from cryptography import x509

    issuer = ""
    for oid in (ISSUER_V2, ISSUER_V1):
        try:
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(ext, "value", b"")
        try:
            issuer = _utf8_der(raw) if oid == ISSUER_V2 else raw.decode()
        except UnicodeDecodeError:
            continue
        break
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return issuer, []
    names = [
        *san.get_values_for_type(x509.RFC822Name),
        *san.get_values_for_type(x509.UniformResourceIdentifier),
    ]
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id.dotted_string == OTHERNAME_SAN:
            with contextlib.suppress(UnicodeDecodeError):
                names.append(_utf8_der(other.value))
    return issuer, names


def _policy(identity: KeylessIdentity) -> Any:
    """A sigstore VerificationPolicy checking issuer and SAN, whole strings, with its own error."""
    from sigstore.errors import VerificationError

    class IdentityMismatch(VerificationError):
        pass

    class Policy:
        mismatch = IdentityMismatch

        def verify(self, cert: Certificate) -> None:
            issuer, names = certificate_identity(cert)
            if issuer != identity.issuer:
                raise IdentityMismatch(
                    f"is signed through OIDC issuer {issuer[:200]!r}, not {identity.issuer}"
                )
            if identity.subject_regexp is not None:
                ok = any(len(n) <= MAX_SAN_CHARS and identity.subject_regexp.fullmatch(n) for n in names)
            else:
                ok = identity.subject in names
            if not ok:
                shown = ", ".join(repr(n[:200]) for n in names[:4]) or "none"
                raise IdentityMismatch(f"is signed by {shown}, not {identity.describe()}")

    return Policy()


def _verify_bundle(raw: bytes, digest: str, identity: KeylessIdentity) -> Failure | None:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

    try:
        bundle = Bundle.from_json(raw)
    except Exception:  # noqa: BLE001 - pydantic, base64 and sigstore all raise here
        return Failure(
            Denial.SIGNATURE_INVALID, "has a Sigstore bundle that is not valid (unreadable or incomplete)"
        )
    policy = _policy(identity)
    try:
        payload_type, payload = Verifier(trusted_root=identity.trusted_root).verify_dsse(bundle, policy)
    except policy.mismatch as exc:
        return Failure(Denial.SIGNATURE_IDENTITY_MISMATCH, str(exc))
    except SigstoreError as exc:
        text = str(exc)[:300]
        if "DSSE" in text or "log entry payload hash" in text or "log entry signatures" in text:
            return Failure(
                Denial.SIGNATURE_INVALID, f"has a Sigstore bundle whose signature does not verify ({text})"
            )
        return Failure(
            Denial.CERTIFICATE_UNTRUSTED,
            f"has a Sigstore signature the policy's trusted root {identity.trusted_root_path} does not "
            f"vouch for ({text})",
        )
    except Exception as exc:  # noqa: BLE001 - a malformed bundle must refuse, never crash the Mount
        return Failure(
            Denial.SIGNATURE_INVALID, f"has a Sigstore bundle keygate cannot verify ({type(exc).__name__})"
        )
    if payload_type != IN_TOTO:
        return Failure(
            Denial.SIGNATURE_INVALID,
            f"has a signed DSSE payload of type {payload_type[:80]!r}, not {IN_TOTO}",
        )
    try:
        statement = strict_json(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Failure(Denial.SIGNATURE_INVALID, "has a signed in-toto statement that is not valid JSON")
    if not isinstance(statement, dict) or statement.get("predicateType") != SIGN_PREDICATE:
        kind = str(statement.get("predicateType") if isinstance(statement, dict) else None)[:120]
        return Failure(
            Denial.SIGNATURE_INVALID,
            f"has a signed statement of predicate type {kind!r}, not {SIGN_PREDICATE} "
            "(an attestation is not a signature)",
        )
    subjects = statement.get("subject")
    want = digest.removeprefix("sha256:")
    if not isinstance(subjects, list) or not any(
        isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == want
        for s in subjects
    ):
        return Failure(
            Denial.SIGNATURE_DIGEST_MISMATCH,
            f"has a valid Sigstore signature, but not for the running digest {digest} "
            "(made for another image)",
        )
    return None


def _worse(a: Failure, b: Failure | None) -> bool:
    return b is None or _RANK.get(a.reason, 0) > _RANK.get(b.reason, 0)


async def _bundles(registry: RegistryClient, repository: str, digest: str) -> list[bytes]:
    index = await registry.referrers(repository, digest)
    if index is None:
        return []
    try:
        doc = json.loads(index)
        manifests = (
            doc.get("manifests")
            if isinstance(doc, dict) and doc.get("mediaType", INDEX_TYPE) == INDEX_TYPE
            else None
        )
    except (ValueError, UnicodeDecodeError, RecursionError):
        manifests = None
    if not isinstance(manifests, list):
        raise RegistryFailure(Denial.SIGNATURE_INVALID, "its referrers list is not an OCI image index")
    wanted = [
        m["digest"]
        for m in manifests
        if isinstance(m, dict)
        and m.get("artifactType") == BUNDLE_TYPE
        and isinstance(m.get("digest"), str)
        and m["digest"].startswith("sha256:")
        and len(m["digest"]) == 71
    ][:MAX_BUNDLES]
    out: list[bytes] = []
    for manifest_digest in wanted:
        found = await registry.manifest(repository, manifest_digest)
        if found is None:
            continue
        try:
            doc = strict_json(found[1])
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        subject = doc.get("subject") if isinstance(doc, dict) else None
        layers = doc.get("layers") if isinstance(doc, dict) else None
        if not (
            isinstance(subject, dict)
            and subject.get("digest") == digest
            and isinstance(layers, list)
            and layers
        ):
            continue
        first = layers[0]
        if (
            not isinstance(first, dict)
            or first.get("mediaType") != BUNDLE_TYPE
            or not isinstance(first.get("digest"), str)
        ):
            continue
        try:
            blob = await registry.blob(repository, first["digest"])
        except RegistryFailure as exc:
            if exc.reason is Denial.REGISTRY_UNREACHABLE:
                raise
            continue
        if blob is not None:
            out.append(blob)
    return out


async def verify_keyless(
    registry: RegistryClient, repository: str, digest: str, identity: KeylessIdentity
) -> Failure | None:
    """None when one of the image's Sigstore bundles verifies for ``identity``; else why not."""
    bundles = await _bundles(registry, repository, digest)
    if not bundles:
        return Failure(
            Denial.SIGNATURE_MISSING,
            f"has no Sigstore signature bundle (no referrer of artifactType {BUNDLE_TYPE} for "
            f"{digest}); sign it with `cosign sign --new-bundle-format {repository}@{digest}`",
        )
    worst: Failure | None = None
    for raw in bundles:
        failure = _verify_bundle(raw, digest, identity)
        if failure is None:
            return None
        if _worse(failure, worst):
            worst = failure
    return worst
