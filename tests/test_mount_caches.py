"""The per-Mount caches added for speed answer exactly what the uncached path would.

The resolved SPC objects are reused only for identical parameters (pod attributes included);
a cached sealed-value KEK still leaves every open authenticated (wrapped key, ciphertext,
namespace and name binding).
"""

from __future__ import annotations

import base64

import pytest

from provider.errors import InvalidSPC
from provider.spc import parse_objects
from provider.spc_memo import ObjectsMemo, parameters_digest
from providers.registry import Registry
from providers.sealed.envelope import PREFIX, NodeKeys, SealError, generate_key, open_sealed, parse, seal

KEY = generate_key()
SEALED = seal(b"v", "default", "db", [KEY.public_key()])


def _params(pod: str = "app-0", **extra: str) -> dict[str, str]:
    sealed = SEALED
    objects = (
        f"- objectName: db\n  sealed: {sealed}\n- objectName: api\n  sealed: {sealed}\n  objectAlias: a/b\n"
    )
    return {
        "csi.storage.k8s.io/pod.name": pod,
        "csi.storage.k8s.io/pod.namespace": "default",
        "objects": objects,
        **extra,
    }


def test_identical_parameters_reuse_the_resolved_objects():
    memo = ObjectsMemo(Registry({}))
    first = memo.parse(_params())
    assert first == parse_objects(_params(), Registry({}))
    assert [(o.backend, o.name, o.path) for o in first] == [("sealed", "db", "db"), ("sealed", "api", "a/b")]
    again = memo.parse(_params())
    assert again == first and again is not first  # a fresh list, same frozen objects
    assert memo._cache.hits == 1


def test_any_parameter_difference_is_a_fresh_parse():
    memo = ObjectsMemo(Registry({}))
    memo.parse(_params())
    memo.parse(_params(pod="app-1"))
    memo.parse(_params(backend="sealed"))
    assert memo._cache.hits == 0 and len(memo._cache) == 3
    # Keys are length-prefixed: moving text between a name and a value changes the digest.
    assert parameters_digest({"ab": "c"}) != parameters_digest({"a": "bc"})


def test_refusals_are_not_remembered():
    memo = ObjectsMemo(Registry({}))
    bad = {"objects": "- objectName: db\n  sealed: keygate:v1:x\n  objectAlias: ../up\n"}
    for _ in range(2):
        with pytest.raises(InvalidSPC, match=r"objects\[0\]"):
            memo.parse(bad)
    assert len(memo._cache) == 0


def test_cached_kek_still_authenticates_every_open():
    keys = NodeKeys([KEY])
    text = seal(b"secret", "ns", "obj", [KEY.public_key()])
    assert open_sealed(text, "ns", "obj", keys) == b"secret"
    assert open_sealed(text, "ns", "obj", keys) == b"secret"
    assert len(keys._keks) == 1 and keys._keks.hits >= 1
    header, body = text[len(PREFIX) :].split(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[0] ^= 1
    tampered = f"{PREFIX}{header}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    with pytest.raises(SealError, match="altered or corrupted"):
        open_sealed(tampered, "ns", "obj", keys)
    with pytest.raises(SealError, match="not other/obj"):
        open_sealed(text, "other", "obj", keys)
    other = generate_key()
    with pytest.raises(SealError, match="no node key can open"):
        open_sealed(text, "ns", "obj", NodeKeys([other]))


def test_envelope_digest_is_the_version_of_the_text_without_whitespace():
    text = seal(b"x", "ns", "obj", [KEY.public_key()])
    spaced = text[:20] + "\n  " + text[20:]
    assert (
        parse(text).digest
        == parse(spaced).digest
        != parse(seal(b"x", "ns", "obj", [KEY.public_key()])).digest
    )


def test_cleared_keys_open_nothing():
    keys = NodeKeys([KEY])
    text = seal(b"secret", "ns", "obj", [KEY.public_key()])
    open_sealed(text, "ns", "obj", keys)
    keys.clear()
    assert len(keys) == 0 and len(keys._keks) == 0
    with pytest.raises(SealError, match="no node key"):
        open_sealed(text, "ns", "obj", keys)
