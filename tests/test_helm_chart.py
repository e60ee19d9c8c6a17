"""The Helm chart (daemonset/chart/keygate), rendered by the real helm 3 and helm 4 binaries.

With default values the chart renders exactly the objects of the kustomize base; each values
toggle renders what its kustomize component (or documented overlay) does; values.schema.json
and the chart's own checks refuse bad values with the value's name; every rendered object
passes the same strict Kubernetes schema validation as the base. The binaries come from
``tests/helm_binary.py`` (``python3 tests/helm_binary.py``; ``.ci/run`` runs it): without them
the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests import helm_binary
from tests.test_manifests import (
    BASE,
    K8S_VERSIONS,
    _doc_overlay,
    _manifest_config,
    _overlay,
    by_kind,
    kustomize,
)

CHART = BASE / "chart" / "keygate"
K8S = K8S_VERSIONS[-1]
DIGEST = "sha256:" + "ab" * 32
# The driver's own CSIDriver as its v1.6.0 release manifests create it (deploy/csidriver.yaml).
DRIVER_CSIDRIVER = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "CSIDriver",
    "metadata": {"name": "secrets-store.csi.k8s.io"},
    "spec": {
        "podInfoOnMount": True,
        "attachRequired": False,
        "volumeLifecycleModes": ["Ephemeral"],
        "requiresRepublish": True,
    },
}


@pytest.fixture(scope="module", params=helm_binary.RELEASES, ids=lambda r: f"helm{r.major}")
def helm(request, tmp_path_factory) -> dict[str, Any]:
    release: helm_binary.HelmRelease = request.param
    path = helm_binary.find(release)
    if path is None:
        reason = (
            f"helm {release.version} is not in {helm_binary.cache_dir()}: run python3 tests/helm_binary.py"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must install it, see .ci/run)")
        pytest.skip(reason)
    home = tmp_path_factory.mktemp(f"helm{release.major}-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return {"path": str(path), "env": env, "major": release.major, "dir": home}


def run_helm(helm: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm["path"], *args], capture_output=True, text=True, timeout=60, env=helm["env"], check=False
    )


def _values_file(helm: dict[str, Any], values: dict[str, Any] | None) -> list[str]:
    if not values:
        return []
    path = helm["dir"] / f"values-{len(list(helm['dir'].glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def template_result(
    helm: dict[str, Any], values: dict[str, Any] | None = None, *, kube: str = K8S, sets: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    args = ["template", "keygate", str(CHART), "--kube-version", kube, *_values_file(helm, values)]
    for item in sets:
        args += ["--set", item]
    return run_helm(helm, *args)


def render(helm: dict[str, Any], values: dict[str, Any] | None = None, **kw: Any) -> list[dict]:
    out = template_result(helm, values, **kw)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def refused(helm: dict[str, Any], values: dict[str, Any] | None = None, **kw: Any) -> str:
    out = template_result(helm, values, **kw)
    assert out.returncode != 0, f"accepted: {values} {kw}"
    return out.stderr


def keyed(docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    index = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}
    assert len(index) == len(docs), "two objects with the same kind, namespace and name"
    return index


def assert_same_objects(chart: list[dict], kustomized: list[dict]) -> None:
    left, right = keyed(chart), keyed(kustomized)
    assert sorted(left) == sorted(right)
    for key, obj in left.items():
        assert obj == right[key], key


def pod_of(docs: list[dict]) -> dict:
    (ds,) = by_kind(docs, "DaemonSet")
    return ds["spec"]["template"]


def container_of(docs: list[dict]) -> dict:
    (container,) = pod_of(docs)["spec"]["containers"]
    return container


def env_of(docs: list[dict]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_of(docs)["env"]}


def validate_all(docs: list[dict], version: str = K8S) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


EVERYTHING_ON = {
    "tokenReview": {"enabled": True},
    "podWatch": {"enabled": True},
    "csiDriver": {"create": True, "awsAudiences": True, "extraTokenRequests": [{"audience": "vault"}]},
    "image": {"digest": DIGEST},
    "imagePullSecrets": [{"name": "regcred"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}
                        ]
                    }
                ]
            }
        }
    },
    "podAnnotations": {"example.com/team": "security"},
    "podLabels": {"example.com/tier": "node"},
    "extraArgs": ["--max-inflight=64"],
    "extraEnv": [{"name": "KEYGATE_SHARED_READS", "value": "true"}],
    "extraVolumes": [{"name": "vault-ca", "configMap": {"name": "vault-ca"}}],
    "extraVolumeMounts": [{"name": "vault-ca", "mountPath": "/etc/keygate/vault-ca", "readOnly": True}],
    "serviceAccount": {"annotations": {"example.com/owner": "platform"}},
}


def test_lint_is_clean(helm):
    for args in ((), ("--strict",)):
        out = run_helm(helm, "lint", str(CHART), *args)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout
    values = _values_file(helm, EVERYTHING_ON)
    out = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert out.returncode == 0 and "[WARNING]" not in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("kube", K8S_VERSIONS)
def test_defaults_render_the_kustomize_base(helm, kube):
    chart = render(helm, kube=kube)
    assert_same_objects(chart, kustomize(BASE))
    validate_all(chart, kube)


def test_defaults_need_no_kube_version(helm):
    """helm's own default cluster version (no --kube-version) renders the same objects."""
    out = run_helm(helm, "template", "keygate", str(CHART))
    assert out.returncode == 0, out.stderr
    assert_same_objects([d for d in yaml.safe_load_all(out.stdout) if d], kustomize(BASE))


