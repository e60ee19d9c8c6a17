"""A tiny stand-in for the parts of the Kubernetes API that keygate uses, on 127.0.0.1.

``keygate demo`` and the tests need a real issuer and a real API to attest against, and no
cluster is available there. This server speaks the real wire formats over real HTTPS:

* ``GET /.well-known/openid-configuration`` and ``GET /openid/v1/jwks`` (OIDC discovery);
* ``GET /api/v1/namespaces/{ns}/pods/{name}`` (a Pod object, or a 404 ``Status``);
* ``GET /api/v1/nodes/{name}`` (a Node object with its labels, or a 404 ``Status``);
* ``GET /api/v1/namespaces/{ns}/serviceaccounts/{name}`` (a ServiceAccount with its annotations, or
  a 404 ``Status``);
* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (verifies a token with its own keys).

Tokens are minted with real RSA/EC keys exactly as the API server shapes projected pod-bound
tokens. It is imported only by the demo and the tests, never by the daemon's serving path.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
POD_PATH = re.compile(r"\A/api/v1/namespaces/([^/]+)/pods/([^/?]+)\Z")
NODE_PATH = re.compile(r"\A/api/v1/nodes/([^/?]+)\Z")
SA_PATH = re.compile(r"\A/api/v1/namespaces/([^/]+)/serviceaccounts/([^/?]+)\Z")
DIGEST = "sha256:" + "0" * 64


def pinned(repository: str, seed: str = "") -> str:
    """A digest-pinned image reference (a deterministic fake digest derived from ``seed``)."""
    return f"{repository}@sha256:{hashlib.sha256((seed or repository).encode()).hexdigest()}"


def k8s_key_id(public_key: Any) -> str:
    """The key id the API server gives a key: base64url(SHA-256(DER SubjectPublicKeyInfo))."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@dataclass(slots=True)
class SigningKey:
    private: PrivateKey
    alg: str
    kid: str

    @classmethod
    def generate(cls, kind: str = "rsa") -> SigningKey:
        private: PrivateKey
        if kind == "rsa":
            private, alg = rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
        elif kind == "ec":
            private, alg = ec.generate_private_key(ec.SECP256R1()), "ES256"
        else:
            raise ValueError(f"unknown key kind {kind!r}")
        return cls(private, alg, k8s_key_id(private.public_key()))

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        text = (
            jwt.algorithms.RSAAlgorithm.to_jwk(public)
            if isinstance(public, rsa.RSAPublicKey)
            else jwt.algorithms.ECAlgorithm.to_jwk(public)
        )
        data: dict[str, Any] = json.loads(text)
        data.update(kid=self.kid, alg=self.alg, use="sig")
        return data

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(slots=True)
class PodSpec:
    namespace: str
    name: str
    uid: str
    service_account: str
    images: Mapping[str, str]
    init_images: Mapping[str, str] = field(default_factory=dict)
    ephemeral_images: Mapping[str, str] = field(default_factory=dict)
    node_name: str = "node-a"

    def to_json(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "serviceAccountName": self.service_account,
            "nodeName": self.node_name,
            "containers": [{"name": n, "image": i} for n, i in self.images.items()],
        }
        if self.init_images:
            spec["initContainers"] = [{"name": n, "image": i} for n, i in self.init_images.items()]
        if self.ephemeral_images:
            spec["ephemeralContainers"] = [{"name": n, "image": i} for n, i in self.ephemeral_images.items()]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
            "spec": spec,
            "status": {"phase": "Pending"},
        }


def node_json(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A Node object as the API server returns it (kubelet's own labels plus ``labels``)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                **labels,
            },
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.10"},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "containerRuntimeVersion": "containerd://2.1.0",
                "kernelVersion": "6.12.0",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.35.0",
                "machineID": hashlib.md5(name.encode(), usedforsecurity=False).hexdigest(),
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 13 (trixie)",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
            },
        },
    }


