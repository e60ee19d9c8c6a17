"""The Vault HTTP client's own promises, through real Mounts of a daemon against OpenBao or the
fault server: secret names sent literally, a rotated CA file read again, answers capped, and at
most ``workers`` connections per Vault endpoint however many Mounts wait."""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import datetime
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keygate_dev.driver_client import mount_request
from tests.fault_server import FaultVault
from tests.vault_fixtures import Issuer, Vault, vault  # noqa: F401


def mount(d, params: dict[str, str], pod) -> dict[str, bytes] | grpc.RpcError:
    try:
        resp = d.client.mount(mount_request("app-secrets", params, pod), timeout=30)
    except grpc.RpcError as err:
        return err
    return {f.path: f.contents for f in resp.files}


def one(path: str, key: str = "v") -> str:
    return json.dumps([{"objectName": "f", "secretPath": path, "secretKey": key}])


def test_secret_names_are_sent_literally(start_daemon, vault: Vault):
    """``#``, ``%`` and spaces in a secret's name are part of the name (escaped on the wire), as
    vault-csi-provider's Go client sends them: not a fragment, not an escape to decode."""
    root = vault.root()
    names = ["app/hash#1", "app/pct%2e%2e", "app/a b"]
    for name in names:  # hvac escapes the names it writes
        root.secrets.kv.v2.create_or_update_secret(name, {"v": f"value of {name}"}, mount_point="secret")
    assert {"hash#1", "pct%2e%2e", "a b"} <= set(
        root.secrets.kv.v2.list_secrets("app", mount_point="secret")["data"]["keys"]
    )
    d = start_daemon()
    pod = vault.issuer.pod()
    for name in names:
        assert mount(d, vault.params(one(f"secret/data/{name}")), pod) == {"f": f"value of {name}".encode()}
        # without /data/: the kv-v2 mount lookup gets the literal name too
        assert mount(d, vault.params(one(f"secret/{name}")), pod) == {"f": f"value of {name}".encode()}


def other_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the Vault CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_rotated_ca_file_is_read_again(start_daemon, vault: Vault, tmp_path: Path):
    """The CA file named by vaultCACertPath is replaced on the node (rotation): the next Mount
    trusts the new one without a daemon restart."""
    vault.root().secrets.kv.v2.create_or_update_secret("app/rotca", {"v": "ok"}, mount_point="secret")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(other_ca())
    d = start_daemon()
    params = vault.params(one("secret/data/app/rotca"), vaultCACertPath=str(ca))
    pod = vault.issuer.pod()
    out = mount(d, params, pod)
    assert isinstance(out, grpc.RpcError) and out.code() == grpc.StatusCode.UNAVAILABLE
    assert "TLS handshake failed" in (out.details() or ""), out.details()
    ca.write_bytes(Path(vault.ca_file).read_bytes())
    time.sleep(1.1)  # files are looked at again at most once a second
    assert mount(d, params, pod) == {"f": b"ok"}


def test_an_oversized_answer_is_refused_not_read_to_the_end(start_daemon):
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = FaultVault(
        secrets={"secret/app/huge": {"v": "x" * (5 * 1024 * 1024)}, "secret/app/ok": {"v": "y"}}
    )
    try:
        d = start_daemon()
        params = {
            "vaultAddress": server.address,
            "roleName": "app",
            "vaultAuthMethod": "jwt",
            "objects": one("secret/data/app/huge"),
        }
        out = mount(d, params, issuer.pod())
        assert isinstance(out, grpc.RpcError) and out.code() == grpc.StatusCode.UNAVAILABLE
        assert "more than 4 MiB while reading 'secret/data/app/huge'" in (out.details() or "")
        assert "xxxx" not in (out.details() or "")
        assert mount(d, {**params, "objects": one("secret/data/app/ok")}, issuer.pod()) == {"f": b"y"}
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_at_most_workers_connections_per_endpoint(start_daemon):
    """12 Mounts hang on a black-holed read with ``workers: 3``: only 3 requests reach the server
    at a time; the rest wait for a connection and all end at their deadline."""
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = FaultVault(secrets={"secret/app/db": {"v": "x"}})
    try:
        d = start_daemon(mount_timeout=1.5, backends={"vault": {"workers": 3}})
        params = {
            "vaultAddress": server.address,
            "roleName": "app",
            "vaultAuthMethod": "jwt",
            "objects": one("secret/data/app/db"),
        }
        assert mount(d, params, issuer.pod(name="warm")) == {"f": b"x"}
        server.add("secret/data/app/db", "blackhole")
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(mount, d, params, issuer.pod(name=f"p-{i}")) for i in range(12)]
            time.sleep(0.8)
            # the warm-up's read, then 3 in the hole; the other 9 Mounts wait for a connection
            in_hole = server.requests["secret/data/app/db"] - 1
            outs = [f.result() for f in futures]
        assert in_hole == 3, in_hole
        assert all(
            isinstance(o, grpc.RpcError) and o.code() == grpc.StatusCode.DEADLINE_EXCEEDED for o in outs
        )
        server.clear()
        assert mount(d, params, issuer.pod(name="after")) == {"f": b"x"}
    finally:
        server.stop()
