"""A small OCI registry for the tests and ``keygate demo``: the distribution API v2 read side
over real HTTPS, so image signatures are read the way the daemon reads them from a real registry.

``GET /v2/`` (ping), ``GET``/``HEAD /v2/<name>/manifests/<tag|digest>`` with the stored
Content-Type and ``Docker-Content-Digest``, ``GET /v2/<name>/blobs/<digest>``, 404s with the
distribution error JSON (``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``, ``NAME_UNKNOWN``), and an
optional auth challenge: ``basic`` (``WWW-Authenticate: Basic``) or ``bearer`` (a token service
at ``/token`` that checks basic credentials and scope and hands out short-lived tokens, as
Docker Hub, GHCR and distribution's token server do). Content is pushed through the Python
API (``push_blob``/``push_manifest``), the way ``crane``/``cosign`` would over the write API.

Faults for the negative cases: ``fail_status`` (answer every request with it), ``delay``
(seconds before answering), ``oversize`` (pad manifests past keygate's cap), ``blob_override``
(serve other bytes for a digest), ``blob_redirect`` (answer blob GETs with a 307 to
``/storage/<digest>`` over ``https`` or ``http``, as registries send clients to blob storage).
``hits`` records (method, path) of each request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from keygate_dev.devcluster import make_tls

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
ROUTE = re.compile(rf"\A/v2/(?P<name>{NAME})/(?P<kind>manifests|blobs|referrers)/(?P<ref>[A-Za-z0-9_.:-]+)\Z")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Repo:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class OCIRegistry:
    def __init__(self, workdir: Path, *, auth: str = "", user: str = "puller", password: str = "") -> None:
        self.workdir = workdir
        self.auth = auth  # "" | "basic" | "bearer"
        self.user = user
        self.password = password or secrets.token_hex(8)
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, str] = {}  # token -> scope
        self.lock = threading.Lock()
        self.hits: list[tuple[str, str]] = []
        self.fail_status = 0
        self.delay = 0.0
        self.oversize = 0
        self.blob_override: dict[str, bytes] = {}
        self.referrers_api = True
        self.blob_redirect = ""  # "https" (to /storage/... on this server, as to blob storage) or "http"
        self.ca_file = workdir / "registry-ca.crt"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> OCIRegistry:
        handler = type("Handler", (_Handler,), {"registry": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        files = make_tls()
        self.ca_file.write_bytes(files.ca_pem)
        cert, key = self.workdir / "registry-tls.crt", self.workdir / "registry-tls.key"
        cert.write_bytes(files.cert_pem + files.ca_pem)
        key.write_bytes(files.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def docker_config(self, path: Path, *, password: str | None = None) -> Path:
        auth = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def repo(self, name: str) -> Repo:
        with self.lock:
            return self.repos.setdefault(name, Repo())

    def push_blob(self, name: str, data: bytes) -> str:
        digest = digest_of(data)
        self.repo(name).blobs[digest] = data
        return digest

    def push_manifest(self, name: str, body: bytes, media_type: str = OCI_MANIFEST, tag: str = "") -> str:
        digest = digest_of(body)
        repo = self.repo(name)
        repo.manifests[digest] = (media_type, body)
        if tag:
            repo.tags[tag] = digest
        return digest

    def delete_tag(self, name: str, tag: str) -> None:
        self.repo(name).tags.pop(tag, None)

    def push_image(self, name: str, tag: str = "latest", content: bytes = b"") -> str:
        """A real (tiny) image: config blob, one layer blob, the manifest; returns its digest."""
        layer = content or secrets.token_bytes(64)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.push_blob(name, config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": self.push_blob(name, layer), "size": len(layer)}],
        }
        return self.push_manifest(name, json.dumps(manifest).encode(), tag=tag)

    def referrers_index(self, name: str, digest: str) -> bytes:
        """The referrers API's answer: every manifest in ``name`` whose ``subject`` is ``digest``."""
        entries = []
        for manifest_digest, (media_type, body) in self.repo(name).manifests.items():
            try:
                doc = json.loads(body)
            except ValueError:
                continue
            if isinstance(doc, dict) and (doc.get("subject") or {}).get("digest") == digest:
                entry = {"mediaType": media_type, "digest": manifest_digest, "size": len(body)}
                if doc.get("artifactType"):
                    entry["artifactType"] = doc["artifactType"]
                if doc.get("annotations"):
                    entry["annotations"] = doc["annotations"]
                entries.append(entry)
        return json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()

    def push_referrer(
        self, name: str, subject: str, artifact_type: str, blob: bytes, *, tag_index: bool = False
    ) -> str:
        """An OCI 1.1 artifact referring to ``subject`` (as cosign attaches a bundle); with
        ``tag_index`` also the referrers tag ``sha256-<hex>`` a registry without the API needs."""
        empty = b"{}"
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": self.push_blob(name, empty),
                "size": 2,
            },
            "layers": [{"mediaType": artifact_type, "digest": self.push_blob(name, blob), "size": len(blob)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 0},
            "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
        }
        digest = self.push_manifest(name, json.dumps(manifest).encode())
        if tag_index:
            self.push_manifest(
                name, self.referrers_index(name, subject), INDEX, tag=subject.replace(":", "-")
            )
        return digest

    def _authorized(self, header: str, name: str) -> bool:
        if not self.auth:
            return True
        if self.auth == "basic":
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return header == f"Basic {expected}"
        if header.startswith("Bearer "):
            scope = self.tokens.get(header[7:])
            return scope == f"repository:{name}:pull"
        return False

    def _challenge(self, name: str) -> str:
        if self.auth == "basic":
            return 'Basic realm="keygate-test-registry"'
        return (
            f'Bearer realm="https://{self.host}/token",service="{self.host}",scope="repository:{name}:pull"'
        )


