"""Certificates and keys as the Azure provider writes them: PKCS#12 to PEM (key, then the chain
leaf to root), and a Key Vault JSON web key's public half as PEM."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from provider.errors import InvalidSPC


def pfx_to_pem(value: str, where: str) -> str:
    """PKCS#12 (base64, no password, as Key Vault stores it) to PEM: the private key, then the
    certificate chain ordered leaf -> intermediates -> root, like the Azure provider writes it.
    """
    try:
        data = base64.b64decode(value, validate=True)
        bundle = pkcs12.load_pkcs12(data, None)
    except (ValueError, binascii.Error, TypeError):
        raise InvalidSPC(f"{where}: the certificate-backed secret is not a readable PKCS#12 bundle") from None
    certs = [c.certificate for c in ([bundle.cert] if bundle.cert else []) + list(bundle.additional_certs)]
    parts: list[bytes] = []
    if bundle.key is not None:
        parts.append(
            bundle.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    key_public = (
        bundle.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if bundle.key is not None
        else None
    )
    parts.extend(c.public_bytes(serialization.Encoding.PEM) for c in order_chain(certs, key_public))
    return b"".join(parts).decode()


def order_chain(certs: list[x509.Certificate], key_public: bytes | None = None) -> list[x509.Certificate]:
    """Leaf first, then each issuer in turn; certificates outside the chain keep their order last.

    The leaf is the certificate of the private key when there is one, else the certificate that
    issued no other certificate in the bundle.
    """
    if not certs:
        return []

    def spki(cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    leaf = next((c for c in certs if key_public is not None and spki(c) == key_public), None)
    if leaf is None:
        issuers = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
        leaf = next((c for c in certs if c.subject.public_bytes() not in issuers), certs[0])
    ordered = [leaf]
    remaining = [c for c in certs if c is not leaf]
    current = leaf
    while current.issuer != current.subject:
        parent = next((c for c in remaining if c.subject == current.issuer), None)
        if parent is None:
            break
        ordered.append(parent)
        remaining.remove(parent)
        current = parent
    return ordered + remaining


_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
    "P-256K": ec.SECP256K1,
}


def _enum_text(value: Any) -> str:
    """The wire text of an SDK enum member (``JsonWebKeyType.EC`` -> ``EC``) or plain string."""
    return str(getattr(value, "value", value) or "")


def public_key_pem(where: str, jwk: Any) -> bytes:
    """A Key Vault JSON web key's public half as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo)."""
    kty = _enum_text(jwk.kty)
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kty in ("RSA", "RSA-HSM"):
        public = rsa.RSAPublicNumbers(
            int.from_bytes(bytes(jwk.e), "big"), int.from_bytes(bytes(jwk.n), "big")
        ).public_key()
    elif kty in ("EC", "EC-HSM"):
        crv = _enum_text(jwk.crv)
        curve = _CURVES.get(crv)
        if curve is None:
            raise InvalidSPC(f"{where}: key curve {crv[:20]!r} is not supported")
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(bytes(jwk.x), "big"), int.from_bytes(bytes(jwk.y), "big"), curve()
        ).public_key()
    else:
        raise InvalidSPC(f"{where}: key type {kty[:20]!r} has no public key to export (RSA and EC keys only)")
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
