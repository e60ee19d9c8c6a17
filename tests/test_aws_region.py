"""An AWS SPC without ``region`` takes the node's ``topology.kubernetes.io/region`` label, as the
AWS provider does: real Mounts against moto, the Node read from the local Kubernetes API
(keygate_dev.devcluster) with the daemon's own bearer token, once per daemon."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.lint import Linter
from tests.kubeapi import NODE, DevCluster
from tests.test_aws import FAILOVER, REGION, ROLE, admin, files_of, mount_error
from tests.test_aws import moto as moto  # the fixtures, shared
from tests.test_aws import moto_url as moto_url
from tests.test_aws import pod as pod
from tests.test_aws import sa_token as sa_token

LABEL = "topology.kubernetes.io/region"


def kube_settings(kube: DevCluster, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "kube_api_url": kube.url,
        "kube_ca": str(kube.ca_file),
        "kube_token_file": str(kube.token_file),
        "node_name": NODE,
    }
    settings.update(overrides)
    return settings


def start(start_daemon, kube: DevCluster, url: str, aws: dict[str, Any] | None = None, **overrides):
    return start_daemon(
        backends={"aws": {"endpoint_url": url, **(aws or {})}}, **kube_settings(kube, **overrides)
    )


def no_region(objects: list[dict], **params: str) -> dict[str, str]:
    return {"roleArn": ROLE, "objects": json.dumps(objects), **params}


SM = [{"objectName": "db/pw", "objectType": "secretsmanager"}]


def test_region_comes_from_the_node_label_once(start_daemon, kube, moto, pod):
    kube.add_node(NODE, {LABEL: FAILOVER})
    admin(moto, "secretsmanager", FAILOVER).create_secret(Name="db/pw", SecretString="west-value")
    admin(moto, "ssm", FAILOVER).put_parameter(Name="/p", Value="west-param", Type="SecureString")
    admin(moto, "secretsmanager", REGION).create_secret(Name="db/pw", SecretString="east-value")
    d = start(start_daemon, kube, moto)
    objects = [*SM, {"objectName": "/p", "objectType": "ssmparameter"}]
    for _ in range(3):
        resp = d.client.mount(mount_request("aws-spc", no_region(objects), pod))
        assert files_of(resp) == {"db_pw": b"west-value", "_p": b"west-param"}
    assert FAILOVER in resp.object_version[0].id
    assert kube.hits["node"] == 1
    # An SPC region wins over the label, and needs no Node read.
    resp = d.client.mount(mount_request("aws-spc", no_region(SM, region=REGION), pod))
    assert files_of(resp) == {"db_pw": b"east-value"}
    assert kube.hits["node"] == 1


def test_concurrent_first_mounts_read_the_node_once(start_daemon, kube, moto, pod):
    kube.add_node(NODE, {LABEL: REGION})
    admin(moto, "secretsmanager").create_secret(Name="db/pw", SecretString="v")
    d = start(start_daemon, kube, moto)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: d.client.mount(mount_request("aws-spc", no_region(SM), pod)), range(8))
        )
    assert all(files_of(r) == {"db_pw": b"v"} for r in results)
    assert kube.hits["node"] == 1


def test_daemon_setting_wins_over_the_label(start_daemon, kube, moto, pod):
    kube.add_node(NODE, {LABEL: FAILOVER})
    admin(moto, "secretsmanager").create_secret(Name="db/pw", SecretString="east")
    d = start(start_daemon, kube, moto, aws={"region": REGION})
    assert files_of(d.client.mount(mount_request("aws-spc", no_region(SM), pod))) == {"db_pw": b"east"}
    assert kube.hits["node"] == 0


def test_missing_label_is_explained_and_retried_after_the_interval(start_daemon, kube, moto, pod):
    kube.add_node(NODE, {})
    admin(moto, "secretsmanager").create_secret(Name="db/pw", SecretString="late")
    d = start(start_daemon, kube, moto, aws={"node_region_retry": 1.0})
    for _ in range(5):
        err = mount_error(d, no_region(SM), pod)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert LABEL in err.details() and NODE in err.details()
        assert "set region in the SPC" in err.details() and "label the node" in err.details()
    assert kube.hits["node"] == 1  # a failure is remembered, not re-read on every Mount
    kube.add_node(NODE, {LABEL: REGION})
    time.sleep(1.1)
    assert files_of(d.client.mount(mount_request("aws-spc", no_region(SM), pod))) == {"db_pw": b"late"}
    assert kube.hits["node"] == 2
    d.client.mount(mount_request("aws-spc", no_region(SM), pod))
    assert kube.hits["node"] == 2


def test_retry_interval_doubles(start_daemon, kube, moto, pod):
    d = start(start_daemon, kube, moto, aws={"node_region_retry": 0.5})

    def refused_after(pause: float) -> int:
        time.sleep(pause)
        assert mount_error(d, no_region(SM), pod).code() == grpc.StatusCode.UNAVAILABLE
        return kube.hits["node"]

    assert refused_after(0) == 1
    assert refused_after(0.6) == 2  # past the first interval (0.5 s)
    assert refused_after(0.4) == 2  # within the second (1 s)
    assert refused_after(0.7) == 3


@pytest.mark.parametrize(
    ("labels", "settings", "code", "fragments"),
    [
        (None, {}, grpc.StatusCode.UNAVAILABLE, ("does not exist", "node_name")),
        ({LABEL: "moon-1"}, {}, grpc.StatusCode.INVALID_ARGUMENT, ("'moon-1'", "not an AWS region")),
        (
            {LABEL: REGION},
            {"node_name": ""},
            grpc.StatusCode.INVALID_ARGUMENT,
            ("node_name", "label the node"),
        ),
    ],
)
def test_unusable_node_is_refused_clearly(start_daemon, kube, moto, pod, labels, settings, code, fragments):
    if labels is not None:
        kube.add_node(NODE, labels)
    d = start(start_daemon, kube, moto, **settings)
    err = mount_error(d, no_region(SM), pod)
    assert err.code() == code
    assert "set region in the SPC" in err.details()
    for fragment in fragments:
        assert fragment in err.details()


def test_forbidden_node_read_names_the_rbac_rule(start_daemon, kube, moto, pod, tmp_path):
    kube.add_node(NODE, {LABEL: REGION})
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-daemon-token")
    d = start(start_daemon, kube, moto, kube_token_file=str(wrong))
    err = mount_error(d, no_region(SM), pod)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "'get' on nodes" in err.details() and "label the node" in err.details()
    assert "not-the-daemon-token" not in err.details() + d.log_text()


def test_unreachable_api_is_unavailable(start_daemon, kube, moto, pod):
    d = start(start_daemon, kube, moto, kube_api_url="https://127.0.0.1:9")
    err = mount_error(d, no_region(SM), pod)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in err.details() and "set region in the SPC" in err.details()


def test_failover_region_equal_to_the_node_region_is_refused(start_daemon, kube, moto, pod):
    kube.add_node(NODE, {LABEL: REGION})
    d = start(start_daemon, kube, moto)
    err = mount_error(d, no_region(SM, failoverRegion=REGION), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "failoverRegion" in err.details()


def test_lint_accepts_the_peer_pod_identity_example_without_region(tmp_path):
    path = tmp_path / "spc.yaml"
    path.write_text(
        """apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: pod-identity}
spec:
  provider: keygate
  parameters:
    usePodIdentity: "true"
    objects: |
      - objectName: "MySecret"
        objectType: "secretsmanager"
"""
    )
    report = Linter().run(str(path))
    assert report.errors == 0 and report.warnings == 0, report.render()