class _Handler(BaseHTTPRequestHandler):
    registry: OCIRegistry
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes; no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, code: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False
    ) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, code: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"errors": [{"code": error, "message": message, "detail": None}]}).encode()
        self._send(code, body, {"Content-Type": "application/json", **(headers or {})})

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        reg = self.registry
        url = urlsplit(self.path)
        reg.hits.append((self.command, url.path))
        if reg.delay:
            time.sleep(reg.delay)
        if reg.fail_status:
            self._error(reg.fail_status, "UNAVAILABLE", "injected failure")
            return
        if url.path.startswith("/storage/"):
            data = None
            for stored in reg.repos.values():
                data = data or stored.blobs.get(url.path.rsplit("/", 1)[1])
            if data is None:
                self._error(404, "BLOB_UNKNOWN", "blob unknown to storage")
            else:
                self._send(200, data, {"Content-Type": "application/octet-stream"}, head)
            return
        if url.path == "/token":
            self._token(parse_qs(url.query))
            return
        if url.path == "/v2/":
            if reg.auth and not reg._authorized(self.headers.get("Authorization", ""), ""):
                self._error(
                    401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": reg._challenge("")}
                )
                return
            self._send(200, b"{}", {"Content-Type": "application/json"}, head)
            return
        match = ROUTE.fullmatch(url.path)
        if match is None:
            self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
            return
        name, kind, ref = match["name"], match["kind"], match["ref"]
        if not reg._authorized(self.headers.get("Authorization", ""), name):
            self._error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": reg._challenge(name)}
            )
            return
        repo = reg.repos.get(name)
        if repo is None:
            self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
            return
        if kind == "referrers":
            if not reg.referrers_api:
                self._error(404, "NAME_UNKNOWN", "referrers API not supported")
                return
            self._send(200, reg.referrers_index(name, ref), {"Content-Type": INDEX}, head)
            return
        if kind == "blobs" and reg.blob_redirect:
            scheme = reg.blob_redirect
            self._send(307, b"", {"Location": f"{scheme}://{reg.host}/storage/{ref}"}, head)
            return
        if kind == "blobs":
            data = reg.blob_override.get(ref, repo.blobs.get(ref))
            if data is None:
                self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
                return
            self._send(
                200, data, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": ref}, head
            )
            return
        digest = ref if ref.startswith("sha256:") else repo.tags.get(ref, "")
        found = repo.manifests.get(digest)
        if found is None:
            self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return
        media_type, body = found
        if reg.oversize:
            body = body[:-1] + b"," + b'"pad":"' + b"x" * reg.oversize + b'"}'
        self._send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest}, head)

    def _token(self, query: dict[str, list[str]]) -> None:
        reg = self.registry
        expected = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
        if self.headers.get("Authorization", "") != f"Basic {expected}":
            self._error(401, "UNAUTHORIZED", "bad credentials")
            return
        scope = (query.get("scope") or [""])[0]
        token = secrets.token_urlsafe(24)
        reg.tokens[token] = scope
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self._send(200, body, {"Content-Type": "application/json"})


@contextmanager
def running_registry(workdir: Path, **kwargs: Any) -> Iterator[OCIRegistry]:
    registry = OCIRegistry(workdir, **kwargs).start()
    try:
        yield registry
    finally:
        registry.stop()
