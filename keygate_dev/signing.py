"""Sign images the way cosign does and push the signatures to :mod:`keygate_dev.oci_registry`
(for the tests and ``keygate demo``).

The signature artifact is cosign's: an OCI image manifest tagged ``sha256-<hex>.sig`` whose
layers are simple-signing payloads with the base64 signature in the layer annotation.
Everything a negative case needs to vary (the payload's fields, the signature bytes, the
manifest) is a parameter, so each case builds exactly the artifact an attacker could push.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keygate_dev.oci_registry import OCI_CONFIG, OCI_MANIFEST, OCIRegistry

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_TYPE = "cosign container image signature"


@dataclass
class CosignKey:
    private: Any

    @classmethod
    def generate(cls, kind: str = "p256") -> CosignKey:
        if kind == "p256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if kind == "p384":
            return cls(ec.generate_private_key(ec.SECP384R1()))
        if kind == "p521":
            return cls(ec.generate_private_key(ec.SECP521R1()))
        return cls(rsa.generate_private_key(65537, int(kind.removeprefix("rsa"))))

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def write_public(self, path: Path) -> Path:
        path.write_bytes(self.public_pem())
        return path

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return bytes(self.private.sign(data, padding.PKCS1v15(), hashes.SHA256()))
        return bytes(self.private.sign(data, ec.ECDSA(hashes.SHA256())))


def payload(repository: str, digest: str, **critical: Any) -> bytes:
    """cosign's simple-signing payload; ``critical`` overrides (``...`` removes a field)."""
    body: dict[str, Any] = {
        "identity": {"docker-reference": repository},
        "image": {"docker-manifest-digest": digest},
        "type": COSIGN_TYPE,
    }
    for key, value in critical.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps({"critical": body, "optional": None}, separators=(",", ":")).encode()


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def layer(registry: OCIRegistry, name: str, data: bytes, signature: bytes | str) -> dict[str, Any]:
    encoded = signature if isinstance(signature, str) else base64.b64encode(signature).decode()
    return {
        "mediaType": SIMPLE_SIGNING,
        "digest": registry.push_blob(name, data),
        "size": len(data),
        "annotations": {SIGNATURE_ANNOTATION: encoded},
    }


def push_signatures(registry: OCIRegistry, name: str, digest: str, layers: list[dict[str, Any]]) -> str:
    """The ``.sig`` manifest holding ``layers``, tagged for ``digest``; returns the manifest digest."""
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": registry.push_blob(name, config), "size": len(config)},
        "layers": layers,
    }
    return registry.push_manifest(name, json.dumps(manifest).encode(), tag=signature_tag(digest))


def cosign_sign(registry: OCIRegistry, name: str, digest: str, key: CosignKey, **critical: Any) -> bytes:
    """What ``cosign sign --key`` pushes for ``name@digest``; returns the signed payload."""
    data = payload(f"{registry.host}/{name}", digest, **critical)
    push_signatures(registry, name, digest, [layer(registry, name, data, key.sign(data))])
    return data
