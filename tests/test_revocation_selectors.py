"""Revocation of expanded selector objects through real Mounts against OpenBao (kv v2 listing),
with a sealed object beside them, and against the GCP and Azure fakes, with real attestation: on a rotation an expanded object the
release policy now refuses leaves the pod if it holds it (a newly listed refused one still
fails the Mount, as on a first mount); an object the listing no longer returns leaves too and
is recorded once as ``not_found``; a refused object that comes back allowed is served again."""

# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.revocation_helpers import files_of, held, refused, revocations, revoke_records, rotate
from tests.test_aws import moto, moto_url, pod, sa_token  # noqa: F401
from tests.test_azure import azure  # noqa: F401
from tests.test_gcp import gcp  # noqa: F401
from tests.test_release_policy import write
from tests.test_shared_reads import attested, replica
from tests.vault_fixtures import AUDIENCE, Vault, vault  # noqa: F401

SEALED = b"sealed-beside-7731"
VAULT_POLICY = """
path "secret/metadata/sel" { capabilities = ["list"] }
path "secret/metadata/sel/*" { capabilities = ["list"] }
path "secret/data/sel/*" { capabilities = ["read"] }
"""
RELEASE = """
rules:
  - name: app
    namespaces: [default]
    serviceAccounts: [app]
    objects: ["secret/data/sel", "secret/data/sel/*", "beside"]
"""
SECRETS = {"a": "pa-5521", "b": "pb-8830"}
A, B = (f"vault/secret/data/sel/{k}#password" for k in ("a", "b"))


@pytest.fixture
def sel(vault: Vault) -> Iterator[Vault]:
    """Role ``sel`` may list and read secret/sel/*; the secrets a and b are there."""
    root = vault.root()
    root.sys.create_or_update_policy("sel", VAULT_POLICY)
    role = root.read("auth/jwt/role/app")["data"]
    root.write("auth/jwt/role/sel", **{**role, "token_policies": ["sel"]})
    kv = root.secrets.kv.v2
    for name, value in SECRETS.items():
        kv.create_or_update_secret(f"sel/{name}", {"password": value}, mount_point="secret")
    yield vault
    for name in ("a", "b", "c"):
        kv.delete_metadata_and_all_versions(f"sel/{name}", mount_point="secret")


def spc(v: Vault, node_key: Any, **extra: str) -> dict[str, str]:
    objects = [
        {"objectName": "conf", "secretPath": "secret/data/sel", "secretKey": "password", "selector": {}},
        {"objectName": "beside", "sealed": node_key.seal(SEALED, "default", "beside")},
    ]
    return v.params(json.dumps(objects), roleName="sel", **extra)


@pytest.fixture
def setup(start_daemon, sel: Vault, node_key, short_tmp: Path):
    policy = short_tmp / "release-policy.yaml"
    write(policy, RELEASE)
    d = attested(start_daemon, sel.issuer, short_tmp, release_policy=str(policy))
    pod = replica(sel.issuer, 0, "app", AUDIENCE)
    params = spc(sel, node_key)
    first = d.client.mount(mount_request("s", params, pod))
    assert files_of(first) == {"conf/a": b"pa-5521", "conf/b": b"pb-8830", "beside": SEALED}
    return d, sel, pod, params, first, policy


def test_a_held_expanded_object_the_policy_now_refuses_leaves(setup):
    d, _, pod, params, first, policy = setup
    before = revocations("vault", "policy")
    write(policy, RELEASE.replace('"secret/data/sel/*"', '"secret/data/sel/a"'))
    again = rotate(d, "s", params, pod, first)
    assert files_of(again) == {"conf/a": b"pa-5521", "beside": SEALED}
    (record,) = revoke_records(d)
    assert record["reason"] == "policy" and record["object"]["path"] == "conf/b"
    assert record["object"]["ids"] == [B] and record["outcome"] == "removed"
    assert revocations("vault", "policy") == before + 1
    assert "pb-8830" not in d.audit_text() + d.log_text()
    # its id stays with a tombstone version: still held, withheld again without a new record
    assert B in dict(held(again))
    still = rotate(d, "s", params, pod, again)
    assert files_of(still) == files_of(again) and len(revoke_records(d)) == 1
    # allowed again: served again
    write(policy, RELEASE)
    assert files_of(rotate(d, "s", params, pod, still))["conf/b"] == b"pb-8830"


