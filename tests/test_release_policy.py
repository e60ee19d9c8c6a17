"""The release policy through real Mounts: rules, image requirements, reload, start-up refusal."""

from __future__ import annotations

import os
import re

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.app import build_mounter
from provider.config import Config
from provider.errors import KeygateError
from tests.kubeapi import DevCluster, attest_settings, driver_pod, make_pod, pinned
from tests.test_attest import DENIED, refused, spc

APP = pinned("ghcr.io/acme/app")
APP_DIGEST = APP.split("@")[1]

POLICY = f"""
default: allow
rules:
  - name: payments
    namespaces: [payments]
    serviceAccounts: [api]
    backends: [sealed]
    objects: ["db-*", "{{namespace}}-shared"]
    images:
      allowedRepositories: [ghcr.io/acme]
      allowedDigests: ["{APP_DIGEST}"]
"""


def write(path, text: str) -> None:
    """Replace the file as a ConfigMap update does (new inode, atomic rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def policy_file(short_tmp):
    path = short_tmp / "release-policy.yaml"
    write(path, POLICY)
    return path


def payments_pod(kube: DevCluster, **kw):
    kw.setdefault("images", {"app": APP})
    return make_pod(kube, namespace="payments", service_account="api", **kw)


def payments_request(kube, node_key, pod, names=("db-password",)):
    return mount_request("s", spc(node_key, pod.namespace, names), driver_pod(pod, kube.mint(pod)))


def test_rule_allows_matching_objects_and_images(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube)
    resp = d.client.mount(payments_request(kube, node_key, pod, ("db-password", "payments-shared")))
    assert sorted(f.path for f in resp.files) == ["db-password", "payments-shared"]


def test_object_outside_rule_denied(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube)
    refused(
        d,
        payments_request(kube, node_key, pod, ("db-password", "signing-key")),
        DENIED,
        "rule 'payments' does not allow object 'signing-key'",
    )
    assert kube.hits["pod"] == 0, "policy is checked before the Pod GET"


def test_backend_outside_rule_denied(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube)
    write(policy_file, POLICY.replace("backends: [sealed]", "backends: [vault]"))
    refused(
        d,
        payments_request(kube, node_key, pod),
        DENIED,
        "does not allow backend 'sealed'",
    )


def test_digest_not_in_allowlist(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube, images={"app": pinned("ghcr.io/acme/app", "v2")})
    refused(d, payments_request(kube, node_key, pod), DENIED, "not in the release policy's digest allowlist")


def test_repository_not_allowed(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube, images={"app": APP, "tool": pinned("ghcr.io/acme-evil/tool")})
    refused(
        d,
        payments_request(kube, node_key, pod),
        DENIED,
        "container `tool` image repository `ghcr.io/acme-evil/tool` is not allowed",
    )


def test_default_deny_without_matching_rule(attest_daemon, kube, node_key, policy_file):
    write(policy_file, POLICY.replace("default: allow", "default: deny"))
    d = attest_daemon(release_policy=str(policy_file))
    pod = make_pod(kube, namespace="web", service_account="frontend")
    refused(
        d,
        payments_request(kube, node_key, pod),
        DENIED,
        "no release policy rule covers service account 'frontend' in namespace 'web'",
    )


def test_no_policy_file_means_digest_pinning_only(attest_daemon, kube, node_key):
    d = attest_daemon()
    pod = make_pod(kube, images={"app": pinned("quay.io/anyone/anything")})
    assert d.client.mount(payments_request(kube, node_key, pod)).files


def test_reload_applies_new_policy(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube)
    assert d.client.mount(payments_request(kube, node_key, pod)).files
    write(policy_file, POLICY.replace('"db-*"', '"cache-*"'))
    refused(d, payments_request(kube, node_key, pod), DENIED, "does not allow object 'db-password'")
    assert "release policy reloaded" in d.log_text()


def test_invalid_reload_keeps_last_good_policy(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube)
    write(policy_file, "rules:\n  - name: broken\n    namespaces: [payments\n")
    assert d.client.mount(payments_request(kube, node_key, pod)).files
    refused(d, payments_request(kube, node_key, pod, ("signing-key",)), DENIED, "rule 'payments'")
    assert "release policy reload failed; keeping the last good policy" in d.log_text()
    write(policy_file, POLICY.replace("default: allow", "default: deny"))
    assert d.client.mount(payments_request(kube, node_key, pod)).files
    assert "release policy reloaded" in d.log_text()


def test_policy_file_removed_keeps_last_good(attest_daemon, kube, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = payments_pod(kube)
    policy_file.unlink()
    refused(d, payments_request(kube, node_key, pod, ("signing-key",)), DENIED, "rule 'payments'")
    assert "release policy file vanished" in d.log_text()


INVALID = [
    ("not_yaml", "rules: [", "is not valid YAML at line"),
    ("not_mapping", "- a\n- b\n", "must be a mapping"),
    ("unknown_top_key", "rulez: []\n", "unknown keys rulez"),
    ("bad_default", "default: maybe\n", "default must be 'allow' or 'deny'"),
    ("rule_without_namespaces", "rules:\n  - name: x\n    backends: [vault]\n", "'namespaces' is required"),
    ("unknown_rule_key", "rules:\n  - name: x\n    namespaces: [a]\n    imagez: {}\n", "unknown keys imagez"),
    (
        "bad_digest",
        "rules:\n  - name: x\n    namespaces: [a]\n    images: {allowedDigests: [sha256:xyz]}\n",
        "'sha256:xyz' is not sha256:<64 hex>",
    ),
    (
        "duplicate_name",
        "rules:\n  - {name: x, namespaces: [a]}\n  - {name: x, namespaces: [b]}\n",
        "used twice",
    ),
    ("empty_list", "rules:\n  - {name: x, namespaces: []}\n", "non-empty list of strings"),
]


@pytest.mark.parametrize(("case", "text", "fragment"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_policy_refuses_to_start(kube, short_tmp, case, text, fragment):
    path = short_tmp / "policy.yaml"
    path.write_text(text)
    config = Config(socket=str(short_tmp / "x.sock"), **attest_settings(kube, release_policy=str(path)))
    with pytest.raises(KeygateError, match=re.escape(fragment)):
        build_mounter(config)


def test_missing_policy_file_refuses_to_start(kube, short_tmp):
    config = Config(**attest_settings(kube, release_policy=str(short_tmp / "absent.yaml")))
    with pytest.raises(KeygateError, match="does not exist"):
        build_mounter(config)


def test_serve_refuses_invalid_policy_with_clear_message(kube, short_tmp, capsys):
    from provider.cli import main

    path = short_tmp / "policy.yaml"
    path.write_text("default: maybe\n")
    args = ["serve", "--socket", str(short_tmp / "s.sock"), "--release-policy", str(path)]
    for key, value in attest_settings(kube).items():
        if isinstance(value, bool):
            continue
        args += [f"--{key.replace('_', '-')}", str(value)]
    assert main(args) == 2
    assert "default must be 'allow' or 'deny'" in capsys.readouterr().err


def test_attestation_config_is_required(short_tmp):
    with pytest.raises(KeygateError, match="attestation needs the service-account issuer"):
        build_mounter(Config(socket=str(short_tmp / "x.sock"), insecure_skip_image_check=True))


def test_unpinned_image_denied_by_default_policy_grpc_code(attest_daemon, kube, node_key):
    d = attest_daemon()
    pod = make_pod(kube, images={"app": "nginx:1.27"})
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(payments_request(kube, node_key, pod))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == (
        "[PermissionDenied] container `app` image `nginx:1.27` is not pinned by digest; use "
        "`docker.io/library/nginx@sha256:<digest>` (`docker buildx imagetools inspect nginx:1.27` "
        "prints the digest) (pod default/app-0)"
    )


def test_no_in_cluster_config_refuses_to_start(short_tmp, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = Config(socket=str(short_tmp / "x.sock"), issuer="https://issuer.example")
    with pytest.raises(KeygateError, match="no in-cluster Kubernetes configuration"):
        build_mounter(config)
