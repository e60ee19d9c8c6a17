"""Revocation through real Mounts against moto (real boto3, real STS web-identity exchange): a
secret deleted or scheduled for deletion, or an SSM parameter deleted, leaves the pod on the
next rotation; the same on a first mount fails; an outage (FaultProxy) removes nothing."""

# ruff: noqa: F811  (the moto fixtures of tests.test_aws are imported by name)

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.fault_server import FaultProxy, _response, aws_error
from tests.revocation_helpers import files_of, held, refused, revocations, revoke_records, rotate
from tests.test_aws import admin, moto, moto_url, pod, sa_token, spc  # noqa: F401

OBJECTS = [
    {
        "objectName": "app/db",
        "objectType": "secretsmanager",
        "jmesPath": [{"path": "user", "objectAlias": "user"}],
    },
    {"objectName": "app/api", "objectType": "secretsmanager"},
    {"objectName": "/app/param", "objectType": "ssmparameter", "objectAlias": "param"},
]
PARAMS = spc(OBJECTS)
DB = json.dumps({"user": "admin-7731", "password": "pw-2209"})


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    sm = admin(moto, "secretsmanager")
    sm.create_secret(Name="app/db", SecretString=DB)
    sm.create_secret(Name="app/api", SecretString="api-5521")
    admin(moto, "ssm").put_parameter(Name="/app/param", Value="param-8d3e", Type="SecureString")
    server = FaultProxy(moto)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mounted(start_daemon: Any, proxy: FaultProxy, pod: Any) -> tuple[Any, Any]:
    d = start_daemon(backends={"aws": {"endpoint_url": proxy.address}}, mount_timeout=3.0)
    first = d.client.mount(mount_request("aws", PARAMS, pod))
    assert set(files_of(first)) == {"app_db", "user", "app_api", "param"}
    return d, first


def test_secret_scheduled_for_deletion_leaves_with_its_derived_files(moto, mounted, pod):
    d, first = mounted
    before = revocations("aws", "deleted")
    admin(moto, "secretsmanager").delete_secret(SecretId="app/db", RecoveryWindowInDays=7)
    again = rotate(d, "aws", PARAMS, pod, first)
    assert files_of(again) == {"app_api": b"api-5521", "param": b"param-8d3e"}
    assert revocations("aws", "deleted") == before + 1
    (record,) = revoke_records(d)
    db_ids = [i for i, _ in held(first) if ":secret:app/db-" in i]
    assert len(db_ids) == 2 and record["object"]["ids"] == sorted(db_ids, key=lambda i: (len(i), i))
    assert {i for i, _ in held(again)} == {i for i, _ in held(first)}  # tombstones keep the ids
    assert "pw-2209" not in d.audit_text() + d.log_text()
    admin(moto, "secretsmanager").restore_secret(SecretId="app/db")
    assert files_of(rotate(d, "aws", PARAMS, pod, again)) == files_of(first), "restored: served again"


def test_secret_deleted_and_parameter_deleted_leave_on_rotation(moto, mounted, pod):
    d, first = mounted
    admin(moto, "secretsmanager").delete_secret(SecretId="app/api", ForceDeleteWithoutRecovery=True)
    admin(moto, "ssm").delete_parameter(Name="/app/param")
    again = rotate(d, "aws", {**PARAMS, "revocation": "empty"}, pod, first)
    assert files_of(again) == {**files_of(first), "app_api": b"", "param": b""}
    assert sorted(r["reason"] for r in revoke_records(d)) == ["not_found", "not_found"]


@pytest.mark.parametrize("how", ["scheduled", "deleted"])
def test_first_mount_of_a_deleted_secret_still_fails(start_daemon, moto, proxy, pod, how):
    sm = admin(moto, "secretsmanager")
    if how == "scheduled":
        sm.delete_secret(SecretId="app/db", RecoveryWindowInDays=7)
    else:
        sm.delete_secret(SecretId="app/db", ForceDeleteWithoutRecovery=True)
    d = start_daemon(backends={"aws": {"endpoint_url": proxy.address}})
    err = refused(d, mount_request("aws", PARAMS, pod))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    words = "scheduled for deletion" if how == "scheduled" else "was not found"
    assert words in (err.details() or "")
    assert revoke_records(d) == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_an_outage_on_rotation_removes_nothing(moto, proxy, mounted, pod, status):
    d, first = mounted
    admin(moto, "secretsmanager").delete_secret(SecretId="app/db", ForceDeleteWithoutRecovery=True)
    proxy.add("secretsmanager.GetSecretValue", "status", status=status)
    err = refused(d, mount_request("aws", PARAMS, pod, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert revoke_records(d) == []
    proxy.clear()
    assert set(files_of(rotate(d, "aws", PARAMS, pod, first))) == {"app_api", "param"}


def access_denied(status: int, route: str) -> bytes:
    """What Secrets Manager answers once the role's policy no longer allows GetSecretValue."""
    if status != 400:
        return aws_error(status, route)
    body = json.dumps({"__type": "AccessDeniedException", "Message": "not authorized to perform"})
    return _response(400, body.encode(), "application/x-amz-json-1.1")


def test_read_denied_to_the_role_after_sts_is_revoked(start_daemon, moto, proxy, pod):
    proxy.error = access_denied
    d = start_daemon(backends={"aws": {"endpoint_url": proxy.address}})
    first = d.client.mount(mount_request("aws", PARAMS, pod))
    proxy.add("secretsmanager.GetSecretValue", "status", status=400)
    again = rotate(d, "aws", PARAMS, pod, first)
    assert files_of(again) == {"param": b"param-8d3e"}
    assert {r["reason"] for r in revoke_records(d)} == {"forbidden"}
    assert proxy.count("AssumeRoleWithWebIdentity") >= 1, "the pod's STS exchange succeeded"


def test_first_mount_with_the_read_denied_is_refused(start_daemon, moto, proxy, pod):
    proxy.error = access_denied
    proxy.add("secretsmanager.GetSecretValue", "status", status=400)
    d = start_daemon(backends={"aws": {"endpoint_url": proxy.address}})
    err = refused(d, mount_request("aws", PARAMS, pod))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "AccessDeniedException" in (
        err.details() or ""
    )
