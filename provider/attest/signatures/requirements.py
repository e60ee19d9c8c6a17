"""Image signature requirements as the release policy states them, parsed once per policy load.

A rule's ``images.signatures`` is a list; every entry applies to every container it covers
(all entries must pass), and an entry passes when any one of its keys (or its keyless identity)
verifies one of the image's signatures. Key and trust-root files are read here, when the policy
is loaded, so a missing or unparseable file stops a new policy from taking effect instead of
refusing Mounts one by one later.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provider.attest.entries import entry_name, known_mapping
from provider.errors import KeygateError

ENTRY_KEYS = {"name", "publicKeys", "keyless", "repositories"}
KEYLESS_KEYS = {"trustedRoot", "issuer", "subject", "subjectRegExp"}
MAX_KEY_FILE = 64 * 1024
MAX_TRUST_ROOT_FILE = 4 * 1024 * 1024
MIN_RSA_BITS = 2048
CURVES = ("secp256r1", "secp384r1")

VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class RequirementError(KeygateError):
    """A signature requirement in the release policy is unusable (the policy wraps it)."""


@dataclass(frozen=True, slots=True, eq=False)
class KeylessIdentity:
    """Who must have signed, as the Sigstore certificate says, and the trust root that vouches."""

    trusted_root_path: str
    trusted_root: Any = field(repr=False)  # sigstore.models.TrustedRoot
    issuer: str
    subject: str = ""
    subject_regexp: re.Pattern[str] | None = None

    def describe(self) -> str:
        who = (
            self.subject or f"subject matching {self.subject_regexp.pattern if self.subject_regexp else ''!r}"
        )
        return f"{who} from issuer {self.issuer}"


@dataclass(frozen=True, slots=True, eq=False)
class SignatureRequirement:
    """One entry of ``images.signatures``; ``fingerprint`` identifies what it trusts (cache key)."""

    name: str
    fingerprint: str
    keys: tuple[VerifyingKey, ...] = ()
    key_sources: tuple[str, ...] = ()
    keyless: KeylessIdentity | None = None
    repositories: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "keyless" if self.keyless is not None else "key"


def _read(path: Path, limit: int, what: str, where: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise RequirementError(f"{where}: cannot read {what} {path}: {exc.strerror or 'error'}") from None
    if len(data) > limit:
        raise RequirementError(f"{where}: {what} {path} is larger than {limit // 1024} KiB")
    return data


def load_public_key(data: bytes, source: str, where: str) -> VerifyingKey:
    """A PEM public key cosign can sign for: ECDSA P-256/P-384 or RSA of 2048 bits or more."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise RequirementError(
            f"{where}: {source} is not a PEM public key (expected `-----BEGIN PUBLIC KEY-----`, "
            "as `cosign generate-key-pair` writes to cosign.pub)"
        ) from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CURVES:
            raise RequirementError(
                f"{where}: {source} is an ECDSA key on {key.curve.name}; use P-256 or P-384"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise RequirementError(
                f"{where}: {source} is a {key.key_size}-bit RSA key; use {MIN_RSA_BITS} or more"
            )
        return key
    raise RequirementError(f"{where}: {source} is a {type(key).__name__}; use ECDSA P-256/P-384 or RSA")


def _der(key: VerifyingKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RequirementError(f"{where} must be a non-empty list of strings")
    return tuple(value)


def _keys(value: Any, where: str, base: Path) -> tuple[tuple[VerifyingKey, ...], tuple[str, ...]]:
    keys: list[VerifyingKey] = []
    sources: list[str] = []
    for index, item in enumerate(_strings(value, where)):
        if item.lstrip().startswith("-----BEGIN"):
            source = f"publicKeys[{index}] (inline PEM)"
            data = item.encode()
        else:
            path = base / item
            source = str(path)
            data = _read(path, MAX_KEY_FILE, "public key", where)
        keys.append(load_public_key(data, source, where))
        sources.append(source)
    return tuple(keys), tuple(sources)


def _keyless(value: Any, where: str, base: Path) -> tuple[KeylessIdentity, bytes]:
    shape = "a mapping with trustedRoot, issuer and subject or subjectRegExp"
    value = known_mapping(value, where, shape, KEYLESS_KEYS, RequirementError)
    for key in ("trustedRoot", "issuer"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise RequirementError(f"{where}.{key} is required (a non-empty string)")
    subject, pattern = value.get("subject"), value.get("subjectRegExp")
    if (subject is None) == (pattern is None):
        raise RequirementError(f"{where}: set exactly one of subject (exact) and subjectRegExp")
    if not isinstance(subject or pattern, str) or not (subject or pattern):
        raise RequirementError(f"{where}: subject / subjectRegExp must be a non-empty string")
    compiled = None
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise RequirementError(
                f"{where}.subjectRegExp is not a valid regular expression: {exc}"
            ) from None
    path = base / value["trustedRoot"]
    data = _read(path, MAX_TRUST_ROOT_FILE, "trusted root", where)
    from provider.attest.signatures.keyless import load_trusted_root

    root = load_trusted_root(data, str(path), where)
    identity = KeylessIdentity(
        trusted_root_path=str(path),
        trusted_root=root,
        issuer=value["issuer"],
        subject=subject or "",
        subject_regexp=compiled,
    )
    return identity, data


def parse_requirements(value: Any, where: str, base: Path) -> tuple[SignatureRequirement, ...]:
    """``images.signatures`` of one rule; relative file names are read from ``base``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise RequirementError(f"{where} must be a non-empty list of signature requirements")
    out: list[SignatureRequirement] = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        item = known_mapping(item, at, "a mapping with publicKeys or keyless", ENTRY_KEYS, RequirementError)
        name = entry_name(item, at, f"signatures[{index}]", RequirementError)
        if ("publicKeys" in item) == ("keyless" in item):
            raise RequirementError(f"{at} ({name}): set exactly one of publicKeys and keyless")
        repositories = _strings(item["repositories"], f"{at}.repositories") if "repositories" in item else ()
        digest = hashlib.sha256()
        if "publicKeys" in item:
            keys, sources = _keys(item["publicKeys"], f"{at}.publicKeys", base)
            for der in sorted(_der(k) for k in keys):
                digest.update(b"key\0" + der)
            out.append(
                SignatureRequirement(
                    name=name,
                    fingerprint=digest.hexdigest(),
                    keys=keys,
                    key_sources=sources,
                    repositories=repositories,
                )
            )
        else:
            identity, root = _keyless(item["keyless"], f"{at}.keyless", base)
            for part in (
                b"keyless",
                root,
                identity.issuer.encode(),
                identity.subject.encode(),
                (identity.subject_regexp.pattern if identity.subject_regexp else "").encode(),
            ):
                digest.update(hashlib.sha256(part).digest())
            out.append(
                SignatureRequirement(
                    name=name, fingerprint=digest.hexdigest(), keyless=identity, repositories=repositories
                )
            )
    return tuple(out)
