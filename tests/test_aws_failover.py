"""``failoverRegion`` as the AWS provider does it: both regions are read on every Mount, a
client-fault answer (not found, access denied) in either region fails the Mount, and the
failover's answer is used only while the primary region is out.

Real Mounts over the daemon's socket against one moto server serving both regions, each region
behind its own :class:`tests.fault_server.FaultProxy`, so one region can fail while the other works.
"""
# ruff: noqa: F811  (the fixtures of tests.test_aws are imported by name)

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.fault_server import FaultProxy
from tests.test_aws import FAILOVER, REGION, admin, files_of, moto, moto_url, mount_error, pod, sa_token, spc  # noqa: F401

GET = "secretsmanager.GetSecretValue"
SSM = "AmazonSSM.GetParameters"
OBJECTS = [
    {"objectName": "app/db", "objectType": "secretsmanager"},
    {"objectName": "/app/param", "objectType": "ssmparameter"},
]


@pytest.fixture
def regions(moto: str) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    east, west = FaultProxy(moto), FaultProxy(moto)
    try:
        yield east, west
    finally:
        east.stop()
        west.stop()


def seed(moto: str, region: str, secret: str | None = None, param: str | None = None) -> None:
    if secret is not None:
        admin(moto, "secretsmanager", region).create_secret(Name="app/db", SecretString=secret)
    if param is not None:
        admin(moto, "ssm", region).put_parameter(Name="/app/param", Value=param, Type="SecureString")


def start(start_daemon: Any, moto: str, regions: tuple[FaultProxy, FaultProxy], **kw: Any) -> Any:
    east, west = regions
    aws = {
        "endpoint_url": moto,
        "sts_endpoint_url": moto,
        "region_endpoint_urls": {REGION: east.address, FAILOVER: west.address},
    }
    return start_daemon(backends={"aws": aws}, **kw)


def params(objects: list[dict[str, Any]] | None = None) -> dict[str, str]:
    return spc(objects or OBJECTS, failoverRegion=FAILOVER)


def test_both_regions_are_read_every_mount_and_the_primary_answer_is_used(start_daemon, moto, regions, pod):
    seed(moto, REGION, "east-pw", "east-param")
    seed(moto, FAILOVER, "west-pw", "west-param")
    east, west = regions
    d = start(start_daemon, moto, regions)
    for n in (1, 2):
        resp = d.client.mount(mount_request("aws-spc", params(), pod))
        assert files_of(resp) == {"app_db": b"east-pw", "_app_param": b"east-param"}
        assert all(REGION in v.id for v in resp.object_version if v.id.startswith("arn:"))
        assert (east.count(GET), west.count(GET), east.count(SSM), west.count(SSM)) == (n, n, n, n)


@pytest.mark.parametrize("action", ["status", "reset"])
def test_primary_outage_uses_the_failover_answer(start_daemon, moto, regions, pod, action):
    seed(moto, REGION, "east-pw", "east-param")
    seed(moto, FAILOVER, "west-pw", "west-param")
    east, _ = regions
    east.add(GET, action, status=503)
    east.add(SSM, action, status=500)
    d = start(start_daemon, moto, regions)
    resp = d.client.mount(mount_request("aws-spc", params(), pod))
    assert files_of(resp) == {"app_db": b"west-pw", "_app_param": b"west-param"}
    assert "failover region" in d.log_text()


def test_missing_in_the_failover_region_fails_the_mount_like_the_peer(start_daemon, moto, regions, pod):
    """A replica that was never created is reported now, not on the day the primary fails."""
    seed(moto, REGION, "east-pw")
    d = start(start_daemon, moto, regions)
    err = mount_error(d, params(OBJECTS[:1]), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert FAILOVER in err.details() and "app/db" in err.details() and "east-pw" not in err.details()


def test_not_found_in_the_primary_never_falls_back(start_daemon, moto, regions, pod):
    seed(moto, FAILOVER, "west-pw")
    d = start(start_daemon, moto, regions)
    err = mount_error(d, params(OBJECTS[:1]), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND and REGION in err.details()


def test_client_fault_in_one_region_wins_over_an_outage_in_the_other(start_daemon, moto, regions, pod):
    seed(moto, REGION, "east-pw")  # and none in the failover region, while the primary is out
    east, _ = regions
    east.add(GET, "status", status=503)
    d = start(start_daemon, moto, regions)
    err = mount_error(d, params(OBJECTS[:1]), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND and FAILOVER in err.details()


def test_both_regions_out_names_both(start_daemon, moto, regions, pod):
    seed(moto, REGION, "east-pw")
    seed(moto, FAILOVER, "west-pw")
    east, west = regions
    east.add(GET, "status", status=503)
    west.add(GET, "status", status=500)
    d = start(start_daemon, moto, regions)
    err = mount_error(d, params(OBJECTS[:1]), pod)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert REGION in err.details() and f"failover region {FAILOVER}" in err.details()


def test_a_black_holed_failover_region_does_not_block_the_primary_answer(start_daemon, moto, regions, pod):
    seed(moto, REGION, "east-pw")
    _, west = regions
    west.add(GET, "blackhole")
    d = start(start_daemon, moto, regions, mount_timeout=3.0)
    started = time.monotonic()
    resp = d.client.mount(mount_request("aws-spc", params(OBJECTS[:1]), pod))
    assert files_of(resp) == {"app_db": b"east-pw"}
    # Awaited only while the primary could have been: half of the mount time, then counted as out.
    assert 1.2 < time.monotonic() - started < 3.0
    assert "failover region did not answer in time" in d.log_text()


def test_failover_object_is_read_in_the_failover_region_every_mount(start_daemon, moto, regions, pod):
    seed(moto, REGION, "east-pw")
    admin(moto, "secretsmanager", FAILOVER).create_secret(Name="app/replica", SecretString="west-replica")
    east, west = regions
    objects = [
        {
            "objectName": "app/db",
            "objectType": "secretsmanager",
            "objectAlias": "db",
            "failoverObject": {"objectName": "app/replica"},
        }
    ]
    d = start(start_daemon, moto, regions)
    assert files_of(d.client.mount(mount_request("aws-spc", params(objects), pod))) == {"db": b"east-pw"}
    assert west.count(GET) == 1
    east.add(GET, "status", status=503)
    assert files_of(d.client.mount(mount_request("aws-spc", params(objects), pod))) == {"db": b"west-replica"}


def test_ssm_name_missing_in_the_failover_region_fails_the_mount(start_daemon, moto, regions, pod):
    seed(moto, REGION, param="east-param")
    d = start(start_daemon, moto, regions)
    err = mount_error(d, params(OBJECTS[1:]), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert FAILOVER in err.details() and "create it there too" in err.details()


def test_a_replica_deleted_later_fails_the_rotation_and_never_revokes(start_daemon, moto, regions, pod):
    """Revocation follows the primary region: a pod keeps its secret when only the replica goes."""
    seed(moto, REGION, "east-pw")
    seed(moto, FAILOVER, "west-pw")
    d = start(start_daemon, moto, regions)
    first = d.client.mount(mount_request("aws-spc", params(OBJECTS[:1]), pod))
    held = [(v.id, v.version) for v in first.object_version]
    admin(moto, "secretsmanager", FAILOVER).delete_secret(SecretId="app/db", ForceDeleteWithoutRecovery=True)
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("aws-spc", params(OBJECTS[:1]), pod, current=held))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and FAILOVER in info.value.details()
