"""Azure Key Vault backend, end to end: a real Mount over the Unix socket, the real Azure SDK,
a local HTTPS Key Vault + Entra ID (tests/azure_fake.py) reached through a CONNECT proxy, so the
SDK keeps its production URLs, its challenge flow and its TLS checks (trusting the test CA)."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from keygate_dev.driver_client import Pod, mount_request
from tests.azure_fake import ConnectProxy, FakeAzure, TestCA, make_cert, pod_token

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SP_CLIENT_ID = "99999999-8888-7777-6666-555555555555"
SP_SECRET = "sp-Secret~value.0123456789abcdef"
ISSUER = "https://oidc.cluster.test/issuer"
AUDIENCE = "api://AzureADTokenExchange"
SUBJECT = "system:serviceaccount:default:app"
_names = itertools.count()


@dataclass
class AzureEnv:
    fake: FakeAzure
    proxy: ConnectProxy
    ca: TestCA
    cluster_key: rsa.RSAPrivateKey

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"ca_bundle": str(self.ca.ca_path), "proxy": self.proxy.url, **extra}

    def pod(self, service_account: str = "app") -> Pod:
        """A pod whose attributes and projected token agree (as attestation would require)."""
        token = pod_token(self.cluster_key, ISSUER, AUDIENCE, service_account=service_account)
        return Pod(service_account=service_account, tokens={AUDIENCE: token})

    def vault(self) -> str:
        """A fresh vault name per test: the SDK caches challenges per vault host process-wide."""
        name = f"kv{next(_names)}{id(self) % 100000}"
        self.fake.grant(CLIENT_ID, name)
        return name


@pytest.fixture
def azure(short_tmp: Path) -> Iterator[AzureEnv]:
    ca = TestCA(short_tmp)
    cluster_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake = FakeAzure(ca, cluster_key.public_key(), TENANT).start()
    fake.federate(CLIENT_ID, ISSUER, SUBJECT, AUDIENCE)
    proxy = ConnectProxy(fake.port).start()
    try:
        yield AzureEnv(fake, proxy, ca, cluster_key)
    finally:
        proxy.stop()
        fake.stop()


def spc(vault: str, objects: list[dict[str, Any]], **params: str) -> dict[str, str]:
    """SPC parameters exactly as the Azure provider's manifests write them (``array:`` form)."""
    array = [yaml.safe_dump(o, sort_keys=False) for o in objects]
    base = {"keyvaultName": vault, "tenantId": TENANT, "clientID": CLIENT_ID}
    base.update(params)
    return {**base, "objects": yaml.safe_dump({"array": array}, sort_keys=False)}


def files(resp: Any) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in resp.files}


