"""Revocation through real Mounts against the Key Vault fake (real azure SDK, real Entra token
exchange): a disabled or deleted secret, or the identity's access removed, leaves the pod on the
next rotation; the same on a first mount fails; a vault outage removes nothing."""

# ruff: noqa: F811  (the azure fixture of tests.test_azure is imported by name)

from __future__ import annotations

from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.revocation_helpers import files_of, held, refused, revocations, revoke_records, rotate
from tests.test_azure import CLIENT_ID, AzureEnv, azure, spc  # noqa: F401


def setup(azure: AzureEnv, start_daemon: Any) -> tuple[Any, str, dict[str, str]]:
    vault = azure.vault()
    azure.fake.add_secret(vault, "db-password", "s3cr3t-Value!")
    azure.fake.add_secret(vault, "api-key", "api-7781")
    params = spc(
        vault,
        [
            {"objectName": "db-password", "objectType": "secret"},
            {"objectName": "api-key", "objectType": "secret", "objectAlias": "api"},
        ],
    )
    return start_daemon(backends={"azure": azure.settings()}), vault, params


def test_disabled_secret_leaves_on_rotation(azure: AzureEnv, start_daemon: Any) -> None:
    d, vault, params = setup(azure, start_daemon)
    pod = azure.pod()
    first = d.client.mount(mount_request("kv", params, pod))
    assert set(files_of(first)) == {"db-password", "api"}
    before = revocations("azure", "disabled")
    azure.fake.set_enabled(vault, "secrets", "db-password", False)
    again = rotate(d, "kv", params, pod, first)
    assert files_of(again) == {"api": b"api-7781"}
    # the id the pod held stays, as a version without a file, so the next rotation still holds it
    ids = {v.id for v in again.object_version}
    assert ids == {f"azure/{vault}/secret/api-key", f"azure/{vault}/secret/db-password"}
    still = rotate(d, "kv", params, pod, again)
    assert files_of(still) == {"api": b"api-7781"}
    azure.fake.set_enabled(vault, "secrets", "db-password", True)
    back = rotate(d, "kv", params, pod, still)
    assert files_of(back) == files_of(first), "enabled again: served again"
    assert revocations("azure", "disabled") == before + 1
    (record,) = revoke_records(d)  # withheld twice, audited once: when it left the pod
    assert record["reason"] == "disabled" and record["object"]["ids"] == [f"azure/{vault}/secret/db-password"]
    assert "s3cr3t-Value!" not in d.audit_text() + d.log_text()


def test_deleted_secret_and_removed_access_leave_on_rotation(azure: AzureEnv, start_daemon: Any) -> None:
    d, vault, params = setup(azure, start_daemon)
    pod = azure.pod()
    first = d.client.mount(mount_request("kv", params, pod))
    azure.fake.delete(vault, "secrets", "db-password")
    again = rotate(d, "kv", {**params, "revocation": "empty"}, pod, first)
    assert files_of(again) == {"db-password": b"", "api": b"api-7781"}
    assert revoke_records(d)[0]["reason"] == "not_found"
    azure.fake.grants[CLIENT_ID].clear()
    last = rotate(d, "kv", params, pod, again)
    # nothing left: emptied, since the driver keeps the old files when a response has none
    assert files_of(last) == {"db-password": b"", "api": b""}
    assert {r["reason"] for r in revoke_records(d)[1:]} == {"forbidden"}


def test_first_mount_of_a_disabled_secret_still_fails(azure: AzureEnv, start_daemon: Any) -> None:
    d, vault, params = setup(azure, start_daemon)
    azure.fake.set_enabled(vault, "secrets", "db-password", False)
    err = refused(d, mount_request("kv", params, azure.pod()))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is disabled (403)" in (err.details() or "")
    assert revoke_records(d) == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_vault_outage_on_rotation_removes_nothing(azure: AzureEnv, start_daemon: Any, status: int) -> None:
    d, vault, params = setup(azure, start_daemon)
    pod = azure.pod()
    first = d.client.mount(mount_request("kv", params, pod))
    azure.fake.set_enabled(vault, "secrets", "db-password", False)
    azure.fake.chaos.add("/secrets/api-key", "status", status=status, retry_after="0")
    err = refused(d, mount_request("kv", params, pod, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert revoke_records(d) == []
    azure.fake.chaos.clear()
    assert set(files_of(rotate(d, "kv", params, pod, first))) == {"api"}