def test_the_release_namespace_is_not_used(helm):
    """Objects go to namespace.name whatever -n says, like `kubectl apply -k daemonset/`."""
    out = run_helm(helm, "template", "keygate", str(CHART), "--kube-version", K8S, "-n", "default")
    assert out.returncode == 0, out.stderr
    assert_same_objects([d for d in yaml.safe_load_all(out.stdout) if d], kustomize(BASE))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_everything_on_renders_valid_objects(helm, version):
    docs = render(helm, EVERYTHING_ON, kube=version)
    validate_all(docs, version)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("ClusterRole", "keygate-tokenreview"), ("ClusterRole", "keygate-pod-watch")} <= names
    assert ("CSIDriver", "secrets-store.csi.k8s.io") in names


def test_tokenreview_toggle_renders_the_documented_overlay(helm, tmp_path, short_tmp):
    body = _doc_overlay("## 5. Optional: TokenReview attestation").replace("../keygate/daemonset", "BASE")
    chart = render(helm, {"tokenReview": {"enabled": True}})
    assert_same_objects(chart, kustomize(_overlay(tmp_path, body)))
    (ds,) = by_kind(chart, "DaemonSet")
    policy = short_tmp / "policy.yaml"
    policy.write_text("default: allow\n")
    assert _manifest_config(ds, policy, "node-a").token_review is True


def test_pod_watch_toggle_renders_the_component(helm, tmp_path):
    overlay = _overlay(tmp_path, "resources: [BASE]\ncomponents: [BASE/components/pod-watch]\n")
    chart = render(helm, {"podWatch": {"enabled": True}})
    assert_same_objects(chart, kustomize(overlay))
    assert env_of(chart)["KEYGATE_POD_WATCH"] == "true"


@pytest.mark.parametrize(
    ("component", "values", "audiences"),
    [
        ("csidriver", {"create": True}, ["keygate"]),
        (
            "csidriver-aws",
            {"create": True, "awsAudiences": True},
            ["keygate", "sts.amazonaws.com", "pods.eks.amazonaws.com"],
        ),
    ],
)
def test_csidriver_toggles_render_the_components(helm, tmp_path, component, values, audiences):
    (tmp_path / "csidriver.yaml").write_text(yaml.safe_dump(DRIVER_CSIDRIVER))
    overlay = _overlay(
        tmp_path, f"resources: [csidriver.yaml, BASE]\ncomponents: [BASE/components/{component}]\n"
    )
    chart = render(helm, {"csiDriver": values})
    assert_same_objects(chart, kustomize(overlay))
    (csi,) = by_kind(chart, "CSIDriver")
    assert [t["audience"] for t in csi["spec"]["tokenRequests"]] == audiences
    assert csi["spec"]["requiresRepublish"] is True
    assert "serviceAccountTokenInSecrets" not in csi["spec"]