def service_account_json(namespace: str, name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
    """A ServiceAccount object as the API server returns it."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{name}.sa")),
        "resourceVersion": "1",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


@dataclass(slots=True)
class TLSFiles:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_tls(host: str = "127.0.0.1") -> TLSFiles:
    """A throw-away CA and a server certificate for ``host`` (an IP SAN), both EC P-256."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keygate-devcluster-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return TLSFiles(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


class DevCluster:
    """Keys, pods and an HTTPS server answering like a Kubernetes API server.

    ``api_token`` (if set) is required as a bearer token on Pod, Node and ServiceAccount GET and
    TokenReview, as a real API server requires the caller's own credentials. ``hits`` counts
    requests by route.
    """

    def __init__(self, workdir: Path, *, tls: bool = True, api_token: str = "") -> None:
        self.workdir = workdir
        self.tls = tls
        self.api_token = api_token
        self.keys: list[SigningKey] = [SigningKey.generate("rsa")]
        self.pods: dict[tuple[str, str], PodSpec] = {}
        self.nodes: dict[str, dict[str, str]] = {}  # name -> labels added to kubelet's own
        self.service_accounts: dict[tuple[str, str], dict[str, str]] = {}  # (ns, name) -> annotations
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.events: list[tuple[int, str, PodSpec]] = []
        self.stopping = False
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.ca_file = workdir / "kube-ca.crt"
        self.token_file = workdir / "kube-token"
        self.issuer = ""
        # As on a real cluster (system:service-account-issuer-discovery): discovery needs a token.
        self.discovery_requires_auth = False
        self.published_jwks_uri = ""  # what discovery names; default: this server's own JWKS

    # --- keys and tokens -------------------------------------------------------------------
    def add_key(self, kind: str = "rsa") -> SigningKey:
        key = SigningKey.generate(kind)
        with self.lock:
            self.keys.append(key)
        return key

    def jwks(self) -> dict[str, Any]:
        with self.lock:
            return {"keys": [k.jwk() for k in self.keys]}

    def add_pod(self, pod: PodSpec) -> PodSpec:
        """Create or replace a pod; watchers see ADDED or MODIFIED."""
        with self.changed:
            kind = "MODIFIED" if (pod.namespace, pod.name) in self.pods else "ADDED"
            self.pods[(pod.namespace, pod.name)] = pod
            self.events.append((len(self.events) + 1, kind, pod))
            self.changed.notify_all()
        return pod

    def add_node(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Create or replace a Node with these labels."""
        with self.lock:
            self.nodes[name] = dict(labels or {})

    def add_service_account(
        self, namespace: str, name: str, annotations: Mapping[str, str] | None = None
    ) -> None:
        """Create or replace a ServiceAccount with these annotations."""
        with self.lock:
            self.service_accounts[(namespace, name)] = dict(annotations or {})

    def remove_pod(self, pod: PodSpec) -> None:
        with self.changed:
            if self.pods.pop((pod.namespace, pod.name), None) is not None:
                self.events.append((len(self.events) + 1, "DELETED", pod))
                self.changed.notify_all()

    def claims(self, pod: PodSpec, audience: str | Sequence[str], lifetime: int = 3600) -> dict[str, Any]:
        """The claims of a projected pod-bound token, shaped as the API server makes them."""
        now = int(time.time())
        return {
            "aud": [audience] if isinstance(audience, str) else list(audience),
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{pod.namespace}:{pod.service_account}",
            "kubernetes.io": {
                "namespace": pod.namespace,
                "node": {"name": pod.node_name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, pod.node_name))},
                "pod": {"name": pod.name, "uid": pod.uid},
                "serviceaccount": {"name": pod.service_account, "uid": str(uuid.uuid4())},
            },
        }

    def sign(self, claims: Mapping[str, Any], key: SigningKey | None = None, **headers: Any) -> str:
        key = key or self.keys[0]
        return jwt.encode(dict(claims), key.private, algorithm=key.alg, headers={"kid": key.kid, **headers})

    def mint(self, pod: PodSpec, audience: str = "keygate", key: SigningKey | None = None) -> str:
        return self.sign(self.claims(pod, audience), key)

    # --- the HTTP side ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.server_address[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    def start(self) -> DevCluster:
        handler = type("Handler", (_Handler,), {"cluster": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if self.tls:
            files = make_tls()
            self.ca_file.write_bytes(files.ca_pem)
            cert, key = self.workdir / "kube-tls.crt", self.workdir / "kube-tls.key"
            cert.write_bytes(files.cert_pem + files.ca_pem)
            key.write_bytes(files.key_pem)
            key.chmod(0o600)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        if self.api_token:
            self.token_file.write_text(self.api_token)
            self.token_file.chmod(0o600)
        self.issuer = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def review(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a TokenReview the way the API server does, using this cluster's own keys."""
        spec = body.get("spec") or {}
        token, audiences = spec.get("token", ""), list(spec.get("audiences") or [])
        status: dict[str, Any] = {"authenticated": False}
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in self.keys if k.kid == kid)
            claims = jwt.decode(
                token,
                key.private.public_key(),
                algorithms=[key.alg],
                audience=audiences or None,
                issuer=self.issuer,
                options={"verify_aud": bool(audiences)},
            )
        except (jwt.PyJWTError, StopIteration) as exc:
            status["error"] = f"[invalid bearer token, {type(exc).__name__}]"
        else:
            k8s = claims.get("kubernetes.io", {})
            aud = claims.get("aud", [])
            status = {
                "authenticated": True,
                # RFC 7519: one audience may be a plain string; iterating it would yield letters.
                "audiences": [
                    a for a in ([aud] if isinstance(aud, str) else aud) if not audiences or a in audiences
                ],
                "user": {
                    "username": claims["sub"],
                    "uid": k8s.get("serviceaccount", {}).get("uid", ""),
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{k8s.get('namespace', '')}",
                    ],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [k8s.get("pod", {}).get("name", "")],
                        "authentication.kubernetes.io/pod-uid": [k8s.get("pod", {}).get("uid", "")],
                        "authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"],
                    },
                },
            }
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": dict(spec),
            "status": status,
        }


