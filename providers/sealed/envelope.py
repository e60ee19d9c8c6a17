"""The sealed-value envelope: seal in CI with a public key, open on the node with the private key.

Format (text, safe to paste into YAML)::

    keygate:v1:<base64url(header JSON)>.<base64url(ciphertext+tag)>

Header: ``{"v":1,"alg":"X25519-HKDF-SHA256/A256GCM","ns":..,"name":..,"nonce":..,
"recipients":[{"kid":..,"epk":..,"wk":..}]}``. A fresh 256-bit data key encrypts the value with
AES-256-GCM. For each recipient the data key is wrapped with AES-256-GCM under a key-encryption
key derived by HKDF-SHA256 from an X25519 exchange between a fresh ephemeral key and the
recipient's public key (ECIES). The associated data of both layers binds a domain tag, the
namespace, the object name and the header text, so a value moved to another namespace or
object, or with any header byte changed, fails to open. ``kid`` is the first 8 bytes (hex) of the
SHA-256 of the recipient's raw public key: it selects the key without trial decryption.

Only the ``cryptography`` package does crypto here; this module only arranges its primitives.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from provider.bounded_cache import BoundedCache

PREFIX = "keygate:v1:"
ALG = "X25519-HKDF-SHA256/A256GCM"
DOMAIN = b"keygate sealed v1"
MAX_SEALED_CHARS = 2 * 1024 * 1024
KEK_CACHE_ENTRIES = 4096


class SealError(ValueError):
    """A value that cannot be sealed or opened; the message never contains plaintext."""


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"sealed value: {what} is not base64url") from None


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: X25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def _aad(namespace: str, name: str, header: str) -> bytes:
    parts = (DOMAIN, namespace.encode(), name.encode(), header.encode())
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _kek(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=DOMAIN + b" kek")
    return hkdf.derive(shared)


def generate_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_pem(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(pem: bytes, source: str) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise SealError(f"{source} is not a PEM public key") from None
    if not isinstance(key, X25519PublicKey):
        raise SealError(f"{source} is not an X25519 public key (make one with 'keygate keygen')")
    return key


def load_private(pem: bytes, source: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SealError(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise SealError(f"{source} is not an X25519 private key (make one with 'keygate keygen')")
    return key


def seal(value: bytes, namespace: str, name: str, recipients: Sequence[X25519PublicKey]) -> str:
    """Encrypt ``value`` so only holders of a recipient's private key can open it, for ns/name."""
    if not recipients:
        raise SealError("at least one recipient public key is needed")
    if not namespace or not name:
        raise SealError("namespace and object name are both required")
    data_key = AESGCM.generate_key(bit_length=256)
    wrapped = []
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        epk = _raw_public(ephemeral.public_key())
        kek = _kek(ephemeral.exchange(recipient), epk, _raw_public(recipient))
        wrap_nonce = os.urandom(12)
        wk = AESGCM(kek).encrypt(wrap_nonce, data_key, _aad(namespace, name, ""))
        wrapped.append({"kid": key_id(recipient), "epk": _b64e(epk), "wk": _b64e(wrap_nonce + wk)})
    nonce = os.urandom(12)
    header = {"v": 1, "alg": ALG, "ns": namespace, "name": name, "nonce": _b64e(nonce), "recipients": wrapped}
    header_text = _b64e(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
    ciphertext = AESGCM(data_key).encrypt(nonce, value, _aad(namespace, name, header_text))
    return f"{PREFIX}{header_text}.{_b64e(ciphertext)}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed (not yet opened) sealed value.

    ``digest`` identifies the text (the object's backend version); ``wrap_aad`` and ``body_aad``
    are the associated data for this envelope's own namespace and name, which opening requires
    to equal the Mount's.
    """

    header_text: str
    namespace: str
    name: str
    nonce: bytes
    recipients: tuple[tuple[str, bytes, bytes], ...]
    ciphertext: bytes
    digest: str = ""
    wrap_aad: bytes = b""
    body_aad: bytes = b""


def parse(text: str) -> Envelope:
    """Structure checks only; authenticity is established by :func:`open_sealed`."""
    return _parse(_compact(text))


def _compact(text: str) -> str:
    return "".join(text.split())


def _parse(text: str) -> Envelope:
    if len(text) > MAX_SEALED_CHARS:
        raise SealError("sealed value is larger than 2 MiB")
    if not text.startswith(PREFIX):
        raise SealError(f"sealed value does not start with {PREFIX!r}; produce it with 'keygate seal'")
    header_text, dot, body = text[len(PREFIX) :].partition(".")
    if not dot or not header_text or not body:
        raise SealError("sealed value is truncated: expected '<header>.<ciphertext>'")
    header_bytes = _b64d(header_text, "header")
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError):
        raise SealError("sealed value header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("v") != 1 or header.get("alg") != ALG:
        raise SealError(f"sealed value has an unsupported version or algorithm (expected v1 {ALG})")
    ns, name, recipients = header.get("ns"), header.get("name"), header.get("recipients")
    if not isinstance(ns, str) or not isinstance(name, str) or not isinstance(recipients, list):
        raise SealError("sealed value header lacks ns, name or recipients")
    parsed = []
    for r in recipients:
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("kid", "epk", "wk")):
            raise SealError("sealed value header has a malformed recipient entry")
        parsed.append((r["kid"], _b64d(r["epk"], "recipient key"), _b64d(r["wk"], "wrapped key")))
    nonce = _b64d(str(header.get("nonce", "")), "nonce")
    return Envelope(
        header_text,
        ns,
        name,
        nonce,
        tuple(parsed),
        _b64d(body, "ciphertext"),
        digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        wrap_aad=_aad(ns, name, ""),
        body_aad=_aad(ns, name, header_text),
    )


class NodeKeys:
    """Private keys indexed by key id, computed once rather than on every open.

    The key-encryption key of each (node key, ephemeral key) pair is remembered (bounded, LRU):
    the X25519 exchange is most of the cost of opening a value, and rotation polls open the same
    values every two minutes. A KEK opens nothing the node key held next to it cannot, and it
    stays in memory only; every open still authenticates the wrapped key and the ciphertext.
    """

    def __init__(self, keys: Iterable[X25519PrivateKey]) -> None:
        self._by_kid = {key_id(k.public_key()): (k, _raw_public(k.public_key())) for k in keys}
        self._keks: BoundedCache[tuple[str, bytes], bytes] = BoundedCache(
            "sealed key-encryption keys", max_entries=KEK_CACHE_ENTRIES, max_bytes=KEK_CACHE_ENTRIES * 160
        )

    def kek(self, kid: str, epk: bytes) -> bytes | None:
        """The KEK for an envelope recipient entry (None when this node has no key ``kid``)."""
        found = self._by_kid.get(kid)
        if found is None:
            return None
        cached = self._keks.get((kid, epk))
        if cached is not None:
            return cached
        key, raw_public = found
        kek = _kek(key.exchange(X25519PublicKey.from_public_bytes(epk)), epk, raw_public)
        self._keks.put((kid, epk), kek, size=160)
        return kek

    def clear(self) -> None:
        self._by_kid = {}
        self._keks.clear()

    def __len__(self) -> int:
        return len(self._by_kid)

    def kids(self) -> list[str]:
        return sorted(self._by_kid)

    def get(self, kid: str) -> tuple[X25519PrivateKey, bytes] | None:
        return self._by_kid.get(kid)


OPENED_ENTRIES = 2048
OPENED_BYTES = 1024 * 1024
OPENED_ENTRY_CHARS = 32 * 1024


class OpenedEnvelopes:
    """Parsed envelopes this node has opened, by their text, so a repeated value is not parsed
    again (rotation polls and every replica of a Deployment send the same SPC).

    Only envelopes that opened are remembered: one that fails (another namespace or name, no
    matching key, altered) costs its parse every time, never memory. An envelope holds only
    ciphertext and public values, so keeping it reveals nothing; every open still authenticates
    it. Bounded by entries and bytes; envelopes above 32 KiB are parsed every time.
    """

    def __init__(self) -> None:
        self._cache: BoundedCache[str, Envelope] = BoundedCache(
            "opened sealed envelopes",
            max_entries=OPENED_ENTRIES,
            max_bytes=OPENED_BYTES,
            max_entry_bytes=OPENED_ENTRY_CHARS,
        )

    def open(self, text: str, namespace: str, name: str, keys: NodeKeys) -> tuple[Envelope, bytes]:
        """The envelope and its plaintext for ``namespace``/``name``; raises SealError."""
        compact = _compact(text)
        env = self._cache.get(compact)
        if env is not None:
            return env, open_envelope(env, namespace, name, keys)
        env = _parse(compact)
        value = open_envelope(env, namespace, name, keys)
        if len(compact) <= OPENED_ENTRY_CHARS:
            self._cache.put(compact, env, size=2 * len(compact) + 512)
        return env, value

    def clear(self) -> None:
        self._cache.clear()


def open_sealed(text: str, namespace: str, name: str, keys: NodeKeys | Iterable[X25519PrivateKey]) -> bytes:
    """Decrypt a sealed value for ``namespace``/``name`` with any matching node key."""
    return open_envelope(parse(text), namespace, name, keys)


def open_envelope(
    env: Envelope, namespace: str, name: str, keys: NodeKeys | Iterable[X25519PrivateKey]
) -> bytes:
    """:func:`open_sealed` for an envelope already parsed."""
    if env.namespace != namespace or env.name != name:
        raise SealError(
            f"sealed value was sealed for {env.namespace}/{env.name}, not {namespace}/{name}; "
            "re-seal it with 'keygate seal --namespace "
            f"{namespace} --name {name}'"
        )
    node_keys = keys if isinstance(keys, NodeKeys) else NodeKeys(keys)
    matching = [(kid, epk, wk) for kid, epk, wk in env.recipients if node_keys.get(kid)]
    if not matching:
        kids = ", ".join(kid for kid, _, _ in env.recipients) or "none"
        raise SealError(
            f"no node key can open this value (sealed for key ids {kids}; this node has "
            f"{', '.join(node_keys.kids()) or 'no keys'}); re-seal it for the node public key"
        )
    for kid, epk, wk in matching:
        if len(epk) != 32 or len(wk) < 12 + 16:
            continue
        try:
            kek = node_keys.kek(kid, epk)
            if kek is None:
                continue
            data_key = AESGCM(kek).decrypt(wk[:12], wk[12:], env.wrap_aad or _aad(namespace, name, ""))
            body_aad = env.body_aad or _aad(namespace, name, env.header_text)
            return AESGCM(data_key).decrypt(env.nonce, env.ciphertext, body_aad)
        except (InvalidTag, ValueError):
            continue
    raise SealError("sealed value failed authentication: it was altered or corrupted after sealing")
