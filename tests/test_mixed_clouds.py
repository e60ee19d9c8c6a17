"""One SecretProviderClass, four backends, one Mount: Azure Key Vault, GCP Secret Manager, AWS
Secrets Manager and a sealed value, each fetched as the pod through its own real SDK against its
local server, concurrently, all or nothing."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from tests.test_aws import REGION, ROLE, admin, moto, moto_url, sa_token  # noqa: F401 - fixtures
from tests.test_azure import CLIENT_ID, TENANT, azure  # noqa: F401 - fixture
from tests.test_gcp import SECRET_VALUE, gcp  # noqa: F401 - fixture


def mixed(azure_env, gcp_env, sa_token: str, node_key) -> tuple[dict[str, str], Pod, str]:  # noqa: F811
    vault = azure_env.vault()
    azure_env.fake.add_secret(vault, "az-secret", "azure-value-81")
    azure_pod = azure_env.pod()
    gcp_pod = gcp_env.pod()
    pod = Pod(tokens={**azure_pod.tokens, **gcp_pod.tokens, "sts.amazonaws.com": sa_token})
    objects = [
        {"objectName": "az-secret", "backend": "azure", "objectType": "secret"},
        {"objectName": "gcp-db", "backend": "gcp", "resourceName": "projects/proj/secrets/db/versions/2"},
        {"objectName": "aws/db", "backend": "aws", "objectType": "secretsmanager", "objectAlias": "aws-db"},
        {"objectName": "sealed-pw", "sealed": node_key.seal(b"sealed-value-17", "default", "sealed-pw")},
    ]
    params = {
        "keyvaultName": vault,
        "tenantId": TENANT,
        "clientID": CLIENT_ID,
        "region": REGION,
        "roleArn": ROLE,
        "objects": json.dumps(objects),
    }
    return params, pod, vault


def test_one_object_from_each_cloud_and_one_sealed_in_one_mount(
    start_daemon,
    azure,  # noqa: F811
    gcp,  # noqa: F811
    moto,  # noqa: F811
    sa_token,  # noqa: F811
    node_key,
):
    admin(moto, "secretsmanager").create_secret(Name="aws/db", SecretString="aws-value-42")
    d = start_daemon(
        backends={"azure": azure.settings(), "gcp": gcp.settings(), "aws": {"endpoint_url": moto}}
    )
    params, pod, vault = mixed(azure, gcp, sa_token, node_key)
    start = time.perf_counter()
    resp = d.client.mount(mount_request("four-backends", params, pod))
    elapsed = time.perf_counter() - start
    assert {f.path: f.contents for f in resp.files} == {
        "az-secret": b"azure-value-81",
        "gcp-db": SECRET_VALUE,
        "aws-db": b"aws-value-42",
        "sealed-pw": b"sealed-value-17",
    }
    ids = sorted(v.id for v in resp.object_version)
    assert f"azure/{vault}/secret/az-secret" in ids and "sealed/sealed-pw" in ids
    assert "projects/proj/secrets/db/versions/2" in ids
    assert any(i.startswith("arn:aws:secretsmanager:") for i in ids)
    assert elapsed < 30
    for text in (d.log_text(), d.audit_text()):
        for value in ("azure-value-81", "aws-value-42", "sealed-value-17", SECRET_VALUE.decode()):
            assert value not in text


def test_one_failing_cloud_fails_the_whole_mount(
    start_daemon,
    azure,  # noqa: F811
    gcp,  # noqa: F811
    moto,  # noqa: F811
    sa_token,  # noqa: F811
    node_key,
):
    d = start_daemon(
        backends={"azure": azure.settings(), "gcp": gcp.settings(), "aws": {"endpoint_url": moto}}
    )
    params, pod, _ = mixed(azure, gcp, sa_token, node_key)  # aws/db was never created
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("four-backends", params, pod))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "aws/db" in (info.value.details() or "")
