"""Revocation by the release policy (sealed objects, real attestation against the local API):
on a rotation, objects the policy now refuses to an attested pod, or all of them once its
image is no longer allowed, leave the volume; a first mount is refused as before; token and
attestation failures on a rotation fail the Mount and remove nothing. Also the SPC and policy
``revocation`` settings and which one wins."""

from __future__ import annotations

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.attest.policy import PolicyError, parse_policy
from tests.kubeapi import DevCluster, driver_pod, make_pod, pinned
from tests.revocation_helpers import files_of, held, refused, revocations, revoke_records, rotate
from tests.test_attest import SECRET, spc
from tests.test_release_policy import APP, APP_DIGEST, write

OTHER = pinned("ghcr.io/acme/other").split("@")[1]
NAMES = ("db-password", "db-user", "payments-shared")
POLICY = f"""
rules:
  - name: payments
    namespaces: [payments]
    serviceAccounts: [api]
    objects: ["db-*", "{{namespace}}-shared"]
    images:
      allowedDigests: ["{APP_DIGEST}"]
"""


@pytest.fixture
def policy_file(short_tmp):
    path = short_tmp / "release-policy.yaml"
    write(path, POLICY)
    return path


@pytest.fixture
def setup(attest_daemon, kube: DevCluster, node_key, policy_file):
    d = attest_daemon(release_policy=str(policy_file))
    pod = make_pod(kube, namespace="payments", service_account="api", images={"app": APP})
    params = spc(node_key, "payments", NAMES)
    who = driver_pod(pod, kube.mint(pod))
    first = d.client.mount(mount_request("s", params, who))
    assert set(files_of(first)) == set(NAMES)
    return d, pod, params, who, first


def test_object_no_longer_allowed_leaves_on_rotation(setup, policy_file):
    d, _, params, who, first = setup
    before = revocations("sealed", "policy")
    write(policy_file, POLICY.replace('"db-*"', '"db-password"'))
    again = rotate(d, "s", params, who, first)
    assert files_of(again) == {"db-password": SECRET, "payments-shared": SECRET}
    assert revocations("sealed", "policy") == before + 1
    (record,) = revoke_records(d)
    assert record["reason"] == "policy" and record["object"]["name"] == "db-user"
    assert record["pod"]["namespace"] == "payments" and record["outcome"] == "removed"
    assert SECRET.decode() not in d.audit_text() + d.log_text()
    release = [r["reason"] for r in d.audit_records() if r["decision"] == "release"]
    assert release == [
        "attested; release policy allows every object",
        "attested; 2 of 3 objects released, 1 revoked (policy 1)",
    ]
    # still refused on the next poll: withheld again, not audited again
    still = rotate(d, "s", params, who, again)
    assert files_of(still) == files_of(again) and len(revoke_records(d)) == 1


def test_image_no_longer_allowed_takes_everything(setup, policy_file):
    d, _, params, who, first = setup
    write(policy_file, POLICY.replace(APP_DIGEST, OTHER))
    again = rotate(d, "s", params, who, first)
    # nothing may stay, and a response without files would keep the old ones: all emptied
    assert files_of(again) == dict.fromkeys(NAMES, b"")
    assert {r["reason"] for r in revoke_records(d)} == {"policy"} and len(revoke_records(d)) == 3


def test_a_first_mount_the_policy_refuses_is_still_refused(attest_daemon, kube, node_key, policy_file):
    write(policy_file, POLICY.replace('"db-*"', '"db-password"'))
    d = attest_daemon(release_policy=str(policy_file))
    pod = make_pod(kube, namespace="payments", service_account="api", images={"app": APP})
    err = refused(d, mount_request("s", spc(node_key, "payments", NAMES), driver_pod(pod, kube.mint(pod))))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "db-user" in (err.details() or "")
    assert revoke_records(d) == []