def mount_error(d: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(request)
    return info.value


def chain(key_type: str = "rsa") -> tuple[Any, list[x509.Certificate]]:
    """Root -> intermediate -> leaf; returns the leaf key and [leaf, intermediate, root]."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert("Test Root", root_key, None, root_key, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert("Test Intermediate", inter_key, root, root_key, ca=True)
    leaf_key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_type == "rsa"
        else ec.generate_private_key(ec.SECP384R1())
    )
    leaf = make_cert("app.example.com", leaf_key, inter, inter_key, ca=False)
    return leaf_key, [leaf, inter, root]


def test_workload_identity_every_object_type(azure: AzureEnv, start_daemon: Any) -> None:
    fake = azure.fake
    vault = azure.vault()
    old = fake.add_secret(vault, "db-password", "old-pass")
    fake.add_secret(vault, "db-password", "s3cr3t-Value!")
    fake.add_secret(vault, "blob", base64.b64encode(b"\x00\x01binary\xff").decode())
    fake.add_secret(vault, "hexed", b"hex-bytes".hex())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    fake.add_key(vault, "signing", rsa_key.public_key())
    fake.add_key(vault, "ec-signing", ec_key.public_key())
    _, certs = chain()
    cert_version = fake.add_certificate(vault, "tls", certs[0])
    params = spc(
        vault,
        [
            {"objectName": "db-password", "objectType": "secret"},
            {"objectName": "db-password", "objectType": "secret", "objectVersion": old, "objectAlias": "old"},
            {
                "objectName": "blob",
                "objectType": "secret",
                "objectEncoding": "base64",
                "filePermission": "0600",
            },
            {"objectName": "hexed", "objectType": "secret", "objectEncoding": "hex"},
            {"objectName": "signing", "objectType": "key"},
            {"objectName": "ec-signing", "objectType": "key", "objectAlias": "ec.pub"},
            {"objectName": "tls", "objectType": "cert", "objectVersion": cert_version},
        ],
        cloudName="AzurePublicCloud",
    )
    d = start_daemon(backends={"azure": azure.settings()})
    pod = azure.pod()
    resp = d.client.mount(mount_request("azure-spc", params, pod))
    got = files(resp)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    assert got == {
        "db-password": (0o644, b"s3cr3t-Value!"),
        "old": (0o644, b"old-pass"),
        "blob": (0o600, b"\x00\x01binary\xff"),
        "hexed": (0o644, b"hex-bytes"),
        "signing": (0o644, rsa_key.public_key().public_bytes(serialization.Encoding.PEM, pub)),
        "ec.pub": (0o644, ec_key.public_key().public_bytes(serialization.Encoding.PEM, pub)),
        "tls": (0o644, certs[0].public_bytes(serialization.Encoding.PEM)),
    }
    ids = [v.id for v in resp.object_version]
    assert f"azure/{vault}/secret/blob" in ids
    assert f"azure/{vault}/key/signing" in ids
    assert f"azure/{vault}/cert/tls" in ids
    assert len(set(ids)) == len(ids) == 7

    # The SDK went to the production host names (through the proxy), met the challenge first,
    # and exchanged exactly the pod's own token for an Entra ID access token once.
    assert f"{vault}.vault.azure.net:443" in azure.proxy.hosts
    assert "login.microsoftonline.com:443" in azure.proxy.hosts
    vault_requests = fake.vault_requests(vault)
    assert not vault_requests[0]["authorized"]
    assert all(r["query"].get("api-version") for r in vault_requests)
    assert fake.assertions == [pod.tokens[AUDIENCE]]
    claims = json.loads(base64.urlsafe_b64decode(fake.assertions[0].split(".")[1] + "=="))
    assert claims["sub"] == SUBJECT and claims["aud"] == [AUDIENCE]
    assert fake.token_requests == 1

    # Rotation poll: cached client (no new token exchange), same versions until the secret
    # changes, then only that object's version changes.
    again = d.client.mount(mount_request("azure-spc", params, azure.pod()))
    assert fake.token_requests == 1
    before = {v.id: v.version for v in resp.object_version}
    assert {v.id: v.version for v in again.object_version} == before
    fake.add_secret(vault, "db-password", "rotated")
    third = d.client.mount(mount_request("azure-spc", params, azure.pod()))
    changed = {v.id for v in third.object_version if before[v.id] != v.version}
    # db-password is listed twice (latest and pinned "old"), so both ids carry the file path.
    assert changed == {f"azure/{vault}/secret/db-password:db-password"}
    assert f"azure/{vault}/secret/db-password:old" in before
    assert files(third)["db-password"] == (0o644, b"rotated")


def test_certificate_backed_secrets_pem_and_pfx(azure: AzureEnv, start_daemon: Any) -> None:
    fake = azure.fake
    vault = azure.vault()
    leaf_key, (leaf, inter, root) = chain("rsa")
    # Deliberately store the CA certificates out of order: root before intermediate.
    pfx = pkcs12.serialize_key_and_certificates(
        b"tls", leaf_key, leaf, [root, inter], serialization.NoEncryption()
    )
    fake.add_secret(
        vault, "tls", base64.b64encode(pfx).decode(), content_type="application/x-pkcs12", kid=True
    )
    ec_leaf_key, ec_chain = chain("ec")
    ec_pfx = pkcs12.serialize_key_and_certificates(
        None, ec_leaf_key, ec_chain[0], [ec_chain[2], ec_chain[1]], serialization.NoEncryption()
    )
    fake.add_secret(
        vault, "tls-ec", base64.b64encode(ec_pfx).decode(), content_type="application/x-pkcs12", kid=True
    )
    pem_bundle = (
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + leaf.public_bytes(serialization.Encoding.PEM)
    ).decode()
    fake.add_secret(vault, "tls-pem", pem_bundle, content_type="application/x-pem-file", kid=True)
    params = spc(
        vault,
        [
            {"objectName": "tls", "objectType": "secret"},
            {"objectName": "tls", "objectType": "secret", "objectFormat": "pem", "objectAlias": "tls.pem"},
            {
                "objectName": "tls",
                "objectType": "secret",
                "objectFormat": "pfx",
                "objectEncoding": "base64",
                "objectAlias": "tls.pfx",
            },
            {"objectName": "tls-ec", "objectType": "secret"},
            {"objectName": "tls-pem", "objectType": "secret"},
        ],
    )
    d = start_daemon(backends={"azure": azure.settings()})
    resp = d.client.mount(mount_request("certs", params, azure.pod()))
    got = files(resp)
    pem = serialization.Encoding.PEM
    expected_key = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    expected = expected_key + b"".join(c.public_bytes(pem) for c in (leaf, inter, root))
    assert got["tls"][1] == expected
    assert got["tls"][1].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert got["tls.pem"][1] == expected
    parsed = pkcs12.load_pkcs12(got["tls.pfx"][1], None)
    assert parsed.cert is not None and parsed.cert.certificate == leaf
    ec_out = got["tls-ec"][1]
    assert ec_out.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    loaded = x509.load_pem_x509_certificates(ec_out)
    assert loaded == [ec_chain[0], ec_chain[1], ec_chain[2]]
    assert got["tls-pem"][1] == pem_bundle.encode()
    assert {v.id for v in resp.object_version} == {
        f"azure/{vault}/secret/tls:tls",
        f"azure/{vault}/secret/tls:tls.pem",
        f"azure/{vault}/secret/tls:tls.pfx",
        f"azure/{vault}/secret/tls-ec",
        f"azure/{vault}/secret/tls-pem",
    }


def test_version_history(azure: AzureEnv, start_daemon: Any) -> None:
    fake = azure.fake
    vault = azure.vault()
    v1 = fake.add_secret(vault, "api-key", "one")
    v2 = fake.add_secret(vault, "api-key", "two")
    fake.add_secret(vault, "api-key", "disabled", enabled=False)
    fake.add_secret(vault, "api-key", "three")
    key_old = fake.add_key(vault, "k", ec.generate_private_key(ec.SECP384R1()).public_key())
    new_key = ec.generate_private_key(ec.SECP256R1())
    fake.add_key(vault, "k", new_key.public_key())
    params = spc(
        vault,
        [
            {
                "objectName": "api-key",
                "objectType": "secret",
                "objectVersionHistory": 5,
                "objectAlias": "api",
            },
            {
                "objectName": "api-key",
                "objectType": "secret",
                "objectVersionHistory": "2",
                "objectVersion": v2,
                "objectAlias": "from-v2",
                "filePermission": "0400",
            },
            {"objectName": "k", "objectType": "key", "objectVersionHistory": 2},
        ],
    )
    d = start_daemon(backends={"azure": azure.settings()})
    resp = d.client.mount(mount_request("history", params, azure.pod()))
    got = files(resp)
    assert got["api/0"] == (0o644, b"three")
    assert got["api/1"] == (0o644, b"two")
    assert got["api/2"] == (0o644, b"one")
    assert "api/3" not in got
    assert got["from-v2/0"] == (0o400, b"two")
    assert got["from-v2/1"] == (0o400, b"one")
    assert got["k/0"][1] == new_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert got["k/1"][1].startswith(b"-----BEGIN PUBLIC KEY-----")
    ids = {v.id for v in resp.object_version}
    assert f"azure/{vault}/secret/api-key/0:api/0" in ids or f"azure/{vault}/secret/api-key/0" in ids
    assert f"azure/{vault}/key/k/1" in ids
    assert key_old and v1
    assert any(r["path"] == "/secrets/api-key/versions" for r in fake.vault_requests(vault))


def test_errors_map_to_keygate_codes(azure: AzureEnv, start_daemon: Any) -> None:
    fake = azure.fake
    vault = azure.vault()
    fake.add_secret(vault, "present", "value-1")
    fake.add_secret(vault, "forbidden", "value-2")
    fake.add_secret(vault, "throttled", "value-3")
    fake.add_secret(vault, "always-throttled", "value-4")
    fake.grants[CLIENT_ID] = {
        (vault, "secrets", "present"),
        (vault, "secrets", "throttled"),
        (vault, "secrets", "always-throttled"),
        (vault, "secrets", "missing"),
    }
    d = start_daemon(backends={"azure": azure.settings()})
    pod = azure.pod()

    def one(name: str, **extra: Any) -> Any:
        return mount_request("errs", spc(vault, [{"objectName": name, "objectType": "secret", **extra}]), pod)

    err = mount_error(d, one("forbidden"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "[PermissionDenied]" in err.details() and "'forbidden'" in err.details()
    err = mount_error(d, one("missing"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "[SecretNotFound]" in err.details()
    err = mount_error(d, one("present", objectVersion="0123456789abcdef0123456789abcdef"))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    fake.fail("/secrets/throttled", 429, 2)
    resp = d.client.mount(one("throttled"))
    assert files(resp) == {"throttled": (0o644, b"value-3")}
    assert sum(1 for r in fake.vault_requests(vault) if r["path"].startswith("/secrets/throttled")) == 3

    fake.fail("/secrets/always-throttled", 429, 100)
    err = mount_error(d, one("always-throttled"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "[BackendUnavailable]" in err.details() and "429" in err.details() and "attempts" in err.details()

    fake.fail("/secrets/present", 503, 1)
    assert files(d.client.mount(one("present"))) == {"present": (0o644, b"value-1")}

    # A pod whose service account has no federated credential is refused by Entra ID.
    other = azure.pod(service_account="intruder")
    err = mount_error(
        d, mount_request("errs", spc(vault, [{"objectName": "present", "objectType": "secret"}]), other)
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "AADSTS70021" in err.details()

    # No token for the exchange audience: the CSIDriver lacks tokenRequests.
    err = mount_error(
        d, mount_request("errs", spc(vault, [{"objectName": "present", "objectType": "secret"}]), Pod())
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "tokenRequests" in err.details()


def test_network_failure_is_backend_unavailable(azure: AzureEnv, start_daemon: Any, short_tmp: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    vault = azure.vault()
    settings = {"ca_bundle": str(azure.ca.ca_path), "proxy": f"http://127.0.0.1:{dead_port}"}
    d = start_daemon(backends={"azure": settings})
    err = mount_error(
        d, mount_request("net", spc(vault, [{"objectName": "x", "objectType": "secret"}]), azure.pod())
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach Key Vault" in err.details()


def test_static_credentials_sovereign_cloud_and_endpoint_overrides(
    azure: AzureEnv, start_daemon: Any
) -> None:
    fake = azure.fake
    fake.client_secrets[SP_CLIENT_ID] = SP_SECRET
    vault = azure.vault()
    fake.grant(SP_CLIENT_ID, vault)
    fake.add_secret(vault, "conn", "Server=db;Password=p4ss")
    node_secret = {"clientid": SP_CLIENT_ID, "clientsecret": SP_SECRET}
    params = spc(vault, [{"objectName": "conn", "objectType": "secret"}], cloudName="AzureUSGovernmentCloud")
    del params["clientID"]
    d = start_daemon(backends={"azure": azure.settings()})
    resp = d.client.mount(mount_request("gov", params, Pod(), secrets=node_secret))
    assert files(resp) == {"conn": (0o644, b"Server=db;Password=p4ss")}
    assert f"{vault}.vault.usgovcloudapi.net:443" in azure.proxy.hosts
    assert "login.microsoftonline.us:443" in azure.proxy.hosts
    assert fake.assertions == []

    # Wrong client secret -> Unauthenticated; missing identity -> a message naming both options.
    err = mount_error(
        d, mount_request("gov", params, Pod(), secrets={**node_secret, "clientsecret": "wrong-secret-1"})
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "AADSTS7000215" in err.details()
    err = mount_error(d, mount_request("gov", params, Pod()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "clientID" in err.details() and "clientsecret" in err.details()

    # Private cloud: custom vault DNS suffix and an authority host reached directly (no known
    # instance, so MSAL's instance discovery is disabled by setting, not patched away).
    vault2 = azure.vault()
    fake.grant(SP_CLIENT_ID, vault2)
    fake.add_secret(vault2, "conn", "private-cloud-value")
    settings = azure.settings(
        vault_url_template="https://{vault}.kv.test",
        authority_host=f"https://127.0.0.1:{fake.port}",
        disable_instance_discovery=True,
    )
    d2 = start_daemon(backends={"azure": settings})
    params2 = spc(vault2, [{"objectName": "conn", "objectType": "secret"}])
    del params2["clientID"]
    resp = d2.client.mount(mount_request("private", params2, Pod(), secrets=node_secret))
    assert files(resp) == {"conn": (0o644, b"private-cloud-value")}
    assert f"{vault2}.kv.test:443" in azure.proxy.hosts
    assert f"127.0.0.1:{fake.port}" in azure.proxy.hosts


def test_mixed_spc_with_sealed_object(azure: AzureEnv, start_daemon: Any, node_key: Any) -> None:
    vault = azure.vault()
    azure.fake.add_secret(vault, "from-azure", "azure-value")
    params = spc(
        vault,
        [
            {"objectName": "from-azure", "objectType": "secret"},
            {"objectName": "sealed-one", "sealed": node_key.seal(b"sealed-value", "default", "sealed-one")},
        ],
    )
    d = start_daemon(backends={"azure": azure.settings()})
    resp = d.client.mount(mount_request("mixed", params, azure.pod()))
    assert files(resp) == {"from-azure": (0o644, b"azure-value"), "sealed-one": (0o644, b"sealed-value")}


@pytest.mark.parametrize(
    ("objects", "params", "needle"),
    [
        ([{"objectName": "a", "objectType": "blob"}], {}, "objectType must be one of"),
        ([{"objectName": "a", "objectType": "key", "objectFormat": "pfx"}], {}, "pfx is only supported"),
        ([{"objectName": "a", "objectType": "secret", "objectEncoding": "rot13"}], {}, "objectEncoding"),
        ([{"objectName": "a", "objectType": "secret", "objectVersionHistory": "many"}], {}, "whole number"),
        ([{"objectName": "a/b", "objectType": "secret"}], {}, "objectName must be"),
        ([{"objectName": "a", "objectType": "secret", "objectVersion": "../x"}], {}, "objectVersion"),
        ([{"objectName": "a", "objectType": "secret"}], {"usePodIdentity": "true"}, "deprecated"),
        ([{"objectName": "a", "objectType": "secret"}], {"useVMManagedIdentity": "true"}, "not both"),
        (
            [{"objectName": "a", "objectType": "secret"}],
            {"keyvaultName": "evil.com/x"},
            "not a Key Vault name",
        ),
        ([{"objectName": "a", "objectType": "secret"}], {"cloudName": "Mars"}, "cloudName"),
        ([{"objectName": "a", "objectType": "secret"}], {"cloudEnvFileName": "/etc/az.json"}, "custom cloud"),
        ([{"objectName": "a", "objectType": "secret"}], {"tenantId": ""}, "tenantId"),
    ],
)
def test_invalid_spc(
    azure: AzureEnv, start_daemon: Any, objects: Any, params: dict[str, str], needle: str
) -> None:
    d = start_daemon(backends={"azure": azure.settings()})
    err = mount_error(d, mount_request("bad", spc("kvbad", objects, **params), azure.pod()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.details()
    assert azure.fake.requests == []


def test_no_secret_in_logs_or_errors(azure: AzureEnv, start_daemon: Any) -> None:
    fake = azure.fake
    fake.client_secrets[SP_CLIENT_ID] = SP_SECRET
    vault = azure.vault()
    fake.grant(SP_CLIENT_ID, vault)
    secret_value = "TopSecret-VALUE-7c1e9"
    fake.add_secret(vault, "s", secret_value)
    fake.add_secret(vault, "bad-b64", secret_value)
    d = start_daemon(log_level="debug", backends={"azure": azure.settings(sdk_log_level="debug")})
    pod = azure.pod()
    ok = d.client.mount(mount_request("logs", spc(vault, [{"objectName": "s", "objectType": "secret"}]), pod))
    assert files(ok)["s"][1] == secret_value.encode()
    errors = [
        mount_error(
            d,
            mount_request(
                "logs",
                spc(vault, [{"objectName": "bad-b64", "objectType": "secret", "objectEncoding": "hex"}]),
                pod,
            ),
        ),
        mount_error(
            d,
            mount_request(
                "logs",
                spc(vault, [{"objectName": "s", "objectType": "secret"}]),
                azure.pod(service_account="other"),
            ),
        ),
    ]
    params = spc(vault, [{"objectName": "s", "objectType": "secret"}])
    del params["clientID"]
    errors.append(
        mount_error(
            d,
            mount_request(
                "logs", params, Pod(), secrets={"clientid": SP_CLIENT_ID, "clientsecret": SP_SECRET + "x"}
            ),
        )
    )
    assert "not valid hex" in errors[0].details()
    text = d.log_text() + "\n".join(e.details() for e in errors)
    assert "mount" in d.log_text()
    assert '"logger":"azure.' in d.log_text()  # the SDK's own debug lines are scanned too
    forbidden = [secret_value, SP_SECRET, pod.tokens[AUDIENCE], *fake.access_tokens]
    for value in forbidden:
        assert value not in text


def test_client_cache_honours_pod_token_expiry(azure: AzureEnv, start_daemon: Any) -> None:
    """A pod token about to expire is not trusted to refresh a cached client: a new exchange."""
    vault = azure.vault()
    azure.fake.add_secret(vault, "s", "v")
    d = start_daemon(backends={"azure": azure.settings()})
    params = spc(vault, [{"objectName": "s", "objectType": "secret"}])
    short = Pod(tokens={AUDIENCE: pod_token(azure.cluster_key, ISSUER, AUDIENCE, lifetime=30)})
    for _ in range(2):
        d.client.mount(mount_request("ttl", params, short))
    assert azure.fake.token_requests == 2
    long_lived = azure.pod()
    for _ in range(2):
        d.client.mount(mount_request("ttl", params, long_lived))
    assert azure.fake.token_requests == 3
