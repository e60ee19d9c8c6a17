"""The sealed envelope on its own: binding, tampering, recipients, malformed text."""

from __future__ import annotations

import base64
import json

import pytest

from providers.sealed.envelope import (
    PREFIX,
    SealError,
    generate_key,
    key_id,
    load_private,
    load_public,
    open_sealed,
    parse,
    private_pem,
    public_pem,
    seal,
)


def test_roundtrip_and_binding():
    k = generate_key()
    text = seal(b"value", "ns", "obj", [k.public_key()])
    assert open_sealed(text, "ns", "obj", [k]) == b"value"
    with pytest.raises(SealError, match="sealed for ns/obj, not other/obj"):
        open_sealed(text, "other", "obj", [k])


def test_header_rewritten_to_another_namespace_fails_authentication():
    k = generate_key()
    text = seal(b"value", "ns", "obj", [k.public_key()])
    header_b64, body = text[len(PREFIX) :].split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    header["ns"] = "evil"
    forged_header = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(SealError, match="altered or corrupted"):
        open_sealed(f"{PREFIX}{forged_header}.{body}", "evil", "obj", [k])


def test_whitespace_and_line_breaks_are_ignored():
    k = generate_key()
    text = seal(b"v", "ns", "o", [k.public_key()])
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60))
    assert open_sealed(wrapped, "ns", "o", [k]) == b"v"


def test_multiple_recipients_each_open():
    a, b, c = generate_key(), generate_key(), generate_key()
    text = seal(b"v", "ns", "o", [a.public_key(), b.public_key()])
    assert open_sealed(text, "ns", "o", [a]) == b"v"
    assert open_sealed(text, "ns", "o", [b]) == b"v"
    with pytest.raises(SealError, match=key_id(c.public_key())):
        open_sealed(text, "ns", "o", [c])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("plain", "does not start with"),
        (PREFIX, "truncated"),
        (PREFIX + "abc.", "truncated"),
        (PREFIX + "!!!.abc", "not base64url"),
        (PREFIX + "e30.abc", "unsupported version"),
    ],
)
def test_malformed(text, fragment):
    with pytest.raises(SealError, match=fragment):
        parse(text)


def test_key_pem_roundtrip_and_wrong_kind():
    k = generate_key()
    assert key_id(load_private(private_pem(k), "f").public_key()) == key_id(k.public_key())
    assert key_id(load_public(public_pem(k.public_key()), "f")) == key_id(k.public_key())
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SealError, match="not an X25519 public key"):
        load_public(ec_pub, "ec.pub")


def test_each_seal_is_fresh():
    k = generate_key()
    assert seal(b"v", "n", "o", [k.public_key()]) != seal(b"v", "n", "o", [k.public_key()])
