"""The Vault backend against a real OpenBao server, always through a real Mount over the socket."""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import base64
import json
import re
import time

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from provider.config import load
from tests.vault_fixtures import (  # noqa: F401
    AUDIENCE,
    BaoServer,
    TokenReviewServer,
    Vault,
    free_port,
    kube_auth,
    spare_bao,
    vault,
)

SECRET = "s3cr3t-Vault-value-91c7"


def files(resp) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def versions(resp) -> dict[str, str]:
    return {v.id: v.version for v in resp.object_version}


def do_mount(d, params: dict[str, str], pod: Pod, **kw):
    return d.client.mount(mount_request("app-secrets", params, pod, **kw))


def mount_error(d, params: dict[str, str], pod: Pod) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        do_mount(d, params, pod)
    return info.value.code(), info.value.details()


def backend(d):
    return d.mounter.registry.get("vault")


@pytest.fixture(scope="module")
def seeded(vault: Vault) -> Vault:
    root = vault.root()
    root.secrets.kv.v2.create_or_update_secret(
        "app/db",
        {"password": SECRET, "port": 5432, "tls": True, "opts": {"pool": 4, "ssl": "on"}},
        mount_point="secret",
    )
    root.secrets.kv.v2.create_or_update_secret(
        "app/enc",
        {
            "b64": base64.b64encode(b"\x00\x01binary\xff").decode(),
            "hex": b"\xde\xad\xbe\xef".hex(),
            "bad": "not base64!!",
        },
        mount_point="secret",
    )
    root.secrets.kv.v2.create_or_update_secret("other/x", {"password": "nope"}, mount_point="secret")
    root.write("kv1/app/legacy", user="alice", pin=1234)
    return vault


KV_OBJECTS = """
- objectName: password
  secretPath: secret/data/app/db
  secretKey: password
  filePermission: 0600
- objectName: port
  secretPath: secret/data/app/db
  secretKey: port
- objectName: opts
  secretPath: secret/data/app/db
  secretKey: opts
- objectName: whole
  secretPath: secret/app/db
- objectName: legacy-user
  secretPath: kv1/app/legacy
  secretKey: user
- objectName: legacy
  secretPath: kv1/app/legacy
"""