class _Handler(BaseHTTPRequestHandler):
    cluster: DevCluster
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, code: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )

    def _authorized(self) -> bool:
        if not self.cluster.api_token:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.cluster.api_token}":
            return True
        self._status(401, "Unauthorized", "Unauthorized")
        return False

    def do_GET(self) -> None:
        cluster = self.cluster
        path = self.path.split("?", 1)[0]
        discovery = path in ("/.well-known/openid-configuration", "/openid/v1/jwks")
        if discovery and cluster.discovery_requires_auth and not self._authorized():
            return
        if path == "/.well-known/openid-configuration":
            cluster.hits["discovery"] += 1
            self._send(
                200,
                {
                    "issuer": cluster.issuer,
                    "jwks_uri": cluster.published_jwks_uri or f"{cluster.url}/openid/v1/jwks",
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": sorted({k.alg for k in cluster.keys}),
                },
            )
            return
        if path == "/openid/v1/jwks":
            cluster.hits["jwks"] += 1
            self._send(200, cluster.jwks())
            return
        if path == "/api/v1/pods" and "watch=true" in self.path:
            cluster.hits["watch"] += 1
            if self._authorized():
                self._watch_pods()
            return
        match = POD_PATH.match(path)
        if match:
            cluster.hits["pod"] += 1
            if not self._authorized():
                return
            with cluster.lock:
                pod = cluster.pods.get((match.group(1), match.group(2)))
            if pod is None:
                self._status(404, "NotFound", f'pods "{match.group(2)}" not found')
            else:
                self._send(200, pod.to_json())
            return
        match = NODE_PATH.match(path)
        if match:
            cluster.hits["node"] += 1
            if not self._authorized():
                return
            with cluster.lock:
                labels = cluster.nodes.get(match.group(1))
            if labels is None:
                self._status(404, "NotFound", f'nodes "{match.group(1)}" not found')
            else:
                self._send(200, node_json(match.group(1), labels))
            return
        match = SA_PATH.match(path)
        if match:
            cluster.hits["serviceaccount"] += 1
            if not self._authorized():
                return
            namespace, name = match.group(1), match.group(2)
            with cluster.lock:
                annotations = cluster.service_accounts.get((namespace, name))
            if annotations is None:
                self._status(404, "NotFound", f'serviceaccounts "{name}" not found')
            else:
                self._send(200, service_account_json(namespace, name, annotations))
            return
        self._status(404, "NotFound", "the server could not find the requested resource")

    def _watch_pods(self) -> None:
        """A pod watch (``?watch=true&fieldSelector=spec.nodeName=N``), chunked JSON lines.

        Like the API server without a resourceVersion: ADDED for every existing pod, then
        each change as it happens, until the server stops.
        """
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        node = ""
        for selector in query.get("fieldSelector", []):
            key, _, value = selector.partition("=")
            if key == "spec.nodeName":
                node = value
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(kind: str, pod: PodSpec, version: int) -> None:
            if node and pod.node_name != node:
                return
            obj = pod.to_json()
            obj["metadata"]["resourceVersion"] = str(version)
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        cluster = self.cluster
        try:
            with cluster.changed:
                seen = len(cluster.events)
                current = list(cluster.pods.values())
            for pod in current:
                emit("ADDED", pod, seen)
            while True:
                with cluster.changed:
                    while len(cluster.events) == seen and not cluster.stopping:
                        cluster.changed.wait(0.5)
                    if cluster.stopping:
                        break
                    fresh = cluster.events[seen:]
                    seen = len(cluster.events)
                for version, kind, pod in fresh:
                    emit(kind, pod, version)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?", 1)[0] != "/apis/authentication.k8s.io/v1/tokenreviews":
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        self.cluster.hits["tokenreview"] += 1
        if not self._authorized():
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._status(400, "BadRequest", "invalid JSON")
            return
        self._send(201, self.cluster.review(body))


@contextmanager
def running(workdir: Path, *, tls: bool = True, api_token: str = "") -> Iterator[DevCluster]:
    """A started :class:`DevCluster`, stopped on exit."""
    cluster = DevCluster(workdir, tls=tls, api_token=api_token).start()
    try:
        yield cluster
    finally:
        cluster.stop()
