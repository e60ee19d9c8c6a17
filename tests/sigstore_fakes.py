"""A private Sigstore for tests: a Fulcio-like CA, a CT log key and a Rekor key, made here.

It writes a ``trusted_root.json`` (protobuf-specs TrustedRoot, v0.1) naming them, and issues
what a keyless ``cosign sign`` of an image produces with the new bundle format: a Sigstore
bundle v0.3 holding a DSSE envelope over an in-toto statement (predicate type
``https://sigstore.dev/cosign/sign/v1``, subject = the image digest), signed by a short-lived
leaf certificate (Sigstore OIDC issuer extensions 1.3.6.1.4.1.57264.1.1 and .1.8, the identity
as SAN, one embedded SCT signed by the CT key) and logged as a Rekor ``dsse`` 0.0.1 entry in a
one-leaf tree: inclusion proof, checkpoint signed by the Rekor key, and a signed entry
timestamp (the inclusion promise) giving the verified signing time. Every knob a negative case
needs is a parameter: identity, issuer, certificate validity, the CA that signs the leaf, the
statement's subject and predicate type.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO = "application/vnd.in-toto+json"
ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ORIGIN = "rekor.keygate.test - 1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Any) -> bytes:
    return hashlib.sha256(spki(key)).digest()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _pae(payload_type: str, body: bytes) -> bytes:
    return f"DSSEv1 {len(payload_type)} {payload_type} {len(body)} ".encode() + body


@dataclass
class FakeCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, name: str, now: dt.datetime) -> FakeCA:
        key = ec.generate_private_key(ec.SECP384R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keygate-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384())
        )
        return cls(key, cert)


@dataclass
class FakeSigstore:
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))
    ca: FakeCA = field(init=False)
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        self.ca = FakeCA.make("fulcio.keygate.test", self.now)

    def trusted_root(self) -> dict[str, Any]:
        start = {"start": (self.now - dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(spki(key.public_key())),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": start,
                },
                "logId": {"keyId": b64(key_id(key.public_key()))},
            }

        return {
            "mediaType": TRUSTED_ROOT,
            "tlogs": [log(self.rekor_key, "https://rekor.keygate.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "keygate-test", "commonName": "fulcio.keygate.test"},
                    "uri": "https://fulcio.keygate.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": b64(self.ca.cert.public_bytes(serialization.Encoding.DER))}
                        ]
                    },
                    "validFor": start,
                }
            ],
            "ctlogs": [log(self.ct_key, "https://ctfe.keygate.test")],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Any) -> Any:
        path.write_text(json.dumps(self.trusted_root()))
        return path

    # -- the leaf certificate -------------------------------------------------------------------

    def leaf(
        self,
        identity: str,
        issuer: str,
        *,
        not_before: dt.datetime,
        lifetime: dt.timedelta = dt.timedelta(minutes=10),
        ca: FakeCA | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        ca = ca or self.ca
        key = ec.generate_private_key(ec.SECP256R1())
        san: x509.GeneralName = (
            x509.RFC822Name(identity)
            if "@" in identity and "://" not in identity
            else x509.UniformResourceIdentifier(identity)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V2, _der(0x0C, issuer.encode())), critical=False)
        )
        precert = builder.sign(ca.key, hashes.SHA384())
        tbs = precert.tbs_certificate_bytes
        timestamp = int(not_before.timestamp() * 1000) + 1000
        issuer_key_hash = key_id(ca.key.public_key())
        signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + issuer_key_hash
        signed += len(tbs).to_bytes(3, "big") + tbs + struct.pack("!H", 0)
        signature = _sign(self.ct_key, signed)
        sct = struct.pack("!B", 0) + key_id(self.ct_key.public_key()) + struct.pack("!QH", timestamp, 0)
        sct += struct.pack("!BBH", 4, 3, len(signature)) + signature
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        cert = builder.add_extension(
            x509.UnrecognizedExtension(SCT_LIST, _der(0x04, sct_list)), critical=False
        ).sign(ca.key, hashes.SHA384())
        assert cert.tbs_precertificate_bytes == tbs
        return key, cert

    # -- the bundle ---------------------------------------------------------------------------

    def statement(self, digest: str, repository: str, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": repository, "digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": SIGN_PREDICATE,
            "predicate": {},
        }
        body.update(changes)
        return body

    def bundle(
        self,
        statement: dict[str, Any],
        *,
        identity: str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main",
        issuer: str = "https://token.actions.githubusercontent.com",
        signed_at: dt.datetime | None = None,
        lifetime: dt.timedelta = dt.timedelta(minutes=10),
        integrated_after: dt.timedelta = dt.timedelta(seconds=30),
        ca: FakeCA | None = None,
        payload_type: str = IN_TOTO,
        tamper_payload: bool = False,
    ) -> bytes:
        not_before = signed_at or (self.now - dt.timedelta(minutes=5))
        key, cert = self.leaf(identity, issuer, not_before=not_before, lifetime=lifetime, ca=ca)
        payload = json.dumps(statement, separators=(",", ":")).encode()
        sig = _sign(key, _pae(payload_type, payload))
        envelope = {
            "payload": b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": b64(sig), "keyid": ""}],
        }
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest(),
                    },
                    "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                    "signatures": [{"signature": b64(sig), "verifier": b64(cert_pem)}],
                },
            }
        )
        log_id = key_id(self.rekor_key.public_key())
        root = hashlib.sha256(b"\x00" + body).digest()
        note = f"{ORIGIN}\n1\n{b64(root)}\n"
        note_sig = _sign(self.rekor_key, note.encode())
        checkpoint = note + f"\n\u2014 {ORIGIN.split()[0]} {b64(log_id[:4] + note_sig)}\n"
        integrated = int((not_before + integrated_after).timestamp())
        set_payload = rfc8785.dumps(
            {"body": b64(body), "integratedTime": integrated, "logID": log_id.hex(), "logIndex": 0}
        )
        if tamper_payload:
            envelope["payload"] = b64(payload.replace(b"sha256", b"sha512", 1))
        bundle = {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [
                    {
                        "logIndex": "0",
                        "logId": {"keyId": b64(log_id)},
                        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                        "integratedTime": str(integrated),
                        "inclusionPromise": {"signedEntryTimestamp": b64(_sign(self.rekor_key, set_payload))},
                        "inclusionProof": {
                            "logIndex": "0",
                            "rootHash": b64(root),
                            "treeSize": "1",
                            "hashes": [],
                            "checkpoint": {"envelope": checkpoint},
                        },
                        "canonicalizedBody": b64(body),
                    }
                ],
            },
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle).encode()