def test_the_spc_mode_applies_to_refused_expanded_objects(setup, node_key):
    d, v, pod, _, first, policy = setup
    write(policy, RELEASE.replace('"secret/data/sel/*"', '"secret/data/sel/a"'))
    again = rotate(d, "s", spc(v, node_key, revocation="empty"), pod, first)
    assert files_of(again) == {"conf/a": b"pa-5521", "conf/b": b"", "beside": SEALED}
    assert revoke_records(d)[0]["outcome"] == "emptied"


def test_a_newly_listed_object_the_policy_refuses_fails_the_rotation(setup):
    d, v, pod, params, first, policy = setup
    write(policy, RELEASE.replace('"secret/data/sel/*"', '"secret/data/sel/[ab]"'))
    v.root().secrets.kv.v2.create_or_update_secret("sel/c", {"password": "pc-1"}, mount_point="secret")
    err = refused(d, mount_request("s", params, pod, current=held(first)))
    # the pod never had it: a refusal to fix, as on a first mount; nothing is removed
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "secret/data/sel/c" in (err.details() or "") and "pc-1" not in (err.details() or "")
    assert revoke_records(d) == []


def test_an_object_the_listing_no_longer_returns_is_recorded_once(setup):
    d, v, pod, params, first, _ = setup
    before = revocations("vault", "not_found")
    v.root().secrets.kv.v2.delete_metadata_and_all_versions("sel/b", mount_point="secret")
    again = rotate(d, "s", params, pod, first)
    assert files_of(again) == {"conf/a": b"pa-5521", "beside": SEALED}
    assert B not in dict(held(again))  # no tombstone: a listing that lacks it is not an error
    (record,) = revoke_records(d)
    assert record["reason"] == "not_found" and record["object"]["ids"] == [B]
    assert record["object"]["name"] == "conf" and record["pod"]["name"] == pod.name
    assert revocations("vault", "not_found") == before + 1
    still = rotate(d, "s", params, pod, again)
    assert files_of(still) == files_of(again) and len(revoke_records(d)) == 1
    # written again: listed and served again
    v.root().secrets.kv.v2.create_or_update_secret("sel/b", {"password": "pb-2"}, mount_point="secret")
    assert files_of(rotate(d, "s", params, pod, still))["conf/b"] == b"pb-2"


def test_a_soft_deleted_object_still_listed_is_revoked_not_found(setup):
    d, v, pod, params, first, _ = setup
    v.root().secrets.kv.v2.delete_latest_version_of_secret("sel/b", mount_point="secret")
    again = rotate(d, "s", params, pod, first)
    assert files_of(again) == {"conf/a": b"pa-5521", "beside": SEALED}
    (record,) = revoke_records(d)
    assert record["reason"] == "not_found" and record["object"]["path"] == "conf/b"
    assert B in dict(held(again))  # kept as a tombstone while kv v2 still lists it
    # then its metadata goes too: no longer listed, the tombstone drops, no second record
    v.root().secrets.kv.v2.delete_metadata_and_all_versions("sel/b", mount_point="secret")
    later = rotate(d, "s", params, pod, again)
    assert B not in dict(held(later)) and len(revoke_records(d)) == 1


