"""Revocation through real Mounts against the Secret Manager gRPC fake: a version disabled or
destroyed, a secret deleted or its grant removed leaves the pod on the next rotation; the same
on a first mount, or an outage on a rotation, fails the Mount and removes nothing."""

# ruff: noqa: F811  (the gcp fixture of tests.test_gcp is imported by name)

from __future__ import annotations

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.revocation_helpers import files_of, held, refused, revocations, revoke_records, rotate
from tests.test_gcp import POD_PRINCIPAL, SECRET_VALUE, gcp, secrets_param  # noqa: F401

DB = "projects/proj/secrets/db"
CFG = "projects/proj/secrets/cfg"
PARAMS = secrets_param(
    {"resourceName": f"{DB}/versions/2", "fileName": "db"},
    {"resourceName": f"{CFG}/versions/latest", "fileName": "cfg"},
)


@pytest.fixture
def mounted(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    pod = gcp.pod()
    first = d.client.mount(mount_request("spc", PARAMS, pod))
    assert set(files_of(first)) == {"db", "cfg"}
    return d, pod, first


@pytest.mark.parametrize(
    ("state", "reason"), [("DISABLED", "disabled"), ("DESTROYED", "deleted")], ids=["disabled", "destroyed"]
)
def test_disabled_or_destroyed_version_leaves_on_rotation(gcp, mounted, state, reason):
    d, pod, first = mounted
    before = revocations("gcp", reason)
    gcp.sm.set_state(DB, 2, state)
    again = rotate(d, "spc", PARAMS, pod, first)
    assert set(files_of(again)) == {"cfg"}
    assert {v.id for v in again.object_version} == {f"{CFG}/versions/latest", f"{DB}/versions/2"}
    assert revocations("gcp", reason) == before + 1
    (record,) = revoke_records(d)
    assert record["reason"] == reason and record["outcome"] == "removed"
    assert record["object"]["ids"] == [f"{DB}/versions/2"]
    assert SECRET_VALUE.decode(errors="replace") not in d.audit_text()


def test_deleted_secret_and_removed_grant_leave_on_rotation(gcp, mounted):
    d, pod, first = mounted
    gcp.sm.delete(DB)
    gcp.sm.revoke(CFG, POD_PRINCIPAL)
    again = rotate(d, "spc", PARAMS, pod, first)
    assert files_of(again) == {"db": b"", "cfg": b""}  # no file left would keep the old ones
    assert sorted(r["reason"] for r in revoke_records(d)) == ["forbidden", "not_found"]


def test_empty_mode_keeps_a_zero_byte_file(gcp, mounted):
    d, pod, first = mounted
    gcp.sm.set_state(DB, 2, "DISABLED")
    params = {**PARAMS, "revocation": "empty"}
    again = rotate(d, "spc", params, pod, first)
    assert files_of(again)["db"] == b"" and files_of(again)["cfg"] == files_of(first)["cfg"]
    assert {v.id for v in again.object_version} == {f"{DB}/versions/2", f"{CFG}/versions/latest"}
    assert revoke_records(d)[0]["outcome"] == "emptied"


def test_first_mount_of_a_disabled_version_still_fails(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    gcp.sm.set_state(DB, 2, "DISABLED")
    err = refused(d, mount_request("spc", PARAMS, gcp.pod()))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "disabled or destroyed" in (err.details() or "")
    assert revoke_records(d) == []


def test_an_object_the_pod_does_not_hold_yet_fails_the_rotation(gcp, mounted):
    """An object added to the SPC since the last mount is a first mount for that object."""
    d, pod, first = mounted
    params = secrets_param(
        {"resourceName": f"{DB}/versions/2", "fileName": "db"},
        {"resourceName": "projects/proj/secrets/nope/versions/1", "fileName": "nope"},
    )
    err = refused(d, mount_request("spc", params, pod, current=held(first)))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope" in (err.details() or "")


@pytest.mark.parametrize("status", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_an_outage_on_rotation_fails_and_removes_nothing(gcp, mounted, status):
    d, pod, first = mounted
    gcp.sm.set_state(DB, 2, "DISABLED")
    gcp.sm.fail_all = status
    err = refused(d, mount_request("spc", PARAMS, pod, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert revoke_records(d) == []
    gcp.sm.fail_all = None
    assert set(files_of(rotate(d, "spc", PARAMS, pod, first))) == {"cfg"}


def test_parameter_manager_version_disabled_leaves_on_rotation(start_daemon, gcp):
    param = "projects/proj/locations/global/parameters/app-config"
    gcp.pm.add(param, "v1", b"mode: live\n", grant=(POD_PRINCIPAL,))
    d = start_daemon(backends={"gcp": gcp.settings()})
    pod = gcp.pod()
    params = secrets_param(
        {"resourceName": f"{param}/versions/v1", "fileName": "config"},
        {"resourceName": f"{CFG}/versions/latest", "fileName": "cfg"},
    )
    first = d.client.mount(mount_request("spc", params, pod))
    assert files_of(first)["config"] == b"mode: live\n"
    gcp.pm.add(param, "v1", b"mode: live\n", grant=(POD_PRINCIPAL,), disabled=True)
    again = rotate(d, "spc", params, pod, first)
    assert set(files_of(again)) == {"cfg"}
    assert [r["reason"] for r in revoke_records(d)] == ["disabled"]


def test_hostile_current_versions_cost_bounded_work(gcp, mounted):
    """Thousands of long ids that share the revoked object's id as a prefix (the request's own
    data): matching stays bounded and still finds the id the pod really holds."""
    import time

    d, pod, first = mounted
    gcp.sm.set_state(DB, 2, "DISABLED")
    junk = [(f"{DB}/versions/2#{'x' * 900}{n}", "v") for n in range(3000)]
    started = time.monotonic()
    again = d.client.mount(mount_request("spc", PARAMS, pod, current=[*held(first), *junk]))
    assert time.monotonic() - started < 10
    assert set(files_of(again)) == {"cfg"}
    assert revoke_records(d)[0]["object"]["ids"] == [f"{DB}/versions/2"]