@pytest.mark.parametrize(
    ("kube", "setting", "expected"),
    [
        ("1.34.0", None, None),
        ("1.35.0", None, True),
        ("1.36.2", None, True),
        ("1.35.2-eks-3025e55", None, True),
        ("1.34.3-gke.1200", None, None),
        ("1.35.0", False, None),
        ("1.34.0", True, True),
    ],
)
def test_csidriver_tokens_in_secrets_follow_the_drivers_chart(helm, kube, setting, expected):
    """As the driver's chart v1.6.0 does on Kubernetes 1.35+, and also for managed clusters' suffixed
    versions (v1.35.2-eks-...), which that chart's semverCompare ">=1.35.0" reads as pre-releases and skips."""
    docs = render(helm, {"csiDriver": {"create": True, "serviceAccountTokenInSecrets": setting}}, kube=kube)
    (csi,) = by_kind(docs, "CSIDriver")
    assert csi["spec"].get("serviceAccountTokenInSecrets") is expected
    if kube >= "1.35":
        kubernetes_validate.validate(csi, ".".join(kube.split(".")[:2]) + ".0", strict=True)


def test_csidriver_extra_token_requests_keep_their_fields(helm):
    extra = [{"audience": "vault"}, {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600}]
    docs = render(
        helm, {"tokenAudience": "keygate-prod", "csiDriver": {"create": True, "extraTokenRequests": extra}}
    )
    (csi,) = by_kind(docs, "CSIDriver")
    assert csi["spec"]["tokenRequests"] == [{"audience": "keygate-prod"}, *extra]
    assert env_of(docs)["KEYGATE_TOKEN_AUDIENCE"] == "keygate-prod"
    kubernetes_validate.validate(csi, K8S, strict=True)


def test_image_values(helm):
    assert container_of(render(helm))["image"] == "ghcr.io/keygate/keygate:0.1.0"
    tagged = render(
        helm,
        {"image": {"repository": "registry.example.com/keygate", "tag": "0.2.0", "pullPolicy": "Always"}},
    )
    assert container_of(tagged)["image"] == "registry.example.com/keygate:0.2.0"
    assert container_of(tagged)["imagePullPolicy"] == "Always"
    pinned = render(helm, {"image": {"tag": "0.2.0", "digest": DIGEST}})
    assert container_of(pinned)["image"] == f"ghcr.io/keygate/keygate@{DIGEST}"
    secrets = render(helm, {"imagePullSecrets": [{"name": "regcred"}]})
    assert pod_of(secrets)["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_scheduling_values(helm):
    values = {
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": None},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "secrets", "effect": "NoSchedule"}
        ],
        "nodeSelector": {"kubernetes.io/os": "linux", "pool": "apps"},
        "affinity": EVERYTHING_ON["affinity"],
        "priorityClassName": "",
        "updateStrategy": {"type": "OnDelete"},
    }
    docs = render(helm, values)
    pod = pod_of(docs)["spec"]
    assert container_of(docs)["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"}
    }  # null drops limits
    assert pod["tolerations"] == values["tolerations"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["affinity"] == values["affinity"]
    assert "priorityClassName" not in pod
    (ds,) = by_kind(docs, "DaemonSet")
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}  # the default rollingUpdate is dropped
    validate_all(docs)