def test_a_listed_object_that_reads_as_gone_is_skipped_when_not_held(start_daemon, sel, node_key, short_tmp):
    """kv v2 still lists a key whose latest version is deleted: a pod that does not hold it gets
    the other files (first mount and rotation alike) instead of a refusal; nothing is recorded."""
    policy = short_tmp / "release-policy.yaml"
    write(policy, RELEASE)
    d = attested(start_daemon, sel.issuer, short_tmp, release_policy=str(policy))
    pod = replica(sel.issuer, 0, "app", AUDIENCE)
    params = spc(sel, node_key)
    kv = sel.root().secrets.kv.v2
    kv.delete_latest_version_of_secret("sel/b", mount_point="secret")
    first = d.client.mount(mount_request("s", params, pod))
    assert files_of(first) == {"conf/a": b"pa-5521", "beside": SEALED}
    assert B not in dict(held(first))
    kv.create_or_update_secret("sel/c", {"password": "pc-1"}, mount_point="secret")
    kv.delete_latest_version_of_secret("sel/c", mount_point="secret")
    again = rotate(d, "s", params, pod, first)
    assert files_of(again) == {"conf/a": b"pa-5521", "beside": SEALED}
    assert revoke_records(d) == []
    # written again: listed, readable and served
    kv.create_or_update_secret("sel/b", {"password": "pb-3"}, mount_point="secret")
    assert files_of(rotate(d, "s", params, pod, again))["conf/b"] == b"pb-3"


