"""Revocation with the shared-read reuse cache on (``shared_read_ttl``), through real Mounts:
a deleted secret may still be served until the TTL passes (the documented bound), but a "gone"
answer is never reused, so a restored secret is served on the very next rotation (AWS SSM
against moto, Azure pinned versions against the Key Vault fake)."""

# ruff: noqa: F811  (the moto and azure fixtures are imported by name)

from __future__ import annotations

import time

from keygate_dev.driver_client import mount_request
from tests.revocation_helpers import files_of, held, revoke_records, rotate
from tests.test_aws import admin, moto, moto_url, pod, sa_token, spc  # noqa: F401
from tests.test_azure import AzureEnv, azure  # noqa: F401
from tests.test_azure import spc as azure_spc

TTL = 3.0
PARAMS = spc([{"objectName": "/app/param", "objectType": "ssmparameter", "objectAlias": "param"}])


def test_aws_a_restored_parameter_is_served_on_the_next_rotation(start_daemon, moto, pod):
    ssm = admin(moto, "ssm")
    ssm.put_parameter(Name="/app/param", Value="param-8d3e", Type="SecureString")
    d = start_daemon(backends={"aws": {"endpoint_url": moto}}, shared_read_ttl=TTL)
    first = d.client.mount(mount_request("aws", PARAMS, pod))
    assert files_of(first) == {"param": b"param-8d3e"}
    ssm.delete_parameter(Name="/app/param")
    # within the TTL the reused answer is still served: the documented staleness bound
    assert files_of(rotate(d, "aws", PARAMS, pod, first)) == {"param": b"param-8d3e"}
    assert revoke_records(d) == []
    time.sleep(TTL + 0.2)
    gone = rotate(d, "aws", {**PARAMS, "revocation": "empty"}, pod, first)
    assert files_of(gone) == {"param": b""} and len(revoke_records(d)) == 1
    ssm.put_parameter(Name="/app/param", Value="param-back", Type="SecureString")
    # the "not found" batch was not kept: restored, served at once (well within the TTL)
    assert files_of(rotate(d, "aws", PARAMS, pod, gone)) == {"param": b"param-back"}


def test_azure_a_re_enabled_pinned_version_is_served_on_the_next_rotation(azure: AzureEnv, start_daemon):
    vault = azure.vault()
    old = azure.fake.add_secret(vault, "db", "v-old-1")
    azure.fake.add_secret(vault, "db", "v-new-2")
    obj = {"objectName": "db", "objectType": "secret", "objectVersion": old, "objectVersionHistory": 2}
    params = azure_spc(vault, [obj])
    d = start_daemon(backends={"azure": azure.settings()}, shared_read_ttl=TTL)
    pod_ = azure.pod()
    first = d.client.mount(mount_request("kv", params, pod_))
    assert b"v-old-1" in files_of(first).values()
    azure.fake.set_enabled(vault, "secrets", "db", False, version=old)
    time.sleep(TTL + 0.2)
    gone = rotate(d, "kv", params, pod_, first)
    assert b"v-old-1" not in files_of(gone).values()
    assert [r["reason"] for r in revoke_records(d)] == ["disabled"]
    # this rotation's listing (without the version) is reused by the next within the TTL, but a
    # pinned version missing from a reused listing is checked again before it is kept revoked
    azure.fake.set_enabled(vault, "secrets", "db", True, version=old)
    back = rotate(d, "kv", params, pod_, gone)
    assert files_of(back) == files_of(first) and held(back)