def test_pod_annotations_and_labels_add_to_the_chart_s_own(helm):
    docs = render(
        helm, {"podAnnotations": {"example.com/team": "security"}, "podLabels": {"example.com/tier": "node"}}
    )
    template = pod_of(docs)
    assert template["metadata"]["annotations"] == {
        "example.com/team": "security",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8098",
        "prometheus.io/path": "/metrics",
    }
    assert template["metadata"]["labels"]["example.com/tier"] == "node"
    (ds,) = by_kind(docs, "DaemonSet")
    assert ds["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "keygate"}}


def test_providers_dir_moves_the_socket_and_the_host_path(helm, short_tmp):
    docs = render(helm, {"providersDir": "/etc/kubernetes/secrets-store-csi-providers"})
    (ds,) = by_kind(docs, "DaemonSet")
    config = _manifest_config(ds, short_tmp / "policy.yaml", "node-a")
    assert config.socket == "/etc/kubernetes/secrets-store-csi-providers/keygate.sock"
    volumes = {v["name"]: v for v in pod_of(docs)["spec"]["volumes"]}
    assert volumes["providers-dir"]["hostPath"]["path"] == "/etc/kubernetes/secrets-store-csi-providers"
    mounts = {m["name"]: m["mountPath"] for m in container_of(docs)["volumeMounts"]}
    assert mounts["providers-dir"] == "/etc/kubernetes/secrets-store-csi-providers"


def test_metrics_port_and_toggle(helm, short_tmp):
    moved = render(helm, {"metrics": {"enabled": True, "port": 9100}})
    (ds,) = by_kind(moved, "DaemonSet")
    assert _manifest_config(ds, short_tmp / "policy.yaml", "n").metrics_addr == ":9100"
    assert container_of(moved)["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert pod_of(moved)["metadata"]["annotations"]["prometheus.io/port"] == "9100"

    quiet = render(helm, {"metrics": {"enabled": True, "port": 8098, "scrapeAnnotations": False}})
    assert "annotations" not in pod_of(quiet)["metadata"]
    assert container_of(quiet)["readinessProbe"]["httpGet"]["port"] == "metrics"

    off = render(helm, {"metrics": {"enabled": False, "port": 8098}})
    (ds,) = by_kind(off, "DaemonSet")
    assert _manifest_config(ds, short_tmp / "policy.yaml", "n").metrics_addr == ""
    container = container_of(off)
    assert not {"ports", "livenessProbe", "readinessProbe"} & container.keys()
    assert "annotations" not in pod_of(off)["metadata"]
    validate_all(off)


def test_daemon_settings_reach_the_daemon_config(helm, short_tmp):
    values = {
        "issuer": "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE",
        "tokenAudience": "keygate-prod",
        "logLevel": "debug",
        "logFormat": "text",
        "auditSink": "stderr",
        "gracePeriod": 20,
        "terminationGracePeriodSeconds": 25,
        "extraArgs": ["--max-inflight=64"],
        "extraEnv": [{"name": "KEYGATE_SHARED_READS", "value": "true"}],
    }
    docs = render(helm, values)
    (ds,) = by_kind(docs, "DaemonSet")
    config = _manifest_config(ds, short_tmp / "policy.yaml", "node-a")
    assert (config.issuer, config.token_audience, config.node_name) == (
        values["issuer"],
        "keygate-prod",
        "node-a",
    )
    assert (config.log_level, config.log_format, config.audit_sink) == ("debug", "text", "stderr")
    assert config.grace_period == 20 and pod_of(docs)["spec"]["terminationGracePeriodSeconds"] == 25
    assert config.max_inflight == 64
    assert env_of(docs)["KEYGATE_SHARED_READS"] == "true"


def test_extra_volumes_are_mounted(helm):
    docs = render(helm, {k: EVERYTHING_ON[k] for k in ("extraVolumes", "extraVolumeMounts")})
    assert pod_of(docs)["spec"]["volumes"][-1] == EVERYTHING_ON["extraVolumes"][0]
    assert container_of(docs)["volumeMounts"][-1] == EVERYTHING_ON["extraVolumeMounts"][0]
    validate_all(docs)


def test_node_key_secret(helm):
    docs = render(helm, {"nodeKey": {"secretName": "sealing-keys", "optional": False}})
    volumes = {v["name"]: v for v in pod_of(docs)["spec"]["volumes"]}
    assert volumes["node-key"]["secret"] == {
        "secretName": "sealing-keys",
        "defaultMode": 0o400,
        "optional": False,
    }


def test_rbac_and_service_account_toggles(helm):
    no_rbac = render(
        helm, {"rbac": {"create": False}, "tokenReview": {"enabled": True}, "podWatch": {"enabled": True}}
    )
    assert not by_kind(no_rbac, "ClusterRole") and not by_kind(no_rbac, "ClusterRoleBinding")
    assert env_of(no_rbac)["KEYGATE_TOKEN_REVIEW"] == "true"

    no_discovery = render(helm, {"rbac": {"create": True, "issuerDiscovery": False}})
    assert [b["metadata"]["name"] for b in by_kind(no_discovery, "ClusterRoleBinding")] == ["keygate"]

    byo = render(helm, {"serviceAccount": {"create": False, "name": "my-keygate"}})
    assert not by_kind(byo, "ServiceAccount")
    assert pod_of(byo)["spec"]["serviceAccountName"] == "my-keygate"
    for binding in by_kind(byo, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "my-keygate", "namespace": "keygate-system"}
        ]

    annotated = render(
        helm, {"serviceAccount": {"name": "keygate", "annotations": {"example.com/owner": "platform"}}}
    )
    (sa,) = by_kind(annotated, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"example.com/owner": "platform"}
    assert sa["automountServiceAccountToken"] is True


def test_namespace_values(helm):
    docs = render(helm, {"namespace": {"create": False, "name": "secrets"}, "tokenReview": {"enabled": True}})
    assert not by_kind(docs, "Namespace")
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding", "CSIDriver"):
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == "secrets", doc["kind"]
    for binding in by_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"][0]["namespace"] == "secrets"
    validate_all(docs)


def test_release_policy_as_text_or_as_a_map(helm, tmp_path):
    from provider.attest.policy import PolicyStore

    rule = {
        "name": "payments",
        "namespaces": ["payments"],
        "serviceAccounts": ["api"],
        "backends": ["vault"],
        "objects": ["secret/data/payments/*"],
    }
    policy = {"default": "deny", "rules": [rule]}
    for value in (policy, yaml.safe_dump(policy)):
        (cm,) = by_kind(render(helm, {"releasePolicy": value}), "ConfigMap")
        path = tmp_path / "policy.yaml"
        path.write_text(cm["data"]["policy.yaml"])
        loaded = PolicyStore(str(path)).current()
        assert loaded.default == "deny"
        assert [(r.name, r.namespaces, r.backends) for r in loaded.rules] == [
            ("payments", ("payments",), ("vault",))
        ]


def test_versions_agree():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    import provider

    assert chart["appVersion"] == provider.__version__ == base["images"][0]["newTag"]
    assert chart["apiVersion"] == "v2"


def _with(path: str, value: Any) -> dict[str, Any]:
    """Default values with one (dotted) key replaced, so only that key is wrong."""
    values: dict[str, Any] = copy.deepcopy(yaml.safe_load((CHART / "values.yaml").read_text()))
    *parents, last = path.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return values


BAD_VALUES = [
    ("image.digest", "sha256:abc"),
    ("image.digest", DIGEST + "\n"),
    ("image.tag", "0.1.0 latest"),
    ("image.repository", "Ghcr.io/Keygate"),
    ("image.pullPolicy", "Sometimes"),
    ("logLevel", "verbose"),
    ("logFormat", "xml"),
    ("metrics.port", 0),
    ("metrics.port", 70000),
    ("metrics.port", "8098"),
    ("metrics.enabled", "yes"),
    ("providersDir", "var/run/providers"),
    ("providersDir", "/var/run/../etc"),
    ("providersDir", "/var/run/providers\n"),
    ("issuer", "https://kubernetes.default.svc cluster"),
    ("issuer", "https://issuer.example.com/\nx"),
    ("tokenAudience", "two words"),
    ("namespace.name", "Keygate"),
    ("tokenReview.enabled", "true"),
    ("extraArgs", ["max-inflight=64"]),
    ("extraArgs", ["--max-inflight=64\n--insecure-skip-attestation"]),
    ("extraEnv", [{"value": "x"}]),
    ("extraEnv", [{"name": "BAD-NAME", "value": "x"}]),
    ("csiDriver.extraTokenRequests", [{"audience": "vault", "expirationSeconds": 60}]),
    ("csiDriver.serviceAccountTokenInSecrets", "auto"),
    ("releasePolicy", ""),
    ("auditSink", "relative/audit.log"),
    ("gracePeriod", -1),
    ("tolerration", []),
    ("rbac.crate", True),
]


@pytest.mark.parametrize(("path", "value"), BAD_VALUES, ids=[f"{p}={v!r}"[:60] for p, v in BAD_VALUES])
def test_schema_refuses_bad_values(helm, path, value):
    error = refused(helm, _with(path, value))
    leaf = path.split(".")[-1]
    assert leaf in error, error
    assert "values don't meet the specifications of the schema" in error, error


CHART_CHECKS = [
    ({"issuer": ""}, "issuer is empty"),
    ({"terminationGracePeriodSeconds": 30}, "must be greater than gracePeriod"),
    ({"extraArgs": ["--grace-period=5"]}, "--grace-period is set by the chart; use the value gracePeriod"),
    ({"extraArgs": ["--socket=/tmp/x.sock"]}, "use the value providersDir"),
    ({"extraArgs": ["--token-review"]}, "use the value tokenReview.enabled"),
    ({"extraEnv": [{"name": "KEYGATE_ISSUER", "value": "https://x"}]}, "use the value issuer"),
    (
        {"extraEnv": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "0"}]},
        "PYTHONDONTWRITEBYTECODE is set by the chart",
    ),
    (
        {
            "csiDriver": {
                "create": True,
                "awsAudiences": True,
                "extraTokenRequests": [{"audience": "sts.amazonaws.com"}],
            }
        },
        'audience "sts.amazonaws.com" is already requested',
    ),
]


