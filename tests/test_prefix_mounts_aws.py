"""Prefix mounts against moto: Secrets Manager by name prefix and tags, SSM by path (recursive or
not, more than one page), the release policy asked again for each expanded object; real Mounts."""
# ruff: noqa: F811  (the moto fixtures are imported from tests.test_aws by name)

from __future__ import annotations

import json

import grpc
import pytest

from keygate_dev.devcluster import DevCluster
from keygate_dev.driver_client import Pod, mount_request
from tests.kubeapi import driver_pod, make_pod
from tests.test_aws import REGION, ROLE, admin, moto, moto_url, pod, sa_token  # noqa: F401


def spc(objects: list[dict], **params: str) -> dict[str, str]:
    return {"region": REGION, "roleArn": ROLE, "objects": json.dumps(objects), **params}


def daemon(start_daemon, url: str, **kw):
    return start_daemon(backends={"aws": {"endpoint_url": url}}, **kw)


def mount(d, params: dict[str, str], pod: Pod):
    return d.client.mount(mount_request("app-secrets", params, pod))


def files(resp) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def refused(d, params: dict[str, str], pod: Pod) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        mount(d, params, pod)
    return info.value.code(), info.value.details()


def seed_secrets(url: str) -> None:
    sm = admin(url, "secretsmanager")
    sm.create_secret(Name="app/db", SecretString="db-pass", Tags=[{"Key": "team", "Value": "pay"}])
    sm.create_secret(Name="app/api", SecretString="api-key", Tags=[{"Key": "team", "Value": "web"}])
    sm.create_secret(
        Name="app/nested/x",
        SecretString="nested",
        Tags=[{"Key": "team", "Value": "pay"}, {"Key": "env", "Value": "prod"}],
    )
    sm.create_secret(Name="APP/upper", SecretString="case", Tags=[{"Key": "team", "Value": "pay"}])
    sm.create_secret(Name="other/db", SecretString="no", Tags=[{"Key": "team", "Value": "pay"}])


def test_secrets_manager_prefix(start_daemon, moto: str, pod: Pod):
    seed_secrets(moto)
    d = daemon(start_daemon, moto)
    sel = {"objectName": "app/", "objectType": "secretsmanager", "selector": {}}
    resp = mount(d, spc([sel]), pod)
    # One level: app/nested/x is deeper; APP/upper differs in case (the service's filter ignores it).
    assert files(resp) == {"app/db": b"db-pass", "app/api": b"api-key"}
    assert all(v.id.startswith("arn:aws:secretsmanager:") for v in resp.object_version)
    deep = mount(d, spc([{**sel, "selector": {"depth": 2}, "objectAlias": "s"}]), pod)
    assert files(deep) == {"s/db": b"db-pass", "s/api": b"api-key", "s/nested/x": b"nested"}


def test_secrets_manager_tags_all_must_match(start_daemon, moto: str, pod: Pod):
    seed_secrets(moto)
    d = daemon(start_daemon, moto)
    sel = {"objectName": "app/", "objectType": "secretsmanager", "objectAlias": "pay"}
    one = mount(d, spc([{**sel, "selector": {"tags": {"team": "pay"}, "depth": 3}}]), pod)
    assert files(one) == {"pay/db": b"db-pass", "pay/nested/x": b"nested"}
    # tag-key and tag-value filters match any tag each: team=prod must not match env=prod.
    both = mount(d, spc([{**sel, "selector": {"tags": {"team": "pay", "env": "prod"}, "depth": 3}}]), pod)
    assert files(both) == {"pay/nested/x": b"nested"}
    crossed = mount(d, spc([{**sel, "selector": {"tags": {"team": "prod"}, "depth": 3}}]), pod)
    assert files(crossed) == {}


def test_field_names_fold_as_the_aws_provider(start_daemon, moto: str, pod: Pod):
    seed_secrets(moto)
    d = daemon(start_daemon, moto)
    sel = {"ObjectName": "app/", "objectType": "secretsmanager", "Selector": {"Tags": {"team": "web"}}}
    assert files(mount(d, spc([sel]), pod)) == {"app/api": b"api-key"}


def seed_parameters(url: str, count: int = 13) -> None:
    ssm = admin(url, "ssm")
    for i in range(count):
        ssm.put_parameter(Name=f"/svc/p{i:02d}", Value=f"v{i}", Type="SecureString")
    ssm.put_parameter(Name="/svc/deep/one", Value="d1", Type="String")
    ssm.put_parameter(Name="/svc/deep/er/two", Value="d2", Type="String")
    ssm.put_parameter(Name="/svcother", Value="no", Type="String")


def test_ssm_by_path_one_level_paginated(start_daemon, moto: str, pod: Pod):
    seed_parameters(moto)
    d = daemon(start_daemon, moto)
    resp = mount(d, spc([{"objectName": "/svc", "objectType": "ssmparameter", "selector": {}}]), pod)
    got = files(resp)
    assert got == {f"svc/p{i:02d}": f"v{i}".encode() for i in range(13)}, "13 parameters: two pages of 10"
    backend = d.mounter.registry.get("aws")
    assert backend.stats["GetParametersByPath"] == 1
    assert backend.stats["GetParameters"] == 2, "the values are read in batches of ten"


