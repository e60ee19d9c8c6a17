"""Revocation through real Mounts against OpenBao: a secret deleted (kv v2 delete, destroy,
metadata delete) or the read taken out of the role's policy (403 after a fresh login) leaves
the pod on the next rotation; the same on a first mount fails; a sealed server removes nothing."""

# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.revocation_helpers import files_of, held, refused, revocations, revoke_records, rotate
from tests.vault_fixtures import BaoServer, Vault, configure, spare_bao, vault  # noqa: F401

POLICY = 'path "secret/data/revo/*" { capabilities = ["read"] }\n'
OBJECTS = """
- {objectName: db, secretPath: secret/data/revo/db, secretKey: password}
- {objectName: db-again, secretPath: secret/data/revo/db, secretKey: password}
- {objectName: api, secretPath: secret/data/revo/api, secretKey: key}
"""


@pytest.fixture
def revo(vault: Vault) -> Iterator[Vault]:
    """A role of its own (``revo``) whose policy the tests may narrow, and its secrets."""
    root = vault.root()
    root.sys.create_or_update_policy("revo", POLICY)
    role = root.read("auth/jwt/role/app")["data"]
    root.write("auth/jwt/role/revo", **{**role, "token_policies": ["revo"]})
    root.secrets.kv.v2.create_or_update_secret("revo/db", {"password": "pw-revo-4471"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret("revo/api", {"key": "api-revo-9921"}, mount_point="secret")
    yield vault
    root.sys.create_or_update_policy("revo", POLICY)
    root.secrets.kv.v2.delete_metadata_and_all_versions("revo/db", mount_point="secret")
    root.secrets.kv.v2.delete_metadata_and_all_versions("revo/api", mount_point="secret")


def params(v: Vault, **extra: str) -> dict[str, str]:
    return v.params(OBJECTS, roleName="revo", **extra)


def mounted(start_daemon: Any, v: Vault) -> tuple[Any, Any, Any]:
    d = start_daemon()
    pod = v.issuer.pod()
    first = d.client.mount(mount_request("vs", params(v), pod))
    assert files_of(first) == {"db": b"pw-revo-4471", "db-again": b"pw-revo-4471", "api": b"api-revo-9921"}
    return d, pod, first


@pytest.mark.parametrize("how", ["delete", "destroy", "metadata"])
def test_deleted_secret_leaves_on_rotation(start_daemon, revo: Vault, how: str):
    d, pod, first = mounted(start_daemon, revo)
    kv = revo.root().secrets.kv.v2
    if how == "delete":
        kv.delete_latest_version_of_secret("revo/db", mount_point="secret")
    elif how == "destroy":
        kv.destroy_secret_versions("revo/db", versions=[1], mount_point="secret")
    else:
        kv.delete_metadata_and_all_versions("revo/db", mount_point="secret")
    before = revocations("vault", "not_found")
    again = rotate(d, "vs", params(revo), pod, first)
    assert files_of(again) == {"api": b"api-revo-9921"}
    assert revocations("vault", "not_found") == before + 2  # both files of the secret
    ids = sorted(r["object"]["ids"][0] for r in revoke_records(d))
    assert ids == ["vault/secret/data/revo/db#password~db", "vault/secret/data/revo/db#password~db-again"]
    assert {i for i, _ in held(again)} == {i for i, _ in held(first)}
    assert "pw-revo-4471" not in d.audit_text() + d.log_text()
    kv.create_or_update_secret("revo/db", {"password": "pw-new-1188"}, mount_point="secret")
    back = rotate(d, "vs", params(revo), pod, again)
    assert files_of(back)["db"] == b"pw-new-1188", "written again: served again"


def test_policy_taken_from_the_role_is_a_403_after_relogin_and_revokes(start_daemon, revo: Vault):
    d, pod, first = mounted(start_daemon, revo)
    revo.root().sys.create_or_update_policy(
        "revo", 'path "secret/data/revo/api" { capabilities = ["read"] }\n'
    )
    again = rotate(d, "vs", params(revo, revocation="empty"), pod, first)
    assert files_of(again) == {"db": b"", "db-again": b"", "api": b"api-revo-9921"}
    assert {r["reason"] for r in revoke_records(d)} == {"forbidden"}
    assert {r["outcome"] for r in revoke_records(d)} == {"emptied"}
    assert d.mounter.registry.get("vault").stats["relogins_after_403"] >= 1


def test_first_mount_of_a_deleted_secret_or_a_denied_path_still_fails(start_daemon, revo: Vault):
    d = start_daemon()
    pod = revo.issuer.pod()
    revo.root().secrets.kv.v2.delete_metadata_and_all_versions("revo/db", mount_point="secret")
    err = refused(d, mount_request("vs", params(revo), pod))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "secret/data/revo/db" in (err.details() or "")
    revo.root().secrets.kv.v2.create_or_update_secret("revo/db", {"password": "x"}, mount_point="secret")
    revo.root().sys.create_or_update_policy(
        "revo", 'path "secret/data/revo/api" { capabilities = ["read"] }\n'
    )
    err = refused(d, mount_request("vs", params(revo), pod))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert revoke_records(d) == []


def test_a_sealed_server_on_rotation_removes_nothing(start_daemon, vault: Vault, spare_bao: BaoServer):
    configure(spare_bao, vault.issuer)
    root = spare_bao.root()
    root.sys.create_or_update_policy("revo", POLICY)
    role = root.read("auth/jwt/role/app")["data"]
    root.write("auth/jwt/role/revo", **{**role, "token_policies": ["revo"]})
    root.secrets.kv.v2.create_or_update_secret("revo/db", {"password": "pw-revo-4471"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret("revo/api", {"key": "api-revo-9921"}, mount_point="secret")
    v = Vault(spare_bao, vault.issuer)
    d, pod, first = mounted(start_daemon, v)
    root.secrets.kv.v2.delete_metadata_and_all_versions("revo/db", mount_point="secret")
    root.sys.seal()
    err = refused(d, mount_request("vs", params(v), pod, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "is sealed" in (err.details() or "")
    assert revoke_records(d) == []
