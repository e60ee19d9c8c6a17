"""Revocation by image signatures (the release policy's ``images.signatures``, real registry and
cosign keys from tests.test_signatures): once the running image no longer satisfies the policy,
the next rotation takes every object back; an unreachable registry on a rotation removes nothing."""

# ruff: noqa: F811  (the signature fixtures are imported from tests.test_signatures by name)

from __future__ import annotations

import grpc

from keygate_dev.signing import CosignKey
from tests.revocation_helpers import files_of, refused, revoke_records
from tests.test_signatures import Env, cosign_key, env, registry  # noqa: F401


def rotation(env: Env, pod, before):
    request = env.request(pod)
    request.current_object_version.extend(before.object_version)
    return request


def test_image_no_longer_signed_by_the_required_key_is_revoked(env: Env):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    first = d.client.mount(env.request(pod))
    assert all(files_of(first).values())
    CosignKey.generate().write_public(env.tmp / "cosign.pub")  # the policy now trusts another key
    env.write_policy({"name": "release-key", "publicKeys": ["cosign.pub"]})
    again = d.client.mount(rotation(env, pod, first))
    assert files_of(again) and not any(files_of(again).values())
    assert {r["reason"] for r in revoke_records(d)} == {"policy"}


def test_registry_unreachable_on_rotation_removes_nothing(env: Env):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    first = d.client.mount(env.request(pod))
    CosignKey.generate().write_public(env.tmp / "other.pub")  # a new requirement: no cached result
    env.write_policy({"name": "release-key", "publicKeys": ["other.pub"]})
    env.registry.fail_status = 503
    err = refused(d, rotation(env, pod, first))
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)
    assert "registry" in (err.details() or "")
    assert revoke_records(d) == []
