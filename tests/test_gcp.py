"""GCP Secret Manager backend, end to end: real Mounts over the Unix socket, the real
google-cloud-secret-manager client and google-auth against local gRPC / HTTP servers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from providers.gcp.settings import DEFAULTS, GCPSettings
from tests.gcp_fake import (
    Cluster,
    FakeGoogleAuth,
    FakeParameterManager,
    FakeSecretManager,
    Principals,
    all_tokens,
)

POOL = "proj.svc.id.goog"
PROVIDER = "https://container.googleapis.com/v1/projects/proj/locations/us-central1/clusters/c1"
AUDIENCE = f"identitynamespace:{POOL}:{PROVIDER}"
POD_PRINCIPAL = "ns/default/sa/app"
GSA = "reader@proj.iam.gserviceaccount.com"
DELEGATE = "hop@other.iam.gserviceaccount.com"
SECRET_VALUE = b"s3cr3t-\xe2\x9c\x93-value-0042"
JSON_SECRET = b'{"username": "admin", "password": "pw-json-9931", "port": 5432}'
YAML_SECRET = b"api_key: yaml-key-7781\nnested:\n  a: 1\n"


@dataclass
class GCP:
    sm: FakeSecretManager
    regional: FakeSecretManager
    auth: FakeGoogleAuth
    principals: Principals
    cluster: Cluster
    pm: FakeParameterManager
    pm_regional: FakeParameterManager

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "endpoint": self.sm.address,
            "regional_endpoint": self.regional.address,
            "parameter_endpoint": self.pm.address,
            "parameter_regional_endpoint": self.pm_regional.address,
            "sts_endpoint": self.auth.sts_url,
            "iam_endpoint": self.auth.base,
            "token_endpoint": self.auth.token_url,
            "workload_identity_pool": POOL,
            "identity_provider": PROVIDER,
            "insecure_plaintext_endpoint": True,
            **extra,
        }

    def pod(self, audience: str = POOL, **kwargs: Any) -> Pod:
        return Pod(tokens={audience: self.cluster.pod_token(audience, **kwargs)})


@pytest.fixture
def gcp():
    principals = Principals()
    cluster = Cluster()
    auth = FakeGoogleAuth(principals, cluster, AUDIENCE, {POOL})
    with (
        FakeSecretManager(principals, "global") as sm,
        FakeSecretManager(principals, "regional") as regional,
        FakeParameterManager(principals, "global", secrets=sm) as pm,
        FakeParameterManager(principals, "regional", secrets=regional) as pm_regional,
        auth,
    ):
        sm.add("projects/proj/secrets/db", b"old", SECRET_VALUE, grant=(POD_PRINCIPAL,))
        sm.add("projects/proj/secrets/cfg", JSON_SECRET, grant=(POD_PRINCIPAL,))
        sm.add("projects/proj/secrets/yml", YAML_SECRET, grant=(POD_PRINCIPAL,))
        sm.add("projects/proj/secrets/gsa-only", b"gsa-value-5512", grant=(f"gsa/{GSA}",))
        sm.add("projects/proj/secrets/locked", b"locked-value-1234", grant=())
        regional.add(
            "projects/proj/locations/europe-west1/secrets/eu", b"eu-value-6643", grant=(POD_PRINCIPAL,)
        )
        yield GCP(sm, regional, auth, principals, cluster, pm, pm_regional)


def secrets_param(*items: dict[str, Any]) -> dict[str, str]:
    return {"secrets": json.dumps(list(items))}


def mount_error(d, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(request)
    return info.value


def files_of(resp) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in resp.files}


def test_global_regional_latest_filename_path_mode(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    params = secrets_param(
        {"resourceName": "projects/proj/secrets/db/versions/1", "fileName": "db-old"},
        {"resourceName": "projects/proj/secrets/db/versions/latest", "path": "conf/db", "mode": 0o400},
        {
            "resourceName": "projects/proj/locations/europe-west1/secrets/eu/versions/latest",
            "fileName": "eu.txt",
            "mode": "0440",
        },
    )
    pod = gcp.pod()
    resp = d.client.mount(mount_request("spc", params, pod))
    assert files_of(resp) == {
        "db-old": (0o644, b"old"),
        "conf/db": (0o400, SECRET_VALUE),
        "eu.txt": (0o440, b"eu-value-6643"),
    }
    ids = [v.id for v in resp.object_version]
    assert ids == [
        "projects/proj/secrets/db/versions/1",
        "projects/proj/secrets/db/versions/latest",
        "projects/proj/locations/europe-west1/secrets/eu/versions/latest",
    ]
    versions = {v.id: v.version for v in resp.object_version}
    assert all(versions.values()) and not any("versions/" in v for v in versions.values())  # HMACs
    assert {c.name for c in gcp.regional.calls} == {
        "projects/proj/locations/europe-west1/secrets/eu/versions/latest"
    }
    assert all(c.server == "global" and "locations" not in c.name for c in gcp.sm.calls)
    assert {c.principal for c in gcp.sm.calls + gcp.regional.calls} == {POD_PRINCIPAL}
    # One STS exchange serves global and regional reads, and the next mount reuses the token.
    assert len(gcp.auth.log.sts) == 1
    sts = gcp.auth.log.sts[0]
    assert sts["audience"] == AUDIENCE
    assert sts["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert "cloud-platform" in sts["scope"]
    again = d.client.mount(mount_request("spc", params, pod))
    assert files_of(again) == files_of(resp)
    assert len(gcp.auth.log.sts) == 1


def test_version_changes_when_latest_moves(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    pod = gcp.pod()
    params = secrets_param({"resourceName": "projects/proj/secrets/db/versions/latest", "fileName": "db"})
    first = d.client.mount(mount_request("spc", params, pod))
    same = d.client.mount(mount_request("spc", params, pod))
    gcp.sm.add("projects/proj/secrets/db", b"rotated-3")
    rotated = d.client.mount(mount_request("spc", params, pod))
    assert first.object_version[0].version == same.object_version[0].version
    assert rotated.object_version[0].version != first.object_version[0].version
    assert rotated.files[0].contents == b"rotated-3"
    assert len(gcp.auth.log.sts) == 1  # same pod token: the cached access token is reused


def test_extract_json_and_yaml_keys(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    cfg = "projects/proj/secrets/cfg/versions/latest"
    params = secrets_param(
        {"resourceName": cfg, "fileName": "user", "extractJSONKey": "username"},
        {"resourceName": cfg, "fileName": "password", "extractJSONKey": "password"},
        {
            "resourceName": "projects/proj/secrets/yml/versions/1",
            "fileName": "api",
            "extractYAMLKey": "api_key",
        },
    )
    resp = d.client.mount(mount_request("spc", params, gcp.pod()))
    assert files_of(resp) == {
        "user": (0o644, b"admin"),
        "password": (0o644, b"pw-json-9931"),
        "api": (0o644, b"yaml-key-7781"),
    }
    assert [v.id for v in resp.object_version] == [
        f"{cfg}#user",
        f"{cfg}#password",
        "projects/proj/secrets/yml/versions/1",
    ]
    assert [c.name for c in gcp.sm.calls].count(cfg) == 1  # one read serves both files

    for spec, code, needle in (
        ({"extractJSONKey": "missing"}, "SecretNotFound", "'missing' was not found"),
        ({"extractJSONKey": "port"}, "InvalidSecretProviderClass", "only string values"),
        ({"extractYAMLKey": "nested"}, "InvalidSecretProviderClass", "only string values"),
    ):
        resource = cfg if "extractJSONKey" in spec else "projects/proj/secrets/yml/versions/1"
        err = mount_error(
            d,
            mount_request(
                "spc", secrets_param({"resourceName": resource, "fileName": "f", **spec}), gcp.pod()
            ),
        )
        assert err.details().startswith(f"[{code}]") and needle in err.details()
    err = mount_error(
        d,
        mount_request(
            "spc",
            secrets_param(
                {
                    "resourceName": "projects/proj/secrets/db/versions/2",
                    "fileName": "f",
                    "extractJSONKey": "k",
                }
            ),
            gcp.pod(),
        ),
    )
    assert "not valid JSON" in err.details() and SECRET_VALUE.decode() not in err.details()


def test_impersonation_with_delegates(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    item = {"resourceName": "projects/proj/secrets/gsa-only/versions/latest", "fileName": "g"}
    params = {
        **secrets_param(item),
        "gcpServiceAccount": GSA,
        "gcpServiceAccountDelegates": json.dumps([DELEGATE]),
    }

    err = mount_error(d, mount_request("spc", params, gcp.pod()))
    assert err.details().startswith("[PermissionDenied]") and GSA in err.details()
    assert "iam.serviceAccounts.getAccessToken" in err.details()

    gcp.auth.impersonation[GSA] = {POD_PRINCIPAL}
    resp = d.client.mount(mount_request("spc", params, gcp.pod()))
    assert files_of(resp) == {"g": (0o644, b"gsa-value-5512")}
    iam = gcp.auth.log.iam[-1]
    assert iam["caller"] == POD_PRINCIPAL and iam["gsa"] == GSA
    assert iam["delegates"] == [f"projects/-/serviceAccounts/{DELEGATE}"]
    assert iam["scope"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert gcp.sm.calls[-1].principal == f"gsa/{GSA}"

    # Without impersonation the pod's own federated identity has no grant on that secret.
    err = mount_error(d, mount_request("spc", secrets_param(item), gcp.pod()))
    assert err.details().startswith("[PermissionDenied]")
    assert "projects/proj/secrets/gsa-only/versions/latest" in err.details()
    assert "workload identity default/app" in err.details()


def test_workload_identity_token_checks(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    params = secrets_param({"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "db"})
    # No token for the pool audience in the mount: a clear pointer to the CSIDriver.
    err = mount_error(d, mount_request("spc", params, Pod()))
    assert err.details().startswith("[Unauthenticated]") and "tokenRequests" in err.details()
    # A token signed by another issuer key is refused by STS.
    forged = Cluster().pod_token(POOL)
    err = mount_error(d, mount_request("spc", params, Pod(tokens={POOL: forged})))
    assert err.details().startswith("[Unauthenticated]") and "invalid_grant" in err.details()
    # The full STS audience is accepted as the token audience too (the GCP provider's fallback),
    # and SPC parameters can name the pool and provider.
    gcp.auth.token_audiences.add(AUDIENCE)
    d2 = start_daemon(
        backends={"gcp": {**gcp.settings(), "workload_identity_pool": "", "identity_provider": ""}}
    )
    spc = {**params, "workloadIdentityPool": POOL, "identityProvider": PROVIDER}
    resp = d2.client.mount(mount_request("spc", spc, gcp.pod(audience=AUDIENCE)))
    assert resp.files[0].contents == SECRET_VALUE
    err = mount_error(d2, mount_request("spc", params, gcp.pod()))
    assert (
        err.details().startswith("[InvalidSecretProviderClass]") and "workload_identity_pool" in err.details()
    )


def test_node_publish_secret_key(start_daemon, gcp):
    email = "ci-reader@proj.iam.gserviceaccount.com"
    key_json = gcp.auth.service_account_key(email)
    gcp.sm.add("projects/proj/secrets/keyed", b"keyed-value-8080", grant=(f"sa/{email}",))
    d = start_daemon(backends={"gcp": gcp.settings()})
    params = secrets_param({"resourceName": "projects/proj/secrets/keyed/versions/latest", "fileName": "k"})
    resp = d.client.mount(mount_request("spc", params, Pod(), secrets={"key.json": key_json}))
    assert files_of(resp) == {"k": (0o644, b"keyed-value-8080")}
    assert gcp.auth.log.oauth == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert gcp.auth.log.sts == []

    # A key that points its token_uri elsewhere is refused before any network call.
    other = json.loads(key_json) | {"token_uri": "https://attacker.example/token"}
    err = mount_error(d, mount_request("spc", params, Pod(), secrets={"key.json": json.dumps(other)}))
    assert err.details().startswith("[PermissionDenied]") and "token_uri" in err.details()
    # Only service-account keys: no external_account configs (they name files and URLs to read).
    ext = {"type": "external_account", "credential_source": {"file": "/etc/shadow"}}
    err = mount_error(d, mount_request("spc", params, Pod(), secrets={"key.json": json.dumps(ext)}))
    assert err.details().startswith("[InvalidRequest]") and "service_account" in err.details()
    # key.json together with auth: is ambiguous, as in the GCP provider.
    err = mount_error(
        d, mount_request("spc", {**params, "auth": "pod-adc"}, Pod(), secrets={"key.json": key_json})
    )
    assert err.details().startswith("[InvalidSecretProviderClass]") and "one or the other" in err.details()
    # The cluster admin can switch static keys off.
    d2 = start_daemon(backends={"gcp": gcp.settings(allow_node_publish_secret=False)})
    err = mount_error(d2, mount_request("spc", params, Pod(), secrets={"key.json": key_json}))
    assert err.details().startswith("[PermissionDenied]") and "allow_node_publish_secret" in err.details()
    assert key_json not in d.log_text() and "PRIVATE KEY" not in d.log_text()


def test_provider_adc(start_daemon, gcp, tmp_path, monkeypatch):
    email = "keygate-daemon@proj.iam.gserviceaccount.com"
    adc = tmp_path / "adc.json"
    adc.write_text(gcp.auth.service_account_key(email))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    gcp.sm.add("projects/proj/secrets/shared", b"adc-value-3131", grant=(f"sa/{email}",))
    params = {
        **secrets_param({"resourceName": "projects/proj/secrets/shared/versions/1", "fileName": "s"}),
        "auth": "provider-adc",
    }
    # The daemon's identity is the node's: without attestation no policy grants it
    # (tests/test_node_identity.py covers the granted namespace).
    d2 = start_daemon(backends={"gcp": gcp.settings()})
    err = mount_error(d2, mount_request("spc", params, Pod()))
    assert err.details().startswith("[PermissionDenied]") and "nodeIdentity: [gcp]" in err.details()
    assert gcp.sm.calls == []
    # auth: pod-adc explicitly is the workload identity path, as without the parameter.
    d2.client.mount(
        mount_request(
            "spc",
            {
                **secrets_param({"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "db"}),
                "auth": "pod-adc",
            },
            gcp.pod(),
        )
    )
    assert gcp.sm.calls[-1].principal == POD_PRINCIPAL


def test_backend_errors_and_retries(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    pod = gcp.pod()

    def one(resource: str):
        return mount_request("spc", secrets_param({"resourceName": resource, "fileName": "f"}), pod)

    err = mount_error(d, one("projects/proj/secrets/nope/versions/1"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (
        err.details().startswith("[SecretNotFound]")
        and "projects/proj/secrets/nope/versions/1" in err.details()
    )
    err = mount_error(d, one("projects/proj/secrets/db/versions/9"))
    assert err.details().startswith("[SecretNotFound]")
    err = mount_error(d, one("projects/proj/secrets/locked/versions/1"))
    assert (
        err.details().startswith("[PermissionDenied]")
        and "roles/secretmanager.secretAccessor" in err.details()
    )

    gcp.sm.fail_next = [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE]
    calls = len(gcp.sm.calls)
    resp = d.client.mount(one("projects/proj/secrets/db/versions/2"))
    assert resp.files[0].contents == SECRET_VALUE
    assert len(gcp.sm.calls) - calls == 3

    gcp.sm.fail_next = [grpc.StatusCode.UNAVAILABLE] * 10
    err = mount_error(d, one("projects/proj/secrets/db/versions/2"))
    assert err.details().startswith("[BackendUnavailable]") and "after 4 attempts" in err.details()
    gcp.sm.fail_next = []

    # STS throttled once, then fine: the exchange is retried too.
    d2 = start_daemon(backends={"gcp": gcp.settings()})
    gcp.auth.fail_sts = [429]
    resp = d2.client.mount(one("projects/proj/secrets/db/versions/2"))
    assert resp.files[0].contents == SECRET_VALUE

    # A mount is all or nothing: one missing secret fails the whole volume.
    params = secrets_param(
        {"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "ok"},
        {"resourceName": "projects/proj/secrets/nope/versions/latest", "fileName": "missing"},
    )
    err = mount_error(d, mount_request("spc", params, pod))
    assert err.details().startswith("[SecretNotFound]")

    # Nothing listens: unavailable after retries, within the mount deadline.
    d3 = start_daemon(backends={"gcp": gcp.settings(endpoint="127.0.0.1:9")})
    err = mount_error(d3, one("projects/proj/secrets/db/versions/2"))
    assert err.details().startswith("[BackendUnavailable]")


@pytest.mark.parametrize(
    ("item", "extra", "needle"),
    [
        ({"resourceName": "projects/proj/secrets/db"}, {}, "resourceName must be"),
        ({"resourceName": "projects/p/locations/EU!/secrets/s/versions/1", "fileName": "f"}, {}, "location"),
        ({"resourceName": "projects/proj/secrets/db/versions/1"}, {}, "set fileName (or path)"),
        (
            {"resourceName": "projects/proj/secrets/db/versions/1", "fileName": "a", "path": "b"},
            {},
            "either fileName or path",
        ),
        (
            {
                "resourceName": "projects/proj/secrets/db/versions/1",
                "fileName": "a",
                "extractJSONKey": "x",
                "extractYAMLKey": "y",
            },
            {},
            "either extractJSONKey or extractYAMLKey",
        ),
        (
            {"resourceName": "projects/proj/secrets/db/versions/1", "fileName": "a"},
            {"auth": "magic"},
            "parameter 'auth'",
        ),
        ({"resourceName": "projects/proj/secrets/db/versions/1", "fileName": "../a"}, {}, "'..'"),
        (
            {"resourceName": "projects/proj/secrets/db/versions/1", "fileName": "a"},
            {"gcpServiceAccount": "not an email"},
            "gcpServiceAccount",
        ),
    ],
)
def test_invalid_spc(start_daemon, gcp, item, extra, needle):
    d = start_daemon(backends={"gcp": gcp.settings()})
    err = mount_error(d, mount_request("spc", {**secrets_param(item), **extra}, gcp.pod()))
    assert err.details().startswith("[InvalidSecretProviderClass]")
    assert needle in err.details()
    assert gcp.sm.calls == [] and gcp.auth.log.sts == []


def test_settings_defaults_and_checks():
    s = GCPSettings.from_mapping({})
    assert s.endpoint == "secretmanager.googleapis.com:443"
    assert s.endpoint_for("europe-west1") == "secretmanager.europe-west1.rep.googleapis.com:443"
    assert s.sts_endpoint == "https://sts.googleapis.com/v1/token"
    assert s.iam_endpoint == "https://iamcredentials.googleapis.com"
    assert not s.insecure_plaintext_endpoint and not s.insecure_allow_provider_adc
    assert set(DEFAULTS) >= {"endpoint", "sts_endpoint", "iam_endpoint", "insecure_plaintext_endpoint"}
    from provider.errors import KeygateError

    with pytest.raises(KeygateError, match="unknown settings"):
        GCPSettings.from_mapping({"endpiont": "x:1"})
    with pytest.raises(KeygateError, match=r"replaced by the release policy: grant `nodeIdentity: \[gcp\]`"):
        GCPSettings.from_mapping({"insecure_allow_provider_adc": True})
    with pytest.raises(KeygateError, match="loopback"):
        GCPSettings.from_mapping({"endpoint": "10.0.0.5:443", "insecure_plaintext_endpoint": True})
    with pytest.raises(KeygateError, match="https"):
        GCPSettings.from_mapping({"sts_endpoint": "http://sts.example/v1/token"})


def test_no_secret_or_token_in_logs_or_errors(start_daemon, gcp):
    d = start_daemon(backends={"gcp": gcp.settings()})
    gcp.auth.impersonation[GSA] = {POD_PRINCIPAL}
    pod = gcp.pod()
    cfg = "projects/proj/secrets/cfg/versions/latest"
    ok = {
        **secrets_param(
            {"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "db"},
            {"resourceName": cfg, "fileName": "pw", "extractJSONKey": "password"},
        )
    }
    d.client.mount(mount_request("spc", ok, pod))
    messages = []
    for params in (
        secrets_param({"resourceName": cfg, "fileName": "x", "extractJSONKey": "port"}),
        secrets_param({"resourceName": cfg, "fileName": "x", "extractYAMLKey": "nope"}),
        secrets_param(
            {"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "x", "extractYAMLKey": "k"}
        ),
        {
            **secrets_param({"resourceName": "projects/proj/secrets/locked/versions/1", "fileName": "x"}),
            "gcpServiceAccount": GSA,
        },
    ):
        messages.append(mount_error(d, mount_request("spc", params, pod)).details())
    text = d.log_text() + "\n".join(messages)
    assert "gcp credentials obtained" in text
    for value in (
        SECRET_VALUE.decode(),
        "pw-json-9931",
        "5432",
        "admin",
        pod.tokens[POOL],
        *all_tokens(gcp.principals),
    ):
        assert value not in text


def test_mixed_spc_sealed_and_gcp_in_one_mount(start_daemon, gcp, node_key):
    d = start_daemon(backends={"gcp": gcp.settings()})
    params = {
        "objects": f"- objectName: pw\n  sealed: {node_key.seal(b'sealed-pw', 'default', 'pw')}\n",
        **secrets_param({"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "db"}),
    }
    resp = d.client.mount(mount_request("spc", params, gcp.pod()))
    assert files_of(resp) == {"pw": (0o644, b"sealed-pw"), "db": (0o644, SECRET_VALUE)}
    assert sorted(v.id for v in resp.object_version) == ["projects/proj/secrets/db/versions/2", "sealed/pw"]
