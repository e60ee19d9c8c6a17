"""cosign's signature format: the ``sha256-<hex>.sig`` manifest and its simple-signing payloads.

cosign stores one OCI image manifest per signed image, tagged ``sha256-<hex>.sig`` in the
image's repository; each layer is a simple-signing JSON payload (media type
``application/vnd.dev.cosign.simplesigning.v1+json``) with the base64 signature over the
payload bytes in the layer annotation ``dev.cosignproject.cosign/signature``. A payload binds
the signature to an image through ``critical.image.docker-manifest-digest``; its
``critical.type`` must be ``cosign container image signature``. The payload is parsed only
after its signature verified, and strictly (no duplicate keys), so a second, unsigned reading
of the same bytes cannot exist.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from provider.attest.reasons import Denial
from provider.attest.signatures.registry import INDEX_TYPE, MANIFEST_TYPES, RegistryFailure
from provider.attest.signatures.requirements import VerifyingKey
from provider.strict_json import loads as strict_json

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
COSIGN_TYPE = "cosign container image signature"
MAX_LAYERS = 32
MAX_SIGNATURE_CHARS = 4096
DIGEST_CHARS = len("sha256:") + 64
LAYER_DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")

# How far a signature got before it failed: the furthest one is the reason the Mount reports.
_RANK = {
    Denial.SIGNATURE_MISSING: 0,
    Denial.SIGNATURE_INVALID: 1,
    Denial.SIGNATURE_IDENTITY_MISMATCH: 2,
    Denial.SIGNATURE_DIGEST_MISMATCH: 3,
}


def signature_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``, where cosign pushes the image's signatures."""
    return digest.replace(":", "-", 1) + ".sig"


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    size: int
    signature: bytes
    has_certificate: bool


@dataclass(frozen=True, slots=True)
class Failure:
    reason: Denial
    message: str

    def worse_than(self, other: Failure | None) -> bool:
        return other is None or _RANK.get(self.reason, 0) > _RANK.get(other.reason, 0)


def parse_manifest(media_type: str, body: bytes) -> list[Layer]:
    """The simple-signing layers of a ``.sig`` manifest; RegistryFailure when it is not one."""
    try:
        doc = strict_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RegistryFailure(Denial.SIGNATURE_INVALID, "its signature manifest is not valid JSON") from None
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    kind = declared or media_type
    if not isinstance(doc, dict) or kind == INDEX_TYPE or kind not in MANIFEST_TYPES:
        raise RegistryFailure(
            Denial.SIGNATURE_INVALID,
            f"its signature tag holds a {str(kind)[:80]!r}, not an OCI image manifest of cosign signatures",
        )
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryFailure(Denial.SIGNATURE_INVALID, "its signature manifest has no layers list")
    out: list[Layer] = []
    for item in layers:
        if not isinstance(item, dict) or item.get("mediaType") != SIMPLE_SIGNING:
            continue
        digest, size = item.get("digest"), item.get("size")
        raw = item.get("annotations")
        annotations: dict[str, Any] = raw if isinstance(raw, dict) else {}
        encoded = annotations.get(SIGNATURE_ANNOTATION)
        if not (isinstance(digest, str) and LAYER_DIGEST_RE.fullmatch(digest)):
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            continue
        if not isinstance(encoded, str) or not encoded or len(encoded) > MAX_SIGNATURE_CHARS:
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        out.append(Layer(digest, size, signature, isinstance(annotations.get(CERTIFICATE_ANNOTATION), str)))
    return out


def signature_valid(key: VerifyingKey, signature: bytes, payload: bytes) -> bool:
    """cosign signs the payload bytes: ECDSA (ASN.1 DER) over SHA-256 (SHA-384 also tried on
    P-384 keys, as KMS keys sign), or RSA PKCS#1 v1.5 over SHA-256."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithms: list[hashes.HashAlgorithm] = [hashes.SHA256()]
            if key.curve.name == "secp384r1":
                algorithms.append(hashes.SHA384())
            for algorithm in algorithms:
                try:
                    key.verify(signature, payload, ec.ECDSA(algorithm))
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _docker_hub(repository: str) -> str:
    host, sep, rest = repository.partition("/")
    host = host.lower()
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    return f"{host}{sep}{rest}"


def reference_matches(reference: str, repository: str) -> bool:
    """The payload's ``docker-reference`` names the running image's repository (tag/digest ignored)."""
    from provider.attest.images import parse_image

    if not reference or len(reference) > 1024 or not reference.isascii() or not reference.isprintable():
        return False
    return _docker_hub(parse_image(reference).repository) == _docker_hub(repository)


def check_payload(payload: bytes, digest: str, repository: str) -> Failure | None:
    """Why a correctly signed payload does not vouch for ``repository@digest``; None if it does."""
    try:
        doc = strict_json(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Failure(Denial.SIGNATURE_INVALID, "has a signed payload that is not valid JSON")
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        return Failure(Denial.SIGNATURE_INVALID, "has a signed payload without a `critical` section")
    if critical.get("type") != COSIGN_TYPE:
        shown = str(critical.get("type"))[:80]
        return Failure(
            Denial.SIGNATURE_INVALID,
            f"has a signed payload of type {shown!r}, not {COSIGN_TYPE!r} "
            "(an attestation is not a signature)",
        )
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if signed != digest:
        shown = str(signed)[:DIGEST_CHARS]
        return Failure(
            Denial.SIGNATURE_DIGEST_MISMATCH,
            f"has a valid signature, but for image digest {shown}, not the running {digest} "
            "(a signature copied from another image)",
        )
    identity = critical.get("identity")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    if not isinstance(reference, str) or not reference_matches(reference, repository):
        shown = str(reference)[:200]
        return Failure(
            Denial.SIGNATURE_IDENTITY_MISMATCH,
            f"has a valid signature made for repository {shown!r}, not {repository} "
            "(sign the image where it runs from, or mirror it with `cosign copy` and re-sign)",
        )
    return None


def verify_layers(
    layers: Sequence[Layer],
    payloads: Sequence[bytes | RegistryFailure | None],
    keys: Sequence[VerifyingKey],
    digest: str,
    repository: str,
) -> Failure | None:
    """None when one layer's payload is signed by one of ``keys`` and vouches for the image;
    else the failure of the signature that got furthest."""
    worst: Failure | None = None
    for layer, payload in zip(layers, payloads, strict=True):
        if payload is None:
            failure = Failure(
                Denial.SIGNATURE_INVALID, f"has a signature whose payload {layer.digest[:19]}... is missing"
            )
        elif isinstance(payload, RegistryFailure):
            failure = Failure(payload.reason, f"has an unusable signature: {payload.message}")
        elif not any(signature_valid(key, layer.signature, payload) for key in keys):
            failure = Failure(
                Denial.SIGNATURE_INVALID,
                "is not signed by the policy's key"
                + (f" ({len(layers)} signatures checked)" if len(layers) > 1 else "")
                + ": signed by another key, or the signature was altered",
            )
        else:
            found = check_payload(payload, digest, repository)
            if found is None:
                return None
            failure = found
        if failure.worse_than(worst):
            worst = failure
    return worst