@pytest.mark.parametrize(("values", "message"), CHART_CHECKS, ids=[m[:40] for _, m in CHART_CHECKS])
def test_chart_refuses_contradicting_values(helm, values, message):
    assert message in refused(helm, values)


def test_issuer_may_be_empty_in_tokenreview_mode(helm):
    docs = render(helm, {"issuer": "", "tokenReview": {"enabled": True}})
    assert "KEYGATE_ISSUER" not in env_of(docs)


def test_notes_say_what_is_left_to_do(helm):
    if helm["major"] == "3":
        pytest.skip("helm 3's install --dry-run=client still needs a cluster; helm 4 renders NOTES offline")

    def notes(values: dict[str, Any] | None = None) -> str:
        args = ["install", "keygate", str(CHART), "--dry-run=client"]
        out = run_helm(helm, *args, *_values_file(helm, values))
        assert out.returncode == 0, out.stderr
        return out.stdout[out.stdout.index("NOTES:") :]

    default = notes()
    assert "tokenRequests[0].audience=keygate" in default and "step 4" in default
    assert "https://kubernetes.default.svc.cluster.local" in default
    owned = notes({"csiDriver": {"create": True, "awsAudiences": True}})
    assert "keygate, sts.amazonaws.com, pods.eks.amazonaws.com" in owned
    weak = notes({"extraArgs": ["--insecure-skip-image-check"], "metrics": {"enabled": False, "port": 8098}})
    assert "WARNING: security checks are weakened by --insecure-skip-image-check" in weak
    assert "no liveness or readiness probes" in weak


def test_schema_file_is_valid_json_schema():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    assert set(schema["properties"]) - {"global"} == set(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_helm_binaries_are_the_pinned_releases(helm):
    out = run_helm(helm, "version", "--short")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(f"v{helm['major']}.")
    assert Path(helm["path"]).stat().st_mode & 0o111


# Values whose keys are the user's (Kubernetes fields or free maps), not the chart's.
_FREE_MAPS = {"resources", "nodeSelector", "affinity", "podAnnotations", "podLabels", "updateStrategy"}


def test_every_value_is_documented():
    """Each value (to the second level) is named in the Helm section of docs/install.md."""
    text = (BASE.parent / "docs" / "install.md").read_text()
    section = text[text.index("\n## Helm\n") : text.index("\n## Build the image\n")]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    names = [
        f"{key}.{sub}" if isinstance(value, dict) and key not in _FREE_MAPS else key
        for key, value in values.items()
        for sub in (value if isinstance(value, dict) and key not in _FREE_MAPS else [None])
    ]
    missing = [name for name in names if f"`{name}`" not in section]
    assert not missing, missing
