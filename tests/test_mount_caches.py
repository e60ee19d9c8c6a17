"""The per-Mount caches added for speed answer exactly what the uncached path would.

The resolved SPC objects are reused for identical SPC parameters, whichever pod sends them (the
driver's per-pod attributes are never part of resolution);
a cached sealed-value KEK still leaves every open authenticated (wrapped key, ciphertext,
namespace and name binding).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import ClassVar

import pytest

from provider.domain import SecretObject
from provider.errors import InvalidSPC
from provider.spc import parse_objects
from provider.spc_memo import ObjectsMemo, parameters_digest
from providers.registry import Registry
from providers.sealed.envelope import PREFIX, NodeKeys, SealError, generate_key, open_sealed, parse, seal
from tests.slow_backend import SlowBackend

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


def test_any_spc_parameter_difference_is_a_fresh_parse():
    memo = ObjectsMemo(Registry({}))
    memo.parse(_params())
    memo.parse(_params(backend="sealed"))
    memo.parse(_params(backend="sealed", secretProviderClass="other"))
    assert memo._cache.hits == 0 and len(memo._cache) == 3
    # Keys are length-prefixed: moving text between a name and a value changes the digest.
    assert parameters_digest({"ab": "c"}) != parameters_digest({"a": "bc"})


class RecordingBackend(SlowBackend):
    """A schema-less plugin: its own ``validate`` sees exactly the parameters resolution uses."""

    seen: ClassVar[list[dict[str, str]]] = []

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        self.seen.append(dict(parameters))


def test_every_pod_of_an_spc_shares_one_entry_and_resolution_never_sees_pod_attributes():
    registry = Registry({"rec": {"class": "tests.test_mount_caches:RecordingBackend"}})
    memo = ObjectsMemo(registry)
    tokens = '{"vault": {"token": "eyJ.a.b", "expirationTimestamp": "2030-01-01T00:00:00Z"}}'
    spc = {"backend": "rec", "objects": "- objectName: db\n- objectName: api\n"}
    first = memo.parse(_params() | spc)
    for pod in ("app-1", "app-2"):
        pod_attributes = {
            "csi.storage.k8s.io/pod.uid": pod,
            "csi.storage.k8s.io/serviceAccount.name": "sa",
            "csi.storage.k8s.io/serviceAccount.tokens": tokens,
        }
        assert memo.parse(_params(pod=pod) | spc | pod_attributes) == first
    assert memo._cache.hits == 2 and len(memo._cache) == 1
    assert RecordingBackend.seen == [spc, spc]  # one parse, two objects


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