def test_ssm_recursive_with_depth(start_daemon, moto: str, pod: Pod):
    seed_parameters(moto, count=2)
    d = daemon(start_daemon, moto)
    sel = {"objectName": "/svc/", "objectType": "ssmparameter", "objectAlias": "cfg"}
    two = mount(d, spc([{**sel, "selector": {"depth": 2}}]), pod)
    assert files(two) == {"cfg/p00": b"v0", "cfg/p01": b"v1", "cfg/deep/one": b"d1"}
    three = mount(d, spc([{**sel, "selector": {"depth": 3}}]), pod)
    assert files(three)["cfg/deep/er/two"] == b"d2" and len(files(three)) == 4


def test_rotation_adds_and_removes(start_daemon, moto: str, pod: Pod):
    sm = admin(moto, "secretsmanager")
    sm.create_secret(Name="rot/a", SecretString="a")
    d = daemon(start_daemon, moto)
    params = spc([{"objectName": "rot/", "objectType": "secretsmanager", "selector": {}}])
    assert files(mount(d, params, pod)) == {"rot/a": b"a"}
    sm.create_secret(Name="rot/b", SecretString="b")
    assert files(mount(d, params, pod)) == {"rot/a": b"a", "rot/b": b"b"}
    sm.delete_secret(SecretId="rot/a", ForceDeleteWithoutRecovery=True)
    resp = mount(d, params, pod)
    assert files(resp) == {"rot/b": b"b"} and len(resp.object_version) == 1


def test_cap_and_unsafe_names(start_daemon, moto: str, pod: Pod):
    seed_parameters(moto)
    d = daemon(start_daemon, moto)
    code, details = refused(
        d, spc([{"objectName": "/svc", "objectType": "ssmparameter", "selector": {"limit": 12}}]), pod
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "more than 12 objects" in details
    sm = admin(moto, "secretsmanager")
    sm.create_secret(Name="bad/..x", SecretString="1")
    sm.create_secret(Name="bad/ok", SecretString="2")
    code, details = refused(
        d, spc([{"objectName": "bad/", "objectType": "secretsmanager", "selector": {}}]), pod
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'bad/..x'" in details and "file name" in details


def test_unsafe_double_slash_refused(start_daemon, moto: str, pod: Pod):
    admin(moto, "secretsmanager").create_secret(Name="dbl/a//x", SecretString="1")
    d = daemon(start_daemon, moto)
    sel = {"objectName": "dbl/", "objectType": "secretsmanager", "selector": {"depth": 3}}
    code, details = refused(d, spc([sel]), pod)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "would be written as 'a/x'" in details


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"objectVersionLabel": "AWSCURRENT"}, "'objectVersionLabel' cannot be combined with selector"),
        ({"jmesPath": [{"path": "a", "objectAlias": "a"}]}, "'jmesPath' cannot be combined"),
        (
            {"objectType": "ssmparameter", "selector": {"tags": {"a": "b"}}},
            "selector tags are for Secrets Manager",
        ),
        ({"objectName": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app"}, "not an ARN"),
        ({"selector": {"labels": {"a": "b"}}}, "unknown key 'labels'"),
    ],
)
def test_bad_selectors(start_daemon, moto: str, pod: Pod, extra: dict, fragment: str):
    d = daemon(start_daemon, moto)
    obj = {"objectName": "app/", "objectType": "secretsmanager", "selector": {}, **extra}
    code, details = refused(d, spc([obj]), pod)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details


POLICY = """
rules:
  - name: app
    namespaces: [default]
    serviceAccounts: [app]
    backends: [aws]
    objects: ["app/*", "app"]
"""


def test_policy_refuses_one_expanded_object(start_daemon, moto: str, kube: DevCluster, short_tmp):
    """The policy allows the prefix app and app/*; the selector app also finds appx: refused."""
    sm = admin(moto, "secretsmanager")
    sm.create_secret(Name="app/ok", SecretString="ok")
    policy = short_tmp / "policy.yaml"
    policy.write_text(POLICY)
    d = start_daemon(
        backends={"aws": {"endpoint_url": moto}},
        insecure_skip_attestation=False,
        issuer=kube.issuer,
        kube_api_url=kube.url,
        kube_ca=str(kube.ca_file),
        kube_token_file=str(kube.token_file),
        release_policy=str(policy),
        jwks_min_refresh=0.001,
    )
    spec = make_pod(kube)
    who = driver_pod(spec, kube.mint(spec))
    who.tokens["sts.amazonaws.com"] = kube.mint(spec, "sts.amazonaws.com")
    allowed = spc([{"objectName": "app/", "objectType": "secretsmanager", "selector": {}}])
    assert files(mount(d, allowed, who)) == {"app/ok": b"ok"}
    sm.create_secret(Name="appx", SecretString="not for this pod")
    wide = spc(
        [{"objectName": "app", "objectType": "secretsmanager", "objectAlias": "w", "selector": {"depth": 2}}]
    )
    code, details = refused(d, wide, who)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "does not allow object 'appx'" in details and "not for this pod" not in details
