"""Audit records for releases and denials, and the no-secret guarantee over logs, errors and audit."""

from __future__ import annotations

import json
import stat

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.attest.audit import AuditLog
from tests.kubeapi import driver_pod, make_pod
from tests.test_attest import SECRET, spc


def test_release_record(attest_daemon, kube, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    resp = d.client.mount(
        mount_request(
            "app-secrets", spc(node_key, names=("db-password", "api-key")), driver_pod(pod, kube.mint(pod))
        )
    )
    (record,) = d.audit_records()
    assert record["kind"] == "keygate.audit/v1"
    assert record["decision"] == "release"
    assert record["node"] == "node-a"
    assert record["pod"] == {"namespace": "default", "name": "app-0", "uid": pod.uid}
    assert record["service_account"] == "app"
    assert record["spc"] == "app-secrets"
    assert record["backends"] == ["sealed"]
    assert record["time"].endswith("Z") and record["request_id"]
    assert [(o["id"], o["version"]) for o in record["objects"]] == [
        (v.id, v.version) for v in resp.object_version
    ]
    assert {o["backend"] for o in record["objects"]} == {"sealed"}
    server_lines = [json.loads(line) for line in d.log_text().splitlines() if '"msg":"mount"' in line]
    assert server_lines[-1]["request_id"] == record["request_id"]


def test_denial_record(attest_daemon, kube, node_key):
    d = attest_daemon()
    pod = make_pod(kube, images={"app": "nginx:1.27"})
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(mount_request("app-secrets", spc(node_key), driver_pod(pod, kube.mint(pod))))
    (record,) = d.audit_records()
    assert record["decision"] == "deny"
    assert record["code"] == "PermissionDenied"
    assert record["reason"] in caught.value.details()
    assert "not pinned by digest" in record["reason"]
    assert record["pod"]["uid"] == pod.uid and record["spc"] == "app-secrets"
    assert record["objects"] == [{"name": "db-password", "backend": "sealed"}]


def test_unauthenticated_denial_record(attest_daemon, kube, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    with pytest.raises(grpc.RpcError):
        d.client.mount(mount_request("app-secrets", spc(node_key), driver_pod(pod, None)))
    (record,) = d.audit_records()
    assert record["decision"] == "deny" and record["code"] == "Unauthenticated"


def test_backend_failure_is_recorded_as_error(attest_daemon, kube, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    sealed_elsewhere = {"objects": f"- objectName: db\n  sealed: {node_key.seal(SECRET, 'other-ns', 'db')}\n"}
    with pytest.raises(grpc.RpcError):
        d.client.mount(mount_request("app-secrets", sealed_elsewhere, driver_pod(pod, kube.mint(pod))))
    (record,) = d.audit_records()
    assert record["decision"] in ("deny", "error") and record["code"]
    assert record["objects"] == [{"name": "db", "backend": "sealed"}]


def test_invalid_request_is_recorded_without_pod(attest_daemon):
    d = attest_daemon()
    from provider.wire import service_pb2 as pb

    with pytest.raises(grpc.RpcError):
        d.client.mount(pb.MountRequest(attributes="{}", secrets="{}", target_path="/x", permission="420"))
    (record,) = d.audit_records()
    assert record["decision"] == "error" and record["code"] == "InvalidRequest" and "pod" not in record


def test_audit_to_stdout_and_file_mode(short_tmp, capsys):
    AuditLog("stdout", "n1").write({"decision": "release"})
    assert json.loads(capsys.readouterr().out) == {"decision": "release"}
    path = short_tmp / "audit.jsonl"
    sink = AuditLog(str(path), "n1")
    sink.write({"a": 1})
    sink.write({"b": 2})
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"a": 1}, {"b": 2}]


def test_no_secret_or_token_in_logs_errors_or_audit(attest_daemon, kube, node_key):
    d = attest_daemon()
    good = make_pod(kube)
    token = kube.mint(good)
    params = spc(node_key, names=("db-password",))
    sealed_blob = params["objects"].split("sealed: ")[1].strip()
    assert d.client.mount(mount_request("s", params, driver_pod(good, token))).files[0].contents == SECRET
    details: list[str] = []
    bad_images = make_pod(
        kube, name="tagged", uid="22222222-3333-4444-5555-666666666666", images={"app": "x:1"}
    )
    for request in (
        mount_request("s", params, driver_pod(bad_images, kube.mint(bad_images))),
        mount_request("s", params, driver_pod(good, token[:-5])),
        mount_request("s", params, driver_pod(good, token.replace(".", ". ", 1))),
        mount_request("s", params, driver_pod(bad_images, token)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            d.client.mount(request)
        details.append(caught.value.details() or "")
    signature = token.rsplit(".", 1)[1]
    outputs = {"log": d.log_text(), "audit": d.audit_text(), "errors": "\n".join(details)}
    assert len(d.audit_records()) == 5
    for name, text in outputs.items():
        assert SECRET.decode() not in text, name
        assert signature not in text and token[:40] not in text, name
        assert sealed_blob[:40] not in text, name
        assert kube.api_token not in text, name


def test_demo_shows_signed_released_unsigned_refused_and_revocation(capsys):
    from provider.demo import run_demo

    assert run_demo() == 0
    out = capsys.readouterr().out
    signed, unsigned, tag, stolen, revocation = (out.split(f"\n{n}. ", 1)[1] for n in range(1, 6))
    assert "(pinned, signed)" in signed and "RELEASED 2 files" in signed.split("\n2. ")[0]
    # the unsigned image: refused with the daemon's one-line error and the audit record's category
    step = unsigned.split("\n3. ")[0]
    assert "DENIED PERMISSION_DENIED: [PermissionDenied] container `batch`" in step
    assert "has no signature" in step and "cosign sign --key" in step
    assert "audit record: decision deny, denial_reason signature_missing" in step
    assert "not pinned by digest" in tag.split("\n4. ")[0]
    assert "DENIED UNAUTHENTICATED" in stolen.split("\n5. ")[0]
    # the rotation Mount after the policy change: api-token (tokens/api) leaves the volume
    step = revocation.split("\naudit records")[0]
    assert "RELEASED 1 file:" in step and "db-password" in step
    assert "before: db-password, tokens/api" in step and "after:  db-password   (tokens/api removed)" in step
    assert "audit record: decision revoke, reason policy, object api-token, outcome removed" in step
    audit = out.split("\naudit records", 1)[1]
    decisions = [json.loads(line)["decision"] for line in audit.splitlines()[1:] if line.startswith("  {")]
    assert decisions == ["release", "deny", "deny", "deny", "release", "revoke"]
    assert '"denial_reason": "signature_missing"' in audit
    assert "correct horse" not in out and "tok_demo" not in out