def test_a_first_mount_with_a_refused_expanded_object_is_refused(start_daemon, sel, node_key, short_tmp):
    policy = short_tmp / "release-policy.yaml"
    write(policy, RELEASE.replace('"secret/data/sel/*"', '"secret/data/sel/a"'))
    d = attested(start_daemon, sel.issuer, short_tmp, release_policy=str(policy))
    err = refused(d, mount_request("s", spc(sel, node_key), replica(sel.issuer, 0, "app", AUDIENCE)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "secret/data/sel/b" in (err.details() or "")
    assert revoke_records(d) == []


def test_a_listing_outage_on_rotation_removes_nothing(setup):
    d, v, pod, params, first, _ = setup
    v.root().sys.create_or_update_policy("sel", 'path "secret/data/sel/*" { capabilities = ["read"] }')
    try:
        err = refused(d, mount_request("s", params, pod, current=held(first)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "may not list" in (err.details() or "")
    finally:
        v.root().sys.create_or_update_policy("sel", VAULT_POLICY)
    assert revoke_records(d) == []


def test_hostile_held_ids_below_the_prefix_are_bounded(setup):
    from provider.revocation import MAX_VANISHED

    d, _, pod, params, first, _ = setup
    forged = [(f"vault/secret/data/sel/x{i:05d}#password", "0" * 32) for i in range(4000)]
    request = mount_request("s", params, pod, current=[*held(first), *forged])
    again = d.client.mount(request)
    assert files_of(again) == files_of(first)
    records = revoke_records(d)
    assert len(records) == MAX_VANISHED and {r["reason"] for r in records} == {"not_found"}


# --- GCP (Secret Manager fake) and Azure (Key Vault fake): the backends' own held patterns ------

KEYGATE = "keygate"


def _cloud_daemon(
    start_daemon, short_tmp: Path, release: str, backends: dict[str, Any]
) -> tuple[Any, Any, Path]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.vault_fixtures import Issuer

    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    policy = short_tmp / "cloud-policy.yaml"
    write(policy, release)
    d = attested(start_daemon, issuer, short_tmp, release_policy=str(policy), backends=backends)
    return d, issuer, policy


def _check_refused_and_vanished(
    setup: tuple[Any, Any, Path], narrowed: str, params: dict, pod: Any, drop
) -> None:
    """Three secrets a, b, c under one selector: b refused by the policy, then c deleted."""
    d, issuer, policy = setup
    pod.tokens = {**pod.tokens, KEYGATE: issuer.mint(pod, KEYGATE)}
    first = d.client.mount(mount_request("c", params, pod))
    assert sorted(files_of(first).values()) == [b"va", b"vb", b"vc"]
    write(policy, narrowed)
    again = rotate(d, "c", params, pod, first)
    assert sorted(files_of(again).values()) == [b"va", b"vc"]
    (record,) = revoke_records(d)
    assert record["reason"] == "policy" and record["object"]["path"].endswith("b")
    assert set(record["object"]["ids"]) <= set(dict(held(first)))
    drop()
    later = rotate(d, "c", params, pod, again)
    assert sorted(files_of(later).values()) == [b"va"]
    vanished = revoke_records(d)[1:]
    assert [r["reason"] for r in vanished] == ["not_found"]
    (lost,) = vanished[0]["object"]["ids"]
    assert (
        lost in dict(held(first)) and lost not in dict(held(later)) and re.search(r"[-/]c(?:[-/]|\Z)", lost)
    )
    rotate(d, "c", params, pod, later)
    assert len(revoke_records(d)) == 2


GCP_RELEASE = """
rules:
  - name: app
    namespaces: [default]
    objects: ["projects/proj/secrets/gs-", "projects/proj/secrets/gs-a/*", "projects/proj/secrets/gs-b/*",
              "projects/proj/secrets/gs-c/*"]
"""


def test_gcp_refused_expanded_and_vanished(start_daemon, gcp, short_tmp):
    from tests.test_gcp import POD_PRINCIPAL

    for n in "abc":
        gcp.sm.add(f"projects/proj/secrets/gs-{n}", f"v{n}".encode(), grant=(POD_PRINCIPAL,))
    gcp.sm.allow_list("projects/proj", POD_PRINCIPAL)
    setup = _cloud_daemon(start_daemon, short_tmp, GCP_RELEASE, {"gcp": gcp.settings()})
    params = {
        "secrets": json.dumps(
            [{"resourceName": "projects/proj/secrets/gs-", "fileName": "g", "selector": {}}]
        )
    }
    _check_refused_and_vanished(
        setup,
        GCP_RELEASE.replace("gs-b", "gs-nothing"),
        params,
        gcp.pod(),
        lambda: gcp.sm.delete("projects/proj/secrets/gs-c"),
    )


AZURE_RELEASE = """
rules:
  - name: app
    namespaces: [default]
    objects: ["az-", "az-a", "az-b", "az-c"]
"""


def test_azure_refused_expanded_and_vanished(start_daemon, azure, short_tmp):
    from tests.test_azure import spc as azure_spc

    vault_name = azure.vault()
    for n in "abc":
        azure.fake.add_secret(vault_name, f"az-{n}", f"v{n}")
    setup = _cloud_daemon(start_daemon, short_tmp, AZURE_RELEASE, {"azure": azure.settings()})
    params = azure_spc(vault_name, [{"objectName": "az-", "objectType": "secret", "selector": {}}])
    _check_refused_and_vanished(
        setup,
        AZURE_RELEASE.replace("az-b", "az-nothing"),
        params,
        azure.pod(),
        lambda: azure.fake.delete(vault_name, "secrets", "az-c"),
    )


AWS_RELEASE = """
rules:
  - name: app
    namespaces: [default]
    objects: ["rsel/", "rsel/a", "rsel/b", "rsel/c"]
"""


def test_aws_refused_expanded_and_vanished(start_daemon, moto, pod, short_tmp):
    from tests.test_aws import admin
    from tests.test_aws import spc as aws_spc

    sm = admin(moto, "secretsmanager")
    for n in "abc":
        sm.create_secret(Name=f"rsel/{n}", SecretString=f"v{n}")
    setup = _cloud_daemon(start_daemon, short_tmp, AWS_RELEASE, {"aws": {"endpoint_url": moto}})
    params = aws_spc([{"objectName": "rsel/", "objectType": "secretsmanager", "selector": {}}])
    drop = lambda: sm.delete_secret(SecretId="rsel/c", ForceDeleteWithoutRecovery=True)  # noqa: E731
    _check_refused_and_vanished(setup, AWS_RELEASE.replace("rsel/b", "rsel/nothing"), params, pod, drop)
