"""The issuer's public keys: read from JWKS or PEM, and which of them may verify a token.

A token is only as strong as the key that signed it. An RSA modulus of 512 bits is factored
in hours, so a JWKS that lists one (by mistake, or because someone could write to it) would let
whoever factors it mint tokens for any pod. The rule is checked when keys are loaded (static
files, OIDC discovery, a JWKS URL) and again on every signature check, so a key source that
forgets it still cannot make a weak key verify anything.

Every source turns its documents into a :class:`KeySet` here: the usable keys by ``kid`` and,
for each key it would not use, the reason, so a token naming such a key is refused with that
reason instead of "unknown key".
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from provider.errors import KeygateError

MIN_RSA_BITS = 2048
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
EC_ALG_CURVE = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EDDSA_ALGS = frozenset({"EdDSA"})


@dataclass(frozen=True, slots=True)
class KeyRules:
    """Key types beyond RSA >= 2048 bits and EC P-256/P-384/P-521.

    Kubernetes issuers sign with RSA or ECDSA; Ed25519 is accepted only when the operator says
    the issuer uses it (``token_allow_ed25519``).
    """

    allow_ed25519: bool = False

    def algorithms(self) -> frozenset[str]:
        """The JWS ``alg`` values a token may use under these rules."""
        base = RSA_ALGS | frozenset(EC_ALG_CURVE)
        return base | EDDSA_ALGS if self.allow_ed25519 else base


def key_type(key: Any) -> str:
    """The JWK ``kty`` of a public key object: RSA, EC, OKP, or the class name if none fits."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "OKP"
    return type(key).__name__


def key_problem(key: Any, rules: KeyRules) -> str | None:
    """Why ``key`` may not verify tokens, as a clause after "key 'kid'", or None when it may."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"is an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} bits are required"
        exponent = key.public_numbers().e
        if exponent < 3 or exponent % 2 == 0:
            return f"is an RSA key with the unsafe public exponent {exponent}"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return (
                f"is an EC key on curve {key.curve.name}; only {', '.join(EC_CURVES.values())} are accepted"
            )
        return None
    if isinstance(key, ed25519.Ed25519PublicKey):
        if rules.allow_ed25519:
            return None
        return "is an Ed25519 key, accepted only when token_allow_ed25519 is set"
    return f"is {describe(key)}, which cannot verify service-account tokens"


def alg_fits(key: Any, alg: str) -> bool:
    """Whether ``alg`` is the algorithm family (and, for ECDSA, the curve) of ``key``."""
    kind = key_type(key)
    if alg in RSA_ALGS:
        return kind == "RSA"
    if alg in EC_ALG_CURVE:
        return kind == "EC" and str(key.curve.name) == EC_ALG_CURVE[alg]
    if alg in EDDSA_ALGS:
        return kind == "OKP"
    return False


def describe(key: Any) -> str:
    """A key's kind for messages: ``an RSA-2048 key``, ``an EC P-256 key``, ``an Ed25519 key``."""
    kind = key_type(key)
    if kind == "RSA":
        return f"an RSA-{key.key_size} key"
    if kind == "EC":
        return f"an EC {EC_CURVES.get(key.curve.name, key.curve.name)} key"
    return f"an {type(key).__name__.lstrip('_').removesuffix('PublicKey')} key"


