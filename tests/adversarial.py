"""Shared pieces of the adversarial suites (tests/test_adversarial_*.py).

Every hostile request goes through a real daemon's Mount over its Unix socket; the tokens are
signed with real keys (including deliberately weak ones, made here because ``cryptography``
refuses to generate them), and the issuer is the local Kubernetes API stand-in.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from keygate_dev.devcluster import DevCluster, PodSpec, k8s_key_id
from keygate_dev.driver_client import mount_request
from tests.kubeapi import AUDIENCE, driver_pod

SECRET = b"adversarial-secret-6b1f0e9a-never-shown"
STATUS = {
    "InvalidRequest": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidSecretProviderClass": grpc.StatusCode.INVALID_ARGUMENT,
    "Unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "PermissionDenied": grpc.StatusCode.PERMISSION_DENIED,
    "BackendUnavailable": grpc.StatusCode.UNAVAILABLE,
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _small_prime(bits: int, rng: random.Random) -> int:
    """A random prime of exactly ``bits`` bits (Miller-Rabin, 40 rounds: fine for test keys)."""
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _probably_prime(candidate, rng):
            return candidate


def _probably_prime(n: int, rng: random.Random) -> bool:
    if n % 2 == 0:
        return n == 2
    for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def weak_rsa(bits: int, seed: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key of ``bits`` bits; ``cryptography`` only generates 1024 and up, so build it."""
    rng = random.Random(seed or bits)
    e = 65537
    while True:
        p, q = _small_prime(bits // 2, rng), _small_prime(bits - bits // 2, rng)
        phi = (p - 1) * (q - 1)
        if p != q and (p * q).bit_length() == bits and phi % e:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def _uint(value: int, size: int) -> str:
    return b64url(value.to_bytes(size, "big"))


@dataclass
class HostileKey:
    """A signing key in any shape (weak ones included) that the DevCluster's JWKS can publish.

    ``jwk_overrides`` rewrites the published JWK (e.g. a wrong ``alg`` or a private member);
    ``alg`` is what tokens signed with it claim in their header.
    """

    private: Any
    alg: str
    kid: str
    jwk_overrides: Mapping[str, Any] | None = None

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        data: dict[str, Any]
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            data = {
                "kty": "RSA",
                "n": _uint(numbers.n, (numbers.n.bit_length() + 7) // 8),
                "e": _uint(numbers.e, 3),
            }
        elif isinstance(public, ec.EllipticCurvePublicKey):
            size = (public.curve.key_size + 7) // 8
            names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
            crv = names.get(
                public.curve.name, {"secp192r1": "P-192", "secp224r1": "P-224"}.get(public.curve.name)
            )
            numbers = public.public_numbers()
            data = {
                "kty": "EC",
                "crv": crv or public.curve.name,
                "x": _uint(numbers.x, size),
                "y": _uint(numbers.y, size),
            }
        else:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
            data = {"kty": "OKP", "crv": crv, "x": b64url(raw)}
        data.update(kid=self.kid, alg=self.alg, use="sig")
        data.update(self.jwk_overrides or {})
        return {k: v for k, v in data.items() if v is not None}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(kind: str, **overrides: Any) -> HostileKey:
    """``rsa512``, ``rsa1024``, ``rsa2048``, ``secp256k1``, ``p192``, ``p224``, ``p256``,
    ``p384``, ``ed25519``, ``ed448``."""
    private: Any
    if kind.startswith("rsa"):
        bits = int(kind[3:])
        private = weak_rsa(bits) if bits < 1024 else rsa.generate_private_key(65537, bits)
        alg = "RS256"
    elif kind == "ed25519":
        private, alg = ed25519.Ed25519PrivateKey.generate(), "EdDSA"
    elif kind == "ed448":
        private, alg = ed448.Ed448PrivateKey.generate(), "EdDSA"
    else:
        curves: dict[str, tuple[ec.EllipticCurve, str]] = {
            "secp256k1": (ec.SECP256K1(), "ES256"),
            "p192": (ec.SECP192R1(), "ES256"),
            "p224": (ec.SECP224R1(), "ES256"),
            "p256": (ec.SECP256R1(), "ES256"),
            "p384": (ec.SECP384R1(), "ES384"),
            "p521": (ec.SECP521R1(), "ES512"),
        }
        curve, alg = curves[kind]
        private = ec.generate_private_key(curve)
    key = HostileKey(private, overrides.pop("alg", alg), k8s_key_id(private.public_key()))
    for name, value in overrides.items():
        setattr(key, name, value)
    return key


def _raw_sign(private: Any, alg: str, signing_input: bytes) -> bytes:
    """Sign as JWS ``alg`` says, whatever the key (PyJWT refuses mismatched curves on encode)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    sizes = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
    digest = sizes.get(alg[2:5], hashes.SHA256())  # a bogus alg (e.g. "RS256 ") still gets signed
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(signing_input, padding.PKCS1v15(), digest)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        der = private.sign(signing_input, ec.ECDSA(digest))
        r, s = utils.decode_dss_signature(der)
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return bytes(private.sign(signing_input))


def sign_raw(header: Mapping[str, Any], payload: bytes | Mapping[str, Any], key: Any) -> str:
    """A compact JWS over exactly these header and payload bytes, signed by ``key``."""
    body = payload if isinstance(payload, bytes) else json.dumps(dict(payload)).encode()
    signing_input = f"{b64url(json.dumps(dict(header)).encode())}.{b64url(body)}".encode()
    return f"{signing_input.decode()}.{b64url(_raw_sign(key.private, str(header.get('alg')), signing_input))}"


def sign(claims: Mapping[str, Any], key: Any, **header: Any) -> str:
    """Claims signed by ``key`` with its kid and alg unless ``header`` says otherwise."""
    head = {"alg": key.alg, "typ": "JWT", "kid": key.kid, **header}
    return sign_raw({k: v for k, v in head.items() if v is not None}, claims, key)


def spc_params(node_key: Any, namespace: str = "default", name: str = "db-password") -> dict[str, str]:
    return {"objects": f"- objectName: {name}\n  sealed: {node_key.seal(SECRET, namespace, name)}"}


def request_for(node_key: Any, pod: PodSpec, token: str | None) -> Any:
    return mount_request("app-secrets", spc_params(node_key, pod.namespace), driver_pod(pod, token))


def refused(d: Any, request: Any, code: str, *fragments: str, hidden: tuple[str, ...] = ()) -> str:
    """The Mount fails with keygate error ``code`` (status and trailer), a message holding every
    fragment, and neither the secret nor anything in ``hidden`` (tokens) in the message."""
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(request)
    err = caught.value
    details = err.details() or ""
    assert err.code() == STATUS[code], details
    assert details.startswith(f"[{code}] "), details
    assert ("keygate-error-code", code) in tuple(err.trailing_metadata() or ()), details
    for fragment in fragments:
        assert fragment in details, details
    assert len(details) > len(code) + 20, "a refusal must say why"
    for value in (SECRET.decode(), *(h for h in hidden if len(h) >= 16)):
        assert value not in details, "a secret or token leaked into the error"
    return details


def released(d: Any, request: Any) -> list[tuple[str, bytes]]:
    response = d.client.mount(request)
    files = [(f.path, f.contents) for f in response.files]
    assert files and all(contents == SECRET for _, contents in files), files
    return files


def claims_for(kube: DevCluster, pod: PodSpec, **changes: Any) -> dict[str, Any]:
    """The API server's claims for ``pod``; a change to ``...`` deletes the claim."""
    claims = kube.claims(pod, AUDIENCE)
    for name, value in changes.items():
        if value is ...:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims
