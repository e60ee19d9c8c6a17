"""Node identity only by explicit grant, end to end with attestation on.

Azure ``useVMManagedIdentity`` (the node's VM managed identity, through a local IMDS speaking
the real token wire format) and GCP ``auth: provider-adc`` (the daemon's own credentials) read as
the node, not the pod. A release policy rule must grant them by name (``nodeIdentity``); every
other namespace is refused with a message naming that key, and the audit record says the node's
identity read the objects.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.attest.policy import PolicyError, parse_policy
from provider.cli import main
from tests.azure_fake import FakeIMDS
from tests.kubeapi import DevCluster, driver_pod, make_pod
from tests.test_azure import TENANT, AzureEnv, spc
from tests.test_azure import azure as azure  # the fixture
from tests.test_gcp import GCP, secrets_param
from tests.test_gcp import gcp as gcp  # the fixture

SYSTEM_MI = "0a0a0a0a-1111-2222-3333-444444444444"
USER_MI = "0b0b0b0b-5555-6666-7777-888888888888"
DENIED = grpc.StatusCode.PERMISSION_DENIED

POLICY = """
default: allow
rules:
  - name: infra
    namespaces: [infra]
    nodeIdentity: [azure, gcp]
  - name: everyone-else
    namespaces: ["*"]
"""


@pytest.fixture
def policy_file(short_tmp: Path) -> Path:
    path = short_tmp / "release-policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def imds(azure: AzureEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIMDS]:
    server = FakeIMDS(azure.fake, SYSTEM_MI, (USER_MI,)).start()
    # The SDK's own override of the IMDS address (169.254.169.254 on a real node).
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.url)
    try:
        yield server
    finally:
        server.stop()


def _vault(azure: AzureEnv, client_id: str, value: str) -> str:
    vault = azure.vault()
    azure.fake.grant(client_id, vault)
    azure.fake.add_secret(vault, "db-password", value)
    return vault


def _mi_spc(vault: str, **params: str) -> dict[str, str]:
    parameters = spc(vault, [{"objectName": "db-password", "objectType": "secret"}], **params)
    del parameters["clientID"]
    parameters["useVMManagedIdentity"] = "true"
    return parameters


def _request(kube: DevCluster, parameters: dict[str, str], namespace: str) -> Any:
    pod = make_pod(kube, namespace=namespace, name=f"{namespace}-0")
    return mount_request("node-spc", parameters, driver_pod(pod, kube.mint(pod)))


def test_granted_namespace_reads_with_the_system_managed_identity(
    attest_daemon: Any, kube: DevCluster, azure: AzureEnv, imds: FakeIMDS, policy_file: Path
) -> None:
    d = attest_daemon(release_policy=str(policy_file), backends={"azure": azure.settings()})
    vault = _vault(azure, SYSTEM_MI, "from-the-node")
    resp = d.client.mount(_request(kube, _mi_spc(vault), "infra"))
    assert [(f.path, f.contents) for f in resp.files] == [("db-password", b"from-the-node")]
    (ask,) = imds.requests
    assert ask["metadata"] == "true" and ask["query"]["resource"] == "https://vault.azure.net"
    assert "client_id" not in ask["query"]
    (record,) = [r for r in d.audit_records() if r["decision"] == "release"]
    assert record["node_identity"] == ["azure"]
    assert record["objects"][0]["node_identity"] == "azure VM managed identity (system-assigned)"


def test_granted_namespace_reads_with_a_user_assigned_identity(
    attest_daemon: Any, kube: DevCluster, azure: AzureEnv, imds: FakeIMDS, policy_file: Path
) -> None:
    d = attest_daemon(release_policy=str(policy_file), backends={"azure": azure.settings()})
    vault = _vault(azure, USER_MI, "user-assigned")
    resp = d.client.mount(_request(kube, _mi_spc(vault, userAssignedIdentityID=USER_MI), "infra"))
    assert resp.files[0].contents == b"user-assigned"
    assert imds.requests[-1]["query"]["client_id"] == USER_MI
    (record,) = [r for r in d.audit_records() if r["decision"] == "release"]
    assert USER_MI in record["objects"][0]["node_identity"]


def test_identity_not_on_the_node_is_unauthenticated(
    attest_daemon: Any, kube: DevCluster, azure: AzureEnv, imds: FakeIMDS, policy_file: Path
) -> None:
    d = attest_daemon(release_policy=str(policy_file), backends={"azure": azure.settings()})
    vault = _vault(azure, SYSTEM_MI, "x")
    stranger = "0c0c0c0c-9999-9999-9999-999999999999"
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(_request(kube, _mi_spc(vault, userAssignedIdentityID=stranger), "infra"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "managed identity" in (caught.value.details() or "")


def test_other_namespace_is_refused_naming_the_policy_key(
    attest_daemon: Any, kube: DevCluster, azure: AzureEnv, imds: FakeIMDS, policy_file: Path
) -> None:
    d = attest_daemon(release_policy=str(policy_file), backends={"azure": azure.settings()})
    vault = _vault(azure, SYSTEM_MI, "never-released")
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(_request(kube, _mi_spc(vault), "default"))
    details = caught.value.details() or ""
    assert caught.value.code() == DENIED, details
    assert "nodeIdentity: [azure]" in details and "'default'" in details
    assert imds.requests == [], "IMDS is never asked for a pod the policy does not grant"
    assert "never-released" not in d.log_text()


def test_without_attestation_node_identity_is_refused(
    start_daemon: Any, azure: AzureEnv, imds: FakeIMDS
) -> None:
    d = start_daemon(backends={"azure": azure.settings()})
    vault = _vault(azure, SYSTEM_MI, "x")
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(mount_request("s", _mi_spc(vault), azure.pod()))
    assert caught.value.code() == DENIED
    assert "nodeIdentity" in (caught.value.details() or "")
    assert imds.requests == []


def test_gcp_provider_adc_only_for_the_granted_namespace(
    attest_daemon: Any,
    kube: DevCluster,
    gcp: GCP,
    policy_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    email = "keygate-daemon@proj.iam.gserviceaccount.com"
    adc = tmp_path / "adc.json"
    adc.write_text(gcp.auth.service_account_key(email))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    gcp.sm.add("projects/proj/secrets/node", b"node-value-7070", grant=(f"sa/{email}",))
    params = {
        **secrets_param({"resourceName": "projects/proj/secrets/node/versions/1", "fileName": "n"}),
        "auth": "provider-adc",
    }
    d = attest_daemon(release_policy=str(policy_file), backends={"gcp": gcp.settings()})
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(_request(kube, params, "default"))
    details = caught.value.details() or ""
    assert caught.value.code() == DENIED and "nodeIdentity: [gcp]" in details, details
    assert gcp.sm.calls == []
    resp = d.client.mount(_request(kube, params, "infra"))
    assert [(f.path, f.contents) for f in resp.files] == [("n", b"node-value-7070")]
    assert gcp.sm.calls[-1].principal == f"sa/{email}"
    (record,) = [r for r in d.audit_records() if r["decision"] == "release"]
    assert record["node_identity"] == ["gcp"]
    assert record["objects"][0]["node_identity"] == "gcp daemon credentials (auth: provider-adc)"
    denied = [r for r in d.audit_records() if r["decision"] == "deny"]
    assert denied and "nodeIdentity" in denied[0]["reason"]


def test_policy_key_is_validated() -> None:
    parsed = parse_policy(POLICY, "t")
    assert parsed.rules[0].node_identity == frozenset({"azure", "gcp"})
    assert parsed.rules[1].node_identity == frozenset()
    bad = "rules:\n  - namespaces: [a]\n    nodeIdentity: [aws]\n"
    with pytest.raises(PolicyError, match="aws cannot read as the node"):
        parse_policy(bad, "t")
    with pytest.raises(PolicyError, match="nodeIdentity must be a non-empty list"):
        parse_policy("rules:\n  - namespaces: [a]\n    nodeIdentity: []\n", "t")


def _lint(tmp_path: Path, capsys: pytest.CaptureFixture[str], parameters: str) -> tuple[int, str]:
    path = tmp_path / "spc.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            apiVersion: secrets-store.csi.x-k8s.io/v1
            kind: SecretProviderClass
            metadata: {name: node}
            spec:
              provider: keygate
              parameters:
            """
        )
        + textwrap.indent(parameters, "    ")
    )
    code = main(["lint", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_lint_shows_the_grant_is_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objects = "objects: |\n  array:\n    - |\n      objectName: a\n      objectType: secret\n"
    code, out = _lint(
        tmp_path, capsys, f'keyvaultName: kv1\ntenantId: {TENANT}\nuseVMManagedIdentity: "true"\n{objects}'
    )
    assert "nodeIdentity: [azure]" in out and "0 errors, 1 warning" in out and code == 0, out
    assert "spc.yaml:9: warning" in out, "the warning points at the useVMManagedIdentity line"
    code, out = _lint(
        tmp_path,
        capsys,
        f'keyvaultName: kv1\ntenantId: {TENANT}\nuserAssignedIdentityID: "{USER_MI}"\n{objects}',
    )
    assert code != 0 and "only used with useVMManagedIdentity: true" in out, out
    gcp_spc = 'auth: provider-adc\nsecrets: |\n  - resourceName: "projects/p/secrets/s/versions/1"\n    fileName: s\n'
    code, out = _lint(tmp_path, capsys, gcp_spc)
    assert "nodeIdentity: [gcp]" in out and "0 errors, 1 warning" in out and code == 0, out