def test_kv_v1_v2_keys_whole_json_and_non_strings(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    resp = do_mount(d, seeded.params(KV_OBJECTS), pod)
    got = files(resp)
    assert got["password"] == SECRET.encode()
    assert got["port"] == b"5432"
    assert json.loads(got["opts"]) == {"pool": 4, "ssl": "on"}
    whole = {"password": SECRET, "port": 5432, "tls": True, "opts": {"pool": 4, "ssl": "on"}}
    assert json.loads(got["whole"])["data"]["data"] == whole
    assert got["legacy-user"] == b"alice"
    assert json.loads(got["legacy"])["data"] == {"user": "alice", "pin": 1234}
    modes = {f.path: f.mode for f in resp.files}
    assert modes["password"] == 0o600 and modes["port"] == 0o644
    ids = set(versions(resp))
    assert ids == {
        "vault/secret/data/app/db#password",
        "vault/secret/data/app/db#port",
        "vault/secret/data/app/db#opts",
        "vault/secret/app/db",
        "vault/kv1/app/legacy#user",
        "vault/kv1/app/legacy",
    }
    # One read per distinct (path, method, args): db (data/ spelling), db (short spelling), legacy.
    assert backend(d).stats["reads"] == 3
    assert SECRET not in json.dumps(sorted(ids)) + json.dumps(versions(resp))


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PEER_WHOLE = """
- {objectName: v2, secretPath: secret/data/app/shape}
- {objectName: v1, secretPath: kv1/app/legacy}
"""


def test_whole_answer_is_written_like_vault_csi_provider_byte_for_byte(start_daemon, seeded: Vault):
    """No secretKey: Go's json.Marshal of api.Secret (field order, sorted maps, HTML escapes)."""
    root = seeded.root()
    data = {
        "html": "<a href='x'>&</a>",
        "uni": "\u00e9\u2028",
        "n": 1.5e-7,
        "big": 1e22,
        "list": [1, {"z": 1, "a": None}],
    }
    root.secrets.kv.v2.create_or_update_secret("app/shape", data, mount_point="secret")
    meta = root.secrets.kv.v2.read_secret_version(
        "app/shape", mount_point="secret", raise_on_deleted_version=True
    )["data"]["metadata"]
    got = files(do_mount(start_daemon(), seeded.params(PEER_WHOLE), seeded.issuer.pod()))
    rid = {name: json.loads(got[name])["request_id"] for name in ("v1", "v2")}
    assert all(re.fullmatch(UUID, value) for value in rid.values()) and rid["v1"] != rid["v2"]
    v1 = (
        '{"request_id":"RID","lease_id":"","lease_duration":2764800,"renewable":false,'
        '"data":{"pin":1234,"user":"alice"},"warnings":null}'
    )
    assert got["v1"] == v1.replace("RID", rid["v1"]).encode()
    v2 = (
        '{"request_id":"RID","lease_id":"","lease_duration":0,"renewable":false,'
        '"data":{"data":{"big":1e+22,"html":"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e",'
        '"list":[1,{"a":null,"z":1}],"n":1.5e-7,"uni":"\u00e9\\u2028"},'
        '"metadata":{"created_time":"CREATED","custom_metadata":null,"deletion_time":"",'
        '"destroyed":false,"version":VERSION}},"warnings":null}'
    )
    v2 = v2.replace("RID", rid["v2"]).replace("CREATED", meta["created_time"])
    assert got["v2"] == v2.replace("VERSION", str(meta["version"])).encode()


def test_whole_answer_stays_the_same_across_polls_until_the_secret_changes(start_daemon, seeded: Vault):
    """Each read has a new request_id; the file keeps the first one while the rest is unchanged."""
    d = start_daemon()
    root = seeded.root()
    root.secrets.kv.v2.create_or_update_secret("app/poll", {"k": "one"}, mount_point="secret")
    root.write("kv1/app/poll", k="one")
    objects = (
        "- {objectName: v2, secretPath: secret/data/app/poll}\n- {objectName: v1, secretPath: kv1/app/poll}"
    )
    pod = seeded.issuer.pod()
    first = do_mount(d, seeded.params(objects), pod)
    again = do_mount(d, seeded.params(objects), pod, current=list(versions(first).items()))
    assert backend(d).stats["reads"] == 4
    assert files(again) == files(first) and versions(again) == versions(first)
    root.secrets.kv.v2.create_or_update_secret("app/poll", {"k": "two"}, mount_point="secret")
    root.write("kv1/app/poll", k="two")
    changed = do_mount(d, seeded.params(objects), pod, current=list(versions(first).items()))
    for name in ("v1", "v2"):
        before, after = json.loads(files(first)[name]), json.loads(files(changed)[name])
        assert after["request_id"] != before["request_id"] and versions(changed) != versions(first)
    assert json.loads(files(changed)["v2"])["data"]["data"] == {"k": "two"}
    assert json.loads(files(changed)["v1"])["data"] == {"k": "two"}
    # The kubelet refreshes the pod's JWT: same pod, so the same request ids and the same files.
    refreshed = do_mount(d, seeded.params(objects), seeded.issuer.pod())
    assert pod.tokens != seeded.issuer.pod().tokens
    assert files(refreshed) == files(changed) and versions(refreshed) == versions(changed)
    # Another pod reading the same secret keeps its own request ids.
    other = do_mount(d, seeded.params(objects), seeded.issuer.pod(name="app-2", uid="u-2"))
    assert json.loads(files(other)["v1"])["request_id"] != json.loads(files(changed)["v1"])["request_id"]


def test_whole_pki_answer_has_the_certificate_under_data_like_the_peers_test(start_daemon, seeded: Vault):
    d = start_daemon()
    objects = """
- objectName: certs
  secretPath: pki/issue/app
  method: PUT
  secretArgs: {common_name: whole.example.com, ttl: 10m}
"""
    pod = seeded.issuer.pod()
    got = files(do_mount(d, seeded.params(objects), pod))["certs"]
    body = json.loads(got)
    assert list(body) == ["request_id", "lease_id", "lease_duration", "renewable", "data", "warnings"]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(body["data"]["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=whole.example.com"
    key = serialization.load_pem_private_key(body["data"]["private_key"].encode(), None)
    assert cert.public_key() == key.public_key()
    assert list(body["data"]) == sorted(body["data"])
    # A reused issue answer is the very same bytes on the next poll.
    assert files(do_mount(d, seeded.params(objects), pod))["certs"] == got
    assert backend(d).stats["lease_reuses"] == 1


def test_whole_answer_too_deep_is_refused_with_a_reason(start_daemon, seeded: Vault):
    nested: object = "leaf"
    for _ in range(300):
        nested = [nested]
    seeded.root().secrets.kv.v2.create_or_update_secret("app/deep", {"deep": nested}, mount_point="secret")
    params = seeded.params("- {objectName: deep, secretPath: secret/data/app/deep}")
    code, details = mount_error(start_daemon(), params, seeded.issuer.pod())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested more than" in details and "secretKey" in details and "leaf" not in details


def test_encodings(start_daemon, seeded: Vault):
    d = start_daemon()
    objects = """
- {objectName: b64, secretPath: secret/data/app/enc, secretKey: b64, encoding: base64}
- {objectName: hex, secretPath: secret/data/app/enc, secretKey: hex, encoding: hex}
- {objectName: plain, secretPath: secret/data/app/enc, secretKey: hex, encoding: utf-8}
"""
    got = files(do_mount(d, seeded.params(objects), seeded.issuer.pod()))
    assert got == {"b64": b"\x00\x01binary\xff", "hex": b"\xde\xad\xbe\xef", "plain": b"deadbeef"}
    bad = "- {objectName: bad, secretPath: secret/data/app/enc, secretKey: bad, encoding: base64}"
    code, details = mount_error(d, seeded.params(bad), seeded.issuer.pod())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid base64" in details and "secret/data/app/enc" in details
    assert "not base64!!" not in details


def test_post_with_secret_args_pki_and_transit(start_daemon, seeded: Vault):
    d = start_daemon()
    plaintext = base64.b64encode(SECRET.encode()).decode()
    objects = f"""
- objectName: tls.crt
  secretPath: pki/issue/app
  method: POST
  secretArgs: {{common_name: web.example.com, ttl: 10m}}
  secretKey: certificate
- objectName: tls.key
  secretPath: pki/issue/app
  method: POST
  secretArgs: {{ttl: 10m, common_name: web.example.com}}
  secretKey: private_key
- objectName: sealed-blob
  secretPath: transit/encrypt/app
  method: POST
  secretArgs: {{plaintext: {plaintext}}}
  secretKey: ciphertext
"""
    got = files(do_mount(d, seeded.params(objects), seeded.issuer.pod()))
    assert got["tls.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY-----" in got["tls.key"]
    assert got["sealed-blob"].startswith(b"vault:v1:")
    # The two PKI objects share one issue call, so key and certificate match.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(got["tls.crt"])
    key = serialization.load_pem_private_key(got["tls.key"], None)
    assert cert.public_key() == key.public_key()
    assert backend(d).stats["reads"] == 2
    # Decrypt with root to prove transit really received the secretArgs.
    out = seeded.root().write("transit/decrypt/app", ciphertext=got["sealed-blob"].decode())
    assert base64.b64decode(out["data"]["plaintext"]) == SECRET.encode()


def test_put_is_sent_as_a_write_with_secret_args_like_the_peers_pki_test(start_daemon, seeded: Vault):
    d = start_daemon()
    objects = """
- objectName: tls.crt
  secretPath: pki/issue/app
  method: "PUT"
  secretArgs: {common_name: put.example.com, ttl: 10m}
  secretKey: certificate
- objectName: tls.key
  secretPath: pki/issue/app
  method: put
  secretArgs: {ttl: 10m, common_name: put.example.com}
  secretKey: private_key
"""
    pod = seeded.issuer.pod()
    got = files(do_mount(d, seeded.params(objects), pod))
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(got["tls.crt"])
    assert cert.subject.rfc4514_string() == "CN=put.example.com"
    assert cert.public_key() == serialization.load_pem_private_key(got["tls.key"], None).public_key()
    assert backend(d).stats["reads"] == 1
    # An issue answer is a dynamic secret: the next poll reuses it instead of issuing again.
    assert files(do_mount(d, seeded.params(objects), pod)) == got
    assert backend(d).stats["reads"] == 1 and backend(d).stats["lease_reuses"] == 1


@pytest.mark.parametrize("prefix", ["v1/", "/v1/", "/"])
def test_secret_path_with_the_api_prefix_names_the_same_secret(start_daemon, seeded: Vault, prefix: str):
    d = start_daemon()
    objects = f"""
- objectName: password
  secretPath: {prefix}secret/data/app/db
  secretKey: password
- objectName: legacy-user
  secretPath: {prefix}kv1/app/legacy
  secretKey: user
"""
    resp = do_mount(d, seeded.params(objects), seeded.issuer.pod())
    assert files(resp) == {"password": SECRET.encode(), "legacy-user": b"alice"}
    assert set(versions(resp)) == {"vault/secret/data/app/db#password", "vault/kv1/app/legacy#user"}


def test_vault_address_falls_back_to_the_daemon_setting(start_daemon, seeded: Vault):
    params = seeded.params("- {objectName: password, secretPath: secret/data/app/db, secretKey: password}")
    address = params.pop("vaultAddress")
    d = start_daemon(backends={"vault": {"address": address}})
    assert files(do_mount(d, params, seeded.issuer.pod())) == {"password": SECRET.encode()}
    code, details = mount_error(start_daemon(), params, seeded.issuer.pod())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "vaultAddress" in details


def test_token_cache_reuse_counts_logins(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    before = len(seeded.token_accessors())
    for _ in range(5):
        do_mount(d, seeded.params(KV_OBJECTS), pod)
    assert backend(d).stats["logins"] == 1
    assert len(seeded.token_accessors()) == before + 1
    # Another pod (different identity and JWT) gets its own Vault token.
    other = seeded.issuer.pod(name="app-1", uid="2b1e0c7a-0000-4000-8000-000000000001")
    do_mount(d, seeded.params(KV_OBJECTS), other)
    assert backend(d).stats["logins"] == 2
    # A different JWT for the same pod (kubelet refreshed it) must log in again: cached Vault
    # tokens are only reused by whoever presents the very token that obtained them.
    do_mount(d, seeded.params(KV_OBJECTS), seeded.issuer.pod())
    assert backend(d).stats["logins"] == 3


def test_relogin_after_token_revocation(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    params = seeded.params("- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}")
    before = set(seeded.token_accessors())
    do_mount(d, params, pod)
    created = set(seeded.token_accessors()) - before
    assert len(created) == 1
    seeded.root().write("auth/token/revoke-accessor", accessor=created.pop())
    assert files(do_mount(d, params, pod)) == {"pw": SECRET.encode()}
    stats = backend(d).stats
    assert stats["logins"] == 2 and stats["relogins_after_403"] == 1


def test_renewable_token_is_renewed_not_relogged(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    params = seeded.params(
        "- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}", roleName="short"
    )
    do_mount(d, params, pod)
    time.sleep(2.2)  # the role's token_ttl is 3 s; past two thirds of it keygate renews
    assert files(do_mount(d, params, pod)) == {"pw": SECRET.encode()}
    stats = backend(d).stats
    assert stats["logins"] == 1 and stats["renewals"] == 1


def test_permission_denied_outside_policy(start_daemon, seeded: Vault):
    d = start_daemon()
    params = seeded.params("- {objectName: x, secretPath: secret/data/other/x, secretKey: password}")
    code, details = mount_error(d, params, seeded.issuer.pod())
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "[PermissionDenied]" in details and "secret/data/other/x" in details and "'app'" in details


def test_not_found(start_daemon, seeded: Vault):
    d = start_daemon()
    params = seeded.params("- {objectName: x, secretPath: secret/data/app/missing, secretKey: a}")
    code, details = mount_error(d, params, seeded.issuer.pod())
    assert code == grpc.StatusCode.NOT_FOUND
    assert "secret/data/app/missing" in details
    params = seeded.params("- {objectName: x, secretPath: secret/data/app/db, secretKey: nokey}")
    code, details = mount_error(d, params, seeded.issuer.pod())
    assert code == grpc.StatusCode.NOT_FOUND and "'nokey'" in details and SECRET not in details


def test_rotation_new_kv_version_changes_object_version(start_daemon, seeded: Vault):
    d = start_daemon()
    root = seeded.root()
    root.secrets.kv.v2.create_or_update_secret("app/rot", {"k": "one"}, mount_point="secret")
    pod = seeded.issuer.pod()
    params = seeded.params("- {objectName: k, secretPath: secret/data/app/rot, secretKey: k}")
    first = do_mount(d, params, pod)
    again = do_mount(d, params, pod, current=list(versions(first).items()))
    assert versions(again) == versions(first)
    root.secrets.kv.v2.create_or_update_secret("app/rot", {"k": "two"}, mount_point="secret")
    second = do_mount(d, params, pod, current=list(versions(first).items()))
    assert files(second) == {"k": b"two"}
    assert list(versions(second)) == ["vault/secret/data/app/rot#k"]
    assert versions(second) != versions(first)
    # Writing the same value again is still a new kv version, and the version says so.
    root.secrets.kv.v2.create_or_update_secret("app/rot", {"k": "two"}, mount_point="secret")
    third = do_mount(d, params, pod)
    assert files(third) == files(second) and versions(third) != versions(second)


def test_missing_token_names_the_audience(start_daemon, seeded: Vault):
    d = start_daemon()
    params = seeded.params("- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}")
    code, details = mount_error(d, params, Pod())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "audience 'vault'" in details and "tokenRequests" in details
    code, details = mount_error(d, {**params, "audience": "vault-prod"}, seeded.issuer.pod())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "audience: vault-prod" in details


def test_token_for_another_service_account_is_refused_by_vault(start_daemon, seeded: Vault):
    d = start_daemon()
    params = seeded.params("- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}")
    code, details = mount_error(d, params, seeded.issuer.pod(service_account="intruder"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "refused the pod's login at auth/jwt" in details and "'app'" in details


def test_custom_audience_and_auth_mount_spelling(start_daemon, seeded: Vault):
    d = start_daemon()
    params = seeded.params(
        "- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}",
        audience=AUDIENCE,
        vaultAuthMountPath="/auth/jwt/",
    )
    assert files(do_mount(d, params, seeded.issuer.pod())) == {"pw": SECRET.encode()}


def test_unreachable_server(start_daemon, seeded: Vault):
    d = start_daemon()
    params = seeded.params(
        "- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}",
        vaultAddress=f"https://127.0.0.1:{free_port()}",
    )
    code, details = mount_error(d, params, seeded.issuer.pod())
    assert code == grpc.StatusCode.UNAVAILABLE and "unreachable" in details


def test_sealed_server(start_daemon, seeded: Vault, spare_bao: BaoServer):
    spare_bao.root().sys.seal()
    d = start_daemon()
    params = seeded.params(
        "- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}",
        vaultAddress=spare_bao.address,
        vaultCACertPath=spare_bao.ca_file,
    )
    code, details = mount_error(d, params, seeded.issuer.pod())
    assert code == grpc.StatusCode.UNAVAILABLE and "is sealed" in details


def test_tls_checks(start_daemon, seeded: Vault):
    d = start_daemon()
    obj = "- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}"
    pod = seeded.issuer.pod()
    no_ca = {k: v for k, v in seeded.params(obj).items() if k != "vaultCACertPath"}
    code, details = mount_error(d, no_ca, pod)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "TLS" in details and "vaultCACertPath" in details
    code, details = mount_error(d, seeded.params(obj, vaultTLSServerName="vault.elsewhere.test"), pod)
    assert code == grpc.StatusCode.UNAVAILABLE and "TLS handshake failed" in details
    ok = do_mount(d, seeded.params(obj, vaultTLSServerName="localhost"), pod)
    assert files(ok) == {"pw": SECRET.encode()}
    ca_dir = seeded.server.cert_dir
    with_dir = {**no_ca, "vaultCADirectory": ca_dir}
    # OpenSSL looks CA directories up by subject hash; make the link a real deployment would have.
    import os
    import subprocess

    digest = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", seeded.ca_file], capture_output=True, text=True
    ).stdout.strip()
    if digest and not os.path.exists(f"{ca_dir}/{digest}.0"):
        os.symlink(seeded.ca_file, f"{ca_dir}/{digest}.0")
    if digest:
        assert files(do_mount(d, with_dir, pod)) == {"pw": SECRET.encode()}
    cert_pair = seeded.params(
        obj,
        vaultTLSClientCertPath=f"{ca_dir}/vault-cert.pem",
        vaultTLSClientKeyPath=f"{ca_dir}/vault-key.pem",
    )
    assert files(do_mount(d, cert_pair, pod)) == {"pw": SECRET.encode()}
    code, details = mount_error(d, seeded.params(obj, vaultCACertPath="/nonexistent/ca.pem"), pod)
    assert code == grpc.StatusCode.UNAVAILABLE and "vaultCACertPath" in details
    code, details = mount_error(d, seeded.params(obj, vaultTLSClientCertPath="/nonexistent.pem"), pod)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "go together" in details


def test_skip_tls_verify_is_refused_unless_the_daemon_allows_it(start_daemon, seeded: Vault):
    obj = "- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}"
    params = seeded.params(obj, vaultSkipTLSVerify="true")
    del params["vaultCACertPath"]
    d = start_daemon()
    code, details = mount_error(d, params, seeded.issuer.pod())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "vaultSkipTLSVerify" in details
    insecure = start_daemon(insecure_allow_vault_skip_tls_verify=True)
    assert files(do_mount(insecure, params, seeded.issuer.pod())) == {"pw": SECRET.encode()}


def test_daemon_option_reaches_the_backend_settings():
    config = load(None, {"KEYGATE_INSECURE_ALLOW_VAULT_SKIP_TLS_VERIFY": "true"})
    assert config.backend_settings()["vault"]["insecure_allow_skip_tls_verify"] is True
    assert load(None, {}).backend_settings()["vault"]["insecure_allow_skip_tls_verify"] is False


LEASED = """
- objectName: crt
  secretPath: pki/issue/leased
  method: POST
  secretArgs: {common_name: api.example.com}
  secretKey: certificate
"""


def test_dynamic_secrets_reused_while_valid_by_default(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    first = do_mount(d, seeded.params(LEASED), pod)
    second = do_mount(d, seeded.params(LEASED), pod)
    assert files(first) == files(second) and versions(first) == versions(second)
    assert backend(d).stats["lease_reuses"] == 1
    # Another pod never sees this pod's lease.
    other = do_mount(d, seeded.params(LEASED), seeded.issuer.pod(name="app-2", uid="u-2"))
    assert files(other) != files(first)


def test_dynamic_secrets_new_lease_per_mount_when_asked(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    params = seeded.params(LEASED, vaultDynamicSecrets="per-mount")
    first = do_mount(d, params, pod)
    second = do_mount(d, params, pod)
    assert files(first) != files(second) and versions(first) != versions(second)
    configured = start_daemon(backends={"vault": {"dynamic_secrets": "per-mount"}})
    a = do_mount(configured, seeded.params(LEASED), pod)
    b = do_mount(configured, seeded.params(LEASED), pod)
    assert files(a) != files(b)


def test_duplicate_ids_get_object_name_suffix(start_daemon, seeded: Vault):
    d = start_daemon()
    objects = """
- {objectName: a, secretPath: secret/data/app/enc, secretKey: hex}
- {objectName: b, secretPath: secret/data/app/enc, secretKey: hex, encoding: hex}
"""
    resp = do_mount(d, seeded.params(objects), seeded.issuer.pod())
    assert set(versions(resp)) == {"vault/secret/data/app/enc#hex~a", "vault/secret/data/app/enc#hex~b"}


def test_invalid_spc_is_rejected_before_any_request(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    cases = {
        "- {objectName: x, secretPath: secret/data/app/db, method: PATCH}": "'method' must be GET, POST or PUT",
        "- {objectName: x, secretPath: secret/data/app/db, encoding: rot13}": "'encoding' must be one of",
        "- {objectName: x, secretPath: secret/data/app/db, secretArgs: [1]}": "'secretArgs' must be a",
    }
    for objects, expected in cases.items():
        code, details = mount_error(d, seeded.params(objects), pod)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expected in details
    code, details = mount_error(d, {**seeded.params(KV_OBJECTS), "roleName": ""}, pod)
    assert "roleName" in details
    assert backend(d).stats["requests"] == 0


def test_no_secret_value_or_token_in_logs(start_daemon, seeded: Vault):
    d = start_daemon()
    pod = seeded.issuer.pod()
    do_mount(d, seeded.params(KV_OBJECTS), pod)
    do_mount(d, seeded.params(LEASED), pod)
    messages = []
    for objects in (
        "- {objectName: x, secretPath: secret/data/other/x, secretKey: password}",
        "- {objectName: x, secretPath: secret/data/app/db, secretKey: missing}",
        "- {objectName: x, secretPath: secret/data/app/db, secretKey: password, encoding: hex}",
    ):
        messages.append(mount_error(d, seeded.params(objects), pod)[1])
    text = d.log_text() + "\n".join(messages)
    assert "vault login" in text  # the log did record the work
    vault_tokens = [entry[0].token for entry in backend(d)._tokens._entries.values()]
    assert vault_tokens
    for forbidden in (SECRET, "nope", pod.tokens[AUDIENCE], "PRIVATE KEY", *vault_tokens):
        assert forbidden not in text


def test_kubernetes_auth_method_with_token_review(start_daemon, seeded: Vault, kube_auth: TokenReviewServer):
    """The default auth method: OpenBao asks the (local) Kubernetes API to review the pod's token."""
    d = start_daemon()
    params = seeded.params("- {objectName: pw, secretPath: secret/data/app/db, secretKey: password}")
    del params["vaultAuthMethod"]
    pod = seeded.issuer.pod()
    before = kube_auth.reviews
    assert files(do_mount(d, params, pod)) == {"pw": SECRET.encode()}
    assert files(do_mount(d, params, pod)) == {"pw": SECRET.encode()}
    assert kube_auth.reviews == before + 1 and backend(d).stats["logins"] == 1
    legacy = {**params, "vaultKubernetesMountPath": "kubernetes"}
    assert files(do_mount(d, legacy, pod)) == {"pw": SECRET.encode()}
    code, details = mount_error(d, params, seeded.issuer.pod(service_account="intruder"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "auth/kubernetes" in details