def test_token_failure_on_rotation_removes_nothing(setup, kube):
    d, pod, params, _, first = setup
    bad = driver_pod(pod, kube.mint(pod) + "x")
    err = refused(d, mount_request("s", params, bad, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert revoke_records(d) == []


def test_pod_gone_from_the_api_on_rotation_removes_nothing(setup, kube, policy_file):
    d, pod, params, who, first = setup
    write(policy_file, POLICY.replace(APP_DIGEST, OTHER))
    kube.remove_pod(pod)
    err = refused(d, mount_request("s", params, who, current=held(first)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert revoke_records(d) == []


def test_spc_dropping_an_object_drops_its_file(setup, node_key):
    d, _, _, who, first = setup
    fewer = spc(node_key, "payments", NAMES[:1])
    assert set(files_of(rotate(d, "s", fewer, who, first))) == {"db-password"}


@pytest.mark.parametrize(
    ("rule", "spc_mode", "outcome"),
    [
        ("", "", "removed"),
        ("", "empty", "emptied"),
        ("empty", "", "emptied"),
        ("remove", "empty", "removed"),
        ("empty", "remove", "emptied"),
    ],
)
def test_the_policy_rule_wins_where_it_sets_revocation(setup, policy_file, rule, spc_mode, outcome):
    d, _, params, who, first = setup
    text = POLICY.replace('"db-*"', '"db-password"')
    if rule:
        text += f"    revocation: {rule}\n"
    write(policy_file, text)
    again = rotate(d, "s", {**params, "revocation": spc_mode} if spc_mode else params, who, first)
    assert ("db-user" in files_of(again)) == (outcome == "emptied")
    assert revoke_records(d)[0]["outcome"] == outcome


def test_bad_revocation_values_are_refused_with_the_choices(setup):
    d, _, params, who, first = setup
    err = refused(d, mount_request("s", {**params, "revocation": "shred"}, who, current=held(first)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'revocation' must be one of remove, empty" in (err.details() or "")
    with pytest.raises(PolicyError, match=r"rules\[0\]\.revocation must be one of remove, empty"):
        parse_policy(POLICY + "    revocation: wipe\n", "test")


@pytest.mark.parametrize(("value", "errors"), [("empty", 0), ("remove", 0), ("shred", 1)])
def test_lint_reads_the_same_revocation_parameter(tmp_path, capsys, node_key, value, errors):
    from tests.test_lint import lint, sealed_obj
    from tests.test_lint import spc as lint_spc

    code, out = lint(tmp_path, capsys, lint_spc(sealed_obj(node_key), params=f"revocation: {value}\n"))
    assert f"{errors} error" in out and "unknown parameter" not in out, out
    assert (code == 0) == (errors == 0)
    if errors:
        assert "must be one of remove, empty" in out


NO_RULE = "default: deny\n" + POLICY.replace("serviceAccounts: [api]", "serviceAccounts: [web]")


def test_default_deny_without_a_rule_revokes_on_rotation(setup, policy_file, kube):
    d, _, params, who, first = setup
    hits = kube.hits.get("pod", 0)
    write(policy_file, NO_RULE)
    again = rotate(d, "s", params, who, first)
    # the verified pod's identity is refused outright: every object goes (all emptied, as none is left)
    assert files_of(again) == dict.fromkeys(NAMES, b"")
    records = revoke_records(d)
    assert {r["reason"] for r in records} == {"policy"} and len(records) == 3
    assert {r["object"]["name"] for r in records} == set(NAMES)
    assert kube.hits.get("pod", 0) > hits, "the Pod is checked before anything is revoked"
    still = rotate(d, "s", params, who, again)
    assert files_of(still) == files_of(again) and len(revoke_records(d)) == 3
    # the rule back: served again
    write(policy_file, POLICY)
    assert files_of(rotate(d, "s", params, who, still)) == dict.fromkeys(NAMES, SECRET)


def test_default_deny_first_mount_is_still_refused_before_the_pod_is_read(
    attest_daemon, kube, node_key, policy_file
):
    write(policy_file, NO_RULE)
    d = attest_daemon(release_policy=str(policy_file))
    pod = make_pod(kube, namespace="payments", service_account="api", images={"app": APP})
    hits = kube.hits.get("pod", 0)
    err = refused(d, mount_request("s", spc(node_key, "payments", NAMES), driver_pod(pod, kube.mint(pod))))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "default is deny" in (err.details() or "")
    assert kube.hits.get("pod", 0) == hits and revoke_records(d) == []


def test_default_deny_token_failure_on_rotation_removes_nothing(setup, kube, policy_file):
    d, pod, params, _, first = setup
    write(policy_file, NO_RULE)
    err = refused(d, mount_request("s", params, driver_pod(pod, kube.mint(pod) + "x"), current=held(first)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert revoke_records(d) == []


def test_default_deny_pod_gone_or_replaced_on_rotation_removes_nothing(setup, kube, policy_file):
    d, pod, params, who, first = setup
    write(policy_file, NO_RULE)
    kube.remove_pod(pod)
    err = refused(d, mount_request("s", params, who, current=held(first)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "default is deny" not in (err.details() or "")
    make_pod(
        kube,
        namespace="payments",
        service_account="api",
        images={"app": APP},
        uid="11111111-2222-4333-8444-555555555555",
    )
    err = refused(d, mount_request("s", params, who, current=held(first)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "UID" in (err.details() or "")
    assert revoke_records(d) == []


def test_default_deny_api_failure_on_rotation_removes_nothing(setup, kube, policy_file):
    d, _, params, who, first = setup
    write(policy_file, NO_RULE)
    kube.api_token = "rotated-elsewhere"  # the API now refuses keygate's credentials
    err = refused(d, mount_request("s", params, who, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert revoke_records(d) == []


def test_default_deny_without_reading_pods_revokes_after_the_token(
    attest_daemon, kube, node_key, policy_file
):
    """With insecure_skip_image_check the Pod is never read: the verified token is the identity."""
    d = attest_daemon(release_policy=str(policy_file), insecure_skip_image_check=True)
    pod = make_pod(kube, namespace="payments", service_account="api", images={"app": APP})
    params = spc(node_key, "payments", NAMES)
    who = driver_pod(pod, kube.mint(pod))
    first = d.client.mount(mount_request("s", params, who))
    write(policy_file, NO_RULE)
    assert files_of(rotate(d, "s", params, who, first)) == dict.fromkeys(NAMES, b"")
    assert len(revoke_records(d)) == 3 and kube.hits.get("pod", 0) == 0
    bad = driver_pod(pod, kube.mint(pod) + "x")
    err = refused(d, mount_request("s", params, bad, current=held(first)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and len(revoke_records(d)) == 3
