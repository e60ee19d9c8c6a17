"""Attestation as operators see it: denial categories in /metrics, the policy in /readyz.

Every mount here is a real Mount over the socket against the local Kubernetes API, and the
metrics are read by scraping the daemon's HTTP endpoint, as Prometheus does.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.attest.policy import PolicyError, PolicyStore
from provider.attest.reasons import Denial
from provider.health import Readiness
from tests.kubeapi import AUDIENCE, DevCluster, driver_pod, make_pod, pinned
from tests.ops_helpers import free_port, http_get, samples, value
from tests.test_attest import SECRET, refused, request_for, spc
from tests.test_release_policy import write

DENIALS = "keygate_attestation_denials_total"

POLICY = """
default: deny
rules:
  - name: shop
    namespaces: [shop]
    images:
      allowedRepositories: [ghcr.io/acme]
  - name: default
    namespaces: [default]
"""


def _start(attest_daemon: Any, **overrides: Any) -> tuple[Any, str]:
    port = free_port()
    d = attest_daemon(metrics_addr=f"127.0.0.1:{port}", **overrides)
    return d, f"http://127.0.0.1:{port}"


@pytest.fixture
def policy_file(short_tmp):
    path = short_tmp / "policy.yaml"
    write(path, POLICY)
    return path


def test_every_denial_is_counted_by_category(attest_daemon, kube: DevCluster, node_key, policy_file):
    d, base = _start(attest_daemon, release_policy=str(policy_file))
    before = samples(http_get(base + "/metrics")[1])
    unauth, denied = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    pod = make_pod(kube)
    other = make_pod(kube, name="other-0", uid="aaaaaaaa-0000-0000-0000-000000000001")
    expired = kube.sign(kube.claims(pod, AUDIENCE) | {"exp": 1_000_000, "iat": 999_000, "nbf": 999_000})
    stranger = kube.mint(pod, audience="vault")
    gone = make_pod(kube, name="gone-0", register=False)
    replaced = make_pod(kube, name="web-0", uid="bbbbbbbb-0000-0000-0000-000000000002")
    claimed = make_pod(kube, name="web-0", uid="cccccccc-0000-0000-0000-000000000003", register=False)
    tagged = make_pod(kube, name="tagged-0", images={"app": "nginx:1.27"})
    foreign = make_pod(kube, namespace="shop", name="shop-0", images={"app": pinned("quay.io/evil/app")})
    outsider = make_pod(kube, namespace="batch", name="job-0")
    cases = [
        (request_for(node_key, pod, None), unauth, Denial.TOKEN_MISSING),
        (request_for(node_key, pod, expired), unauth, Denial.TOKEN_EXPIRED),
        (
            mount_request("s", spc(node_key), driver_pod(pod, stranger, "keygate")),
            unauth,
            Denial.TOKEN_INVALID,
        ),
        (request_for(node_key, pod, kube.mint(other)), unauth, Denial.TOKEN_POD_MISMATCH),
        (request_for(node_key, gone, kube.mint(gone)), denied, Denial.POD_NOT_FOUND),
        (request_for(node_key, claimed, kube.mint(claimed)), denied, Denial.POD_MISMATCH),
        (request_for(node_key, tagged, kube.mint(tagged)), denied, Denial.IMAGE_UNPINNED),
        (request_for(node_key, foreign, kube.mint(foreign)), denied, Denial.IMAGE_NOT_ALLOWED),
        (request_for(node_key, outsider, kube.mint(outsider)), denied, Denial.POLICY_DENIED),
    ]
    assert replaced.uid != claimed.uid
    for request, code, _ in cases:
        refused(d, request, code)
    d.client.mount(request_for(node_key, pod, kube.mint(pod)))  # a release counts nothing

    text = http_get(base + "/metrics")[1]
    after = samples(text)
    deltas = {
        reason.value: value(after, DENIALS, reason=reason.value) - value(before, DENIALS, reason=reason.value)
        for reason in Denial
    }
    expected = {reason.value: 0.0 for reason in Denial}
    expected.update({reason.value: 1.0 for _, _, reason in cases})
    assert deltas == expected
    assert value(after, DENIALS, reason="other") == value(before, DENIALS, reason="other")
    for name in ("gone-0", "tagged-0", "nginx", "quay.io", "batch", "job-0", SECRET.decode()):
        assert name not in text

    # the same category is in the Mount's log line and its audit record
    lines = [json.loads(x) for x in d.log_text().splitlines()]
    mount_lines = [x for x in lines if x["msg"] == "mount" and x["outcome"] == "error"]
    assert [x["denial_reason"] for x in mount_lines] == [r.value for _, _, r in cases]
    records = [r for r in d.audit_records() if r["decision"] == "deny"]
    assert [r["denial_reason"] for r in records] == [r.value for _, _, r in cases]
    assert [r["request_id"] for r in records] == [x["request_id"] for x in mount_lines]


def test_unreachable_api_counts_as_api_unavailable(attest_daemon, kube: DevCluster, node_key):
    d, base = _start(attest_daemon, issuer="https://127.0.0.1:9")
    before = value(samples(http_get(base + "/metrics")[1]), DENIALS, reason="api_unavailable")
    pod = make_pod(kube)
    token = kube.sign(kube.claims(pod, AUDIENCE) | {"iss": "https://127.0.0.1:9"})
    refused(d, request_for(node_key, pod, token), grpc.StatusCode.UNAVAILABLE)
    after = value(samples(http_get(base + "/metrics")[1]), DENIALS, reason="api_unavailable")
    assert after - before == 1


def test_readyz_reports_the_policy_and_a_bad_edit_keeps_it_ready(
    attest_daemon, kube: DevCluster, node_key, policy_file
):
    d, base = _start(attest_daemon, release_policy=str(policy_file))
    status, body = http_get(base + "/readyz")
    conditions = json.loads(body)["conditions"]
    assert status == 200 and set(conditions) == {"socket", "keys", "policy"}
    assert conditions["policy"] == {"ok": True, "detail": f"loaded from {policy_file}"}

    write(policy_file, "rules:\n  - name: broken\n    namespaces: [x]\n    colour: red\n")
    outsider = make_pod(kube, namespace="batch", name="job-0")
    # the reload happens on the next Mount; the old policy (default: deny) still refuses
    refused(d, request_for(node_key, outsider, kube.mint(outsider)), grpc.StatusCode.PERMISSION_DENIED)
    status, body = http_get(base + "/readyz")
    policy = json.loads(body)["conditions"]["policy"]
    assert status == 200 and policy["ok"] is True
    assert policy["detail"].startswith(f"enforcing the last good policy ({policy_file}); reload failed")
    assert "colour" in policy["detail"]
    assert "release policy reload failed; keeping the last good policy" in d.log_text()

    write(policy_file, "default: allow\n")
    d.client.mount(request_for(node_key, outsider, kube.mint(outsider)))
    status, body = http_get(base + "/readyz")
    assert json.loads(body)["conditions"]["policy"] == {"ok": True, "detail": f"loaded from {policy_file}"}


def test_a_policy_that_never_loaded_leaves_the_daemon_not_ready(short_tmp):
    readiness = Readiness()
    readiness.set("socket", True)
    bad = short_tmp / "policy.yaml"
    bad.write_text("requireImageDigest: true\n")
    with pytest.raises(PolicyError, match="unknown keys requireImageDigest"):
        PolicyStore(str(bad), readiness)
    assert readiness.ready() is False
    assert readiness.snapshot()["policy"] == {"ok": False, "detail": "loading"}
    PolicyStore("", readiness)
    assert readiness.snapshot()["policy"] == {"ok": True, "detail": "loaded from built-in default"}
    assert readiness.ready() is True