def _der(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def pem_key_id(key: Any) -> str:
    """The key id the API server gives its key: base64url(SHA-256(DER SubjectPublicKeyInfo))."""
    return base64.urlsafe_b64encode(hashlib.sha256(_der(key)).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """A usable key; ``alg`` is what its JWK declares (None: any algorithm of its family)."""

    kid: str
    key: Any
    alg: str | None

    def fits(self, alg: str) -> bool:
        return self.alg in (None, alg) and alg_fits(self.key, alg)


@dataclass(slots=True)
class KeySet:
    """Usable keys by kid, and each refused kid with the reason (for the log and the token error)."""

    keys: dict[str, IssuerKey] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def add(self, kid: str, key: Any, alg: str | None, rules: KeyRules) -> None:
        problem = key_problem(key, rules)
        if problem is None and alg is not None and not alg_fits(key, alg):
            problem = f"declares alg {alg}, which does not fit {describe(key)}"
        if problem is None and kid in self.refused:
            return
        if problem is None and kid in self.keys and _der(self.keys[kid].key) != _der(key):
            problem = "is listed twice with different key material"
        if problem is not None:
            self.keys.pop(kid, None)
            self.refused[kid] = problem
            return
        self.keys[kid] = IssuerKey(kid, key, alg)

    def update(self, other: KeySet) -> None:
        for kid, reason in other.refused.items():
            self.keys.pop(kid, None)
            self.refused[kid] = reason
        for kid, entry in other.keys.items():
            if kid not in self.refused:
                self.keys[kid] = entry

    def select(self, kid: str | None, alg: str) -> list[Any]:
        """Candidate keys for a token's ``kid`` and ``alg`` (all fitting keys when it has no kid)."""
        if kid is not None:
            entry = self.keys.get(kid)
            return [entry.key] if entry is not None and entry.fits(alg) else []
        return [entry.key for entry in self.keys.values() if entry.fits(alg)]


def _jwk_problem(item: dict[str, Any]) -> str | None:
    """Refusals that need no key parsing (and give a clearer reason than the parser would)."""
    kty = item.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        return f"has key type {kty!r}; only RSA and EC keys (and Ed25519 when enabled) verify tokens"
    if any(name in item for name in ("d", "p", "q", "dp", "dq", "qi")):
        return "holds private key material; an issuer publishes public keys only"
    alg = item.get("alg")
    if alg is not None and alg not in RSA_ALGS | frozenset(EC_ALG_CURVE) | EDDSA_ALGS:
        return f"declares alg {alg!r}, which is not an accepted signature algorithm"
    crv = item.get("crv")
    if kty == "EC" and crv not in EC_CURVES.values():
        return f"is an EC key on curve {crv!r}; only {', '.join(EC_CURVES.values())} are accepted"
    if kty == "OKP" and crv != "Ed25519":
        return f"is an OKP key on curve {crv!r}; of these only Ed25519 is accepted, when enabled"
    return None


MAX_JWKS_KEYS = 64  # bounds the key set (and its refusal list) whatever the issuer serves


def keys_from_jwks(data: Any, source: str, rules: KeyRules) -> KeySet:
    """The signing keys of a JWKS document; keys marked for another ``use`` are ignored."""
    import jwt

    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeygateError(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
    if len(data["keys"]) > MAX_JWKS_KEYS:
        raise KeygateError(
            f"{source}: a JWKS with {len(data['keys'])} keys; an issuer publishes a handful, and "
            f"keygate reads at most {MAX_JWKS_KEYS}"
        )
    found = KeySet()
    for index, item in enumerate(data["keys"]):
        if not isinstance(item, dict):
            found.refused[f"#{index}"] = "is not a JSON object"
            continue
        kid = item.get("kid", f"#{index}")
        if not isinstance(kid, str) or not kid:
            found.refused[f"#{index}"] = f"has kid {kid!r}; a kid must be a non-empty string"
            continue
        use = item.get("use", "sig")
        if use != "sig":
            if not isinstance(use, str):
                found.refused[kid] = f"has 'use' {use!r}; it must be a string"
            continue
        problem = _jwk_problem(item)
        if problem is None:
            try:
                key = jwt.PyJWK(item).key
            except Exception as exc:  # noqa: BLE001 - any failure to read a hostile JWK refuses it
                problem = f"cannot be read as a JWK ({type(exc).__name__})"
            else:
                alg = item.get("alg")
                found.add(kid, key, alg if isinstance(alg, str) else None, rules)
                continue
        found.keys.pop(kid, None)
        found.refused[kid] = problem
    return found


def keys_from_pem(pem: bytes, source: str, rules: KeyRules) -> KeySet:
    """Every ``PUBLIC KEY`` block of a PEM file, with the kid the API server derives."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    end = b"-----END PUBLIC KEY-----"
    blocks = [block + end + b"\n" for block in pem.split(end)[:-1]]
    if not blocks:
        raise KeygateError(f"issuer_key_file {source} holds no PEM 'PUBLIC KEY' block")
    found = KeySet()
    for block in blocks:
        try:
            key = load_pem_public_key(block.strip() + b"\n")
        except (ValueError, TypeError):
            raise KeygateError(f"issuer_key_file {source}: unreadable PEM public key") from None
        found.add(pem_key_id(key), key, None, rules)
    return found
