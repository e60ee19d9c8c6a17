"""A local Azure Key Vault + Entra ID (AAD) token endpoint, spoken to by the real Azure SDK.

- :class:`TestCA` makes a throwaway CA and one server certificate for the production host names
  (``*.vault.azure.net``, ``login.microsoftonline.com``, sovereign clouds) plus 127.0.0.1.
- :class:`FakeAzure` is one HTTPS server. By the ``Host`` header it is either a vault (challenge
  401 without a bearer token, then the Key Vault REST paths with ``api-version``) or Entra ID
  (OpenID metadata, instance discovery, ``/{tenant}/oauth2/v2.0/token`` accepting a federated
  client assertion checked against the cluster issuer's public key, or a client secret).
- ``FakeAzure.chaos`` (a :class:`tests.fault_server.Faults`) makes it misbehave on a path prefix
  (vault ``/secrets/<name>`` or Entra ``/<tenant>/oauth2/v2.0/token``): black hole, reset,
  status storms (optionally with ``Retry-After``), garbled or truncated bodies, trickling.
- :class:`ConnectProxy` is an HTTP CONNECT proxy that tunnels every host to the fake, so the SDK
  keeps its production URLs (and its challenge-resource check) while DNS is never consulted.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import select
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.fault_server import Faults, Rule

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OPENID_PATH = "/v2.0/.well-known/openid-configuration"
SERVER_NAMES = [
    "*.vault.azure.net",
    "*.vault.usgovcloudapi.net",
    "*.vault.azure.cn",
    "*.kv.test",
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "localhost",
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_cert(
    subject: str,
    key: Any,
    issuer: x509.Certificate | None,
    issuer_key: Any,
    *,
    ca: bool,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """An X.509 certificate (self-signed when ``issuer`` is None) with SKI/AKI set."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key((issuer_key if issuer else key).public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key if issuer else key, hashes.SHA256())


class TestCA:
    """A CA written to ``ca.pem`` and a server cert/key for every fake host name."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = make_cert("keygate test CA", self.key, None, self.key, ca=True)
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        server_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        server_cert = make_cert("fake-azure", server_key, self.cert, self.key, ca=False, sans=sans)
        self.cert_path = directory / "server.pem"
        self.key_path = directory / "server.key"
        self.cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@dataclass
class Version:
    version: str
    created: int
    enabled: bool = True
    value: str = ""
    content_type: str | None = None
    kid: bool = False
    jwk: dict[str, Any] = field(default_factory=dict)
    der: bytes = b""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Federation:
    """A federated identity credential on an app registration (what `az identity federated-
    credential create` makes): tokens from ``issuer`` with ``subject`` and ``audience``."""

    tenant: str
    issuer: str
    subject: str
    audience: str


@dataclass
class Fault:
    path_prefix: str
    status: int
    remaining: int


class FakeAzure:
    """Key Vault + Entra ID. Objects are stored per (vault, type, name) as version lists."""

    def __init__(self, ca: TestCA, issuer_public_key: Any, tenant: str) -> None:
        self.ca = ca
        self.issuer_public_key = issuer_public_key
        self.tenant = tenant
        self.objects: dict[tuple[str, str, str], list[Version]] = {}
        self.federations: dict[str, Federation] = {}
        self.client_secrets: dict[str, str] = {}
        self.access_tokens: dict[str, tuple[str, str]] = {}
        self.grants: dict[str, set[tuple[str, str, str]]] = {}
        self.faults: list[Fault] = []
        self.chaos = Faults()
        self.requests: list[dict[str, Any]] = []
        self.assertions: list[str] = []
        self.token_requests = 0
        self._clock = 1_700_000_000
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.socket = ca.server_context().wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    # ----- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeAzure:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.chaos.release()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    # ----- state set-up -----------------------------------------------------------------------

    def _next_version(self) -> tuple[str, int]:
        with self._lock:
            self._clock += 10
            return secrets.token_hex(16), self._clock

    def add(self, vault: str, kind: str, name: str, **fields: Any) -> str:
        version, created = self._next_version()
        self.objects.setdefault((vault, kind, name), []).append(Version(version, created, **fields))
        return version

    def add_secret(self, vault: str, name: str, value: str, **fields: Any) -> str:
        return self.add(vault, "secrets", name, value=value, **fields)

    def add_key(self, vault: str, name: str, public_key: Any) -> str:
        if isinstance(public_key, rsa.RSAPublicKey):
            numbers = public_key.public_numbers()
            jwk = {
                "kty": "RSA",
                "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": b64url(numbers.e.to_bytes(3, "big")),
            }
        else:
            ec_numbers = public_key.public_numbers()
            size = (public_key.curve.key_size + 7) // 8
            crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[public_key.curve.name]
            jwk = {
                "kty": "EC",
                "crv": crv,
                "x": b64url(ec_numbers.x.to_bytes(size, "big")),
                "y": b64url(ec_numbers.y.to_bytes(size, "big")),
            }
        return self.add(vault, "keys", name, jwk=jwk)

    def add_certificate(self, vault: str, name: str, cert: x509.Certificate) -> str:
        return self.add(vault, "certificates", name, der=cert.public_bytes(serialization.Encoding.DER))

    def set_enabled(self, vault: str, kind: str, name: str, enabled: bool, version: str = "") -> None:
        """Enable or disable one version (default: the current one), as ``az keyvault secret
        set-attributes --enabled`` does; a disabled current version answers 403 SecretDisabled."""
        versions = self.objects[(vault, kind, name)]
        target = (
            max(versions, key=lambda v: v.created)
            if not version
            else next(v for v in versions if v.version == version)
        )
        target.enabled = enabled

    def delete(self, vault: str, kind: str, name: str) -> None:
        """Delete the object with all its versions (a GET then answers 404)."""
        self.objects.pop((vault, kind, name), None)

    def federate(self, client_id: str, issuer: str, subject: str, audience: str) -> None:
        self.federations[client_id] = Federation(self.tenant, issuer, subject, audience)

    def grant(self, client_id: str, vault: str, kind: str = "*", name: str = "*") -> None:
        self.grants.setdefault(client_id, set()).add((vault, kind, name))

    def fail(self, path_prefix: str, status: int, times: int) -> None:
        self.faults.append(Fault(path_prefix, status, times))

    def vault_requests(self, vault: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["host"].split(".")[0] == vault and r["kind"] == "vault"]

    # ----- request handling (called from handler threads) -------------------------------------

    def take_fault(self, path: str) -> int | None:
        with self._lock:
            for fault in self.faults:
                if fault.remaining > 0 and path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    return fault.status
        return None

    def allowed(self, client_id: str, vault: str, kind: str, name: str) -> bool:
        for g_vault, g_kind, g_name in self.grants.get(client_id, set()):
            if g_vault == vault and g_kind in ("*", kind) and g_name in ("*", name):
                return True
        return False

    def issue_token(self, client_id: str, scope: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.access_tokens[token] = (client_id, scope)
            self.token_requests += 1
        return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    def check_assertion(self, client_id: str, assertion: str) -> str | None:
        """None if the federated assertion is acceptable, else an AADSTS-style error."""
        fed = self.federations.get(client_id)
        if fed is None:
            return "AADSTS700016: Application not found in the directory."
        try:
            claims = jwt.decode(
                assertion,
                self.issuer_public_key,
                algorithms=["RS256", "ES256"],
                audience=fed.audience,
                issuer=fed.issuer,
            )
        except jwt.PyJWTError as exc:
            return f"AADSTS700024: Client assertion is not valid ({type(exc).__name__})."
        if claims.get("sub") != fed.subject:
            return "AADSTS70021: No matching federated identity record found for presented assertion."
        return None


def _fault_answer(status: int, data: bytes, headers: dict[str, str]) -> bytes:
    head = f"HTTP/1.1 {status} Fault\r\nContent-Type: application/json; charset=utf-8\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    return head.encode() + data


def _vault_fault(status: int) -> bytes:
    body = {"error": {"code": "Throttled" if status == 429 else "ServiceUnavailable", "message": "fault"}}
    return _fault_answer(status, json.dumps(body).encode(), {})


def _aad_fault(status: int) -> bytes:
    body = {"error": "temporarily_unavailable", "error_description": "AADSTS50196: fault injected"}
    return _fault_answer(status, json.dumps(body).encode(), {})


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAzure
    protocol_version = "HTTP/1.1"
    rule: Rule | None = None
    is_vault = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        if self.rule is not None:
            rule, self.rule = self.rule, None
            self.close_connection = True
            error = _vault_fault if self.is_vault else _aad_fault
            self.fake.chaos.misbehave(
                self.connection, rule, _fault_answer(status, data, headers or {}), error
            )
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _host(self) -> str:
        return (self.headers.get("Host") or "").split(":")[0].lower()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        host = self._host()
        is_vault = any(
            host.endswith(s)
            for s in (".vault.azure.net", ".vault.usgovcloudapi.net", ".vault.azure.cn", ".kv.test")
        )
        record = {
            "kind": "vault" if is_vault else "aad",
            "host": host,
            "method": method,
            "path": url.path,
            "query": query,
            "authorized": "Authorization" in self.headers,
        }
        self.fake.requests.append(record)
        self.is_vault = is_vault
        self.rule = self.fake.chaos.match(url.path, body)
        if is_vault:
            self._vault(method, host, url.path, query)
        else:
            self._aad(method, url.path, body)

    # ----- Entra ID -----------------------------------------------------------------------------

    def _aad(self, method: str, path: str, body: bytes) -> None:
        base = f"https://{self.headers.get('Host')}"
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts[-2:] == ["discovery", "instance"]:
            self._send(
                200,
                {
                    "tenant_discovery_endpoint": f"{base}/{self.fake.tenant}{OPENID_PATH}",
                    "api-version": "1.1",
                    "metadata": [],
                },
            )
            return
        if method == "GET" and path.endswith(OPENID_PATH):
            tenant = parts[0]
            self._send(
                200,
                {
                    "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                    "issuer": f"{base}/{tenant}/v2.0",
                    "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                    "response_types_supported": ["code", "id_token", "token"],
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
            )
            return
        if method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            self._token(parts[0], body)
            return
        self._send(404, {"error": "not_found", "error_description": f"no route {path}"})

    def _token(self, tenant: str, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if tenant != self.fake.tenant:
            self._send(
                400, {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."}
            )
            return
        if form.get("grant_type") != "client_credentials" or not scope.endswith("/.default"):
            self._send(400, {"error": "invalid_request", "error_description": "AADSTS900144: bad request"})
            return
        if "client_assertion" in form:
            if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
                self._send(400, {"error": "invalid_request", "error_description": "AADSTS50027: bad type"})
                return
            self.fake.assertions.append(form["client_assertion"])
            problem = self.fake.check_assertion(client_id, form["client_assertion"])
        elif "client_secret" in form:
            expected = self.fake.client_secrets.get(client_id)
            problem = (
                None
                if expected and secrets.compare_digest(expected, form["client_secret"])
                else "AADSTS7000215: Invalid client secret provided."
            )
        else:
            problem = "AADSTS7000218: The request body must contain client_assertion or client_secret."
        if problem:
            self._send(401, {"error": "invalid_client", "error_description": problem, "error_codes": [0]})
            return
        self._send(200, self.fake.issue_token(client_id, scope))

    # ----- Key Vault ----------------------------------------------------------------------------

    def _challenge(self, host: str) -> None:
        resource = "https://" + host.split(".", 1)[1]
        authority = {
            "vault.usgovcloudapi.net": "https://login.microsoftonline.us",
            "vault.azure.cn": "https://login.chinacloudapi.cn",
        }.get(host.split(".", 1)[1], "https://login.microsoftonline.com")
        header = f'Bearer authorization="{authority}/{self.fake.tenant}", resource="{resource}"'
        self._send(
            401,
            {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}},
            {"WWW-Authenticate": header},
        )

    def _vault(self, method: str, host: str, path: str, query: dict[str, str]) -> None:
        if not query.get("api-version"):
            self._send(400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version"}})
            return
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        principal = self.fake.access_tokens.get(token)
        resource = "https://" + host.split(".", 1)[1]
        if principal is None or principal[1] != resource + "/.default":
            self._challenge(host)
            return
        vault = host.split(".")[0]
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["secrets"]:
            self._list_secrets(principal[0], vault, host, query)
            return
        if method != "GET" or len(parts) < 2 or parts[0] not in ("secrets", "keys", "certificates"):
            self._send(400, {"error": {"code": "BadParameter", "message": "unsupported"}})
            return
        kind, name = parts[0], parts[1]
        rest = parts[2:]
        if not self.fake.allowed(principal[0], vault, kind, name):
            self._send(
                403,
                {"error": {"code": "Forbidden", "message": f"The user does not have {kind} get permission"}},
            )
            return
        status = self.fake.take_fault(path)
        if status is not None:
            headers = {"Retry-After": "0"} if status == 429 else {}
            self._send(status, {"error": {"code": "Throttled", "message": "Too many requests"}}, headers)
            return
        versions = self.fake.objects.get((vault, kind, name))
        if not versions:
            code = {"secrets": "SecretNotFound", "keys": "KeyNotFound", "certificates": "CertificateNotFound"}
            self._send(404, {"error": {"code": code[kind], "message": f"{kind} {name} was not found"}})
            return
        base = f"https://{host}"
        if rest == ["versions"]:
            items = [self._item(base, kind, name, v, listing=True) for v in versions]
            self._send(200, {"value": items, "nextLink": None})
            return
        if rest:
            match = [v for v in versions if v.version == rest[0]]
        else:
            match = [max(versions, key=lambda v: v.created)]
        if not match or match[0] is None:
            self._send(404, {"error": {"code": "SecretNotFound", "message": "version not found"}})
            return
        if not match[0].enabled:
            self._send(
                403,
                {
                    "error": {
                        "code": "Forbidden",
                        "message": "Operation get is not allowed on a disabled secret.",
                        "innererror": {"code": "SecretDisabled"},
                    }
                },
            )
            return
        self._send(200, self._item(base, kind, name, match[0], listing=False))

    def _list_secrets(self, principal: str, vault: str, host: str, query: dict[str, str]) -> None:
        """GET /secrets as Key Vault answers it: SecretItems (id without version, the current
        version's attributes and tags, contentType, managed) in pages of ``maxresults`` (at most
        25), followed by an absolute nextLink carrying a $skiptoken; needs the 'list' permission
        (a grant on every secret of the vault)."""
        if not self.fake.allowed(principal, vault, "secrets", "*"):
            self._send(
                403,
                {"error": {"code": "Forbidden", "message": "The user does not have secrets list permission"}},
            )
            return
        names = sorted(
            n for (v, kind, n), versions in self.fake.objects.items() if v == vault and kind == "secrets"
        )
        size = min(int(query.get("maxresults") or 25), 25)
        start = int(query.get("$skiptoken") or 0)
        base = f"https://{host}"
        items = []
        for name in names[start : start + size]:
            current = max(self.fake.objects[(vault, "secrets", name)], key=lambda v: v.created)
            item = self._item(base, "secrets", name, current, listing=True)
            item["id"] = f"{base}/secrets/{name}"
            if current.tags:
                item["tags"] = dict(current.tags)
            items.append(item)
        more = start + size < len(names)
        api = query.get("api-version", "")
        link = (
            f"{base}/secrets?api-version={api}&$skiptoken={start + size}&maxresults={size}" if more else None
        )
        self._send(200, {"value": items, "nextLink": link})

    @staticmethod
    def _item(base: str, kind: str, name: str, v: Version, *, listing: bool) -> dict[str, Any]:
        attributes = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
        }
        if kind == "secrets":
            item: dict[str, Any] = {"id": f"{base}/secrets/{name}/{v.version}", "attributes": attributes}
            if v.content_type:
                item["contentType"] = v.content_type
            if v.kid:
                item["kid"] = f"{base}/keys/{name}/{v.version}"
                item["managed"] = True
            if not listing:
                item["value"] = v.value
            return item
        if kind == "keys":
            kid = f"{base}/keys/{name}/{v.version}"
            if listing:
                return {"kid": kid, "attributes": attributes}
            return {"key": {"kid": kid, "key_ops": ["verify", "encrypt"], **v.jwk}, "attributes": attributes}
        item = {
            "id": f"{base}/certificates/{name}/{v.version}",
            "x5t": b64url(x509.load_der_x509_certificate(v.der).fingerprint(hashes.SHA1())),
            "attributes": attributes,
        }
        if not listing:
            item["cer"] = base64.b64encode(v.der).decode()
            item["kid"] = f"{base}/keys/{name}/{v.version}"
            item["sid"] = f"{base}/secrets/{name}/{v.version}"
        return item


class _ProxyHandler(socketserver.BaseRequestHandler):
    proxy: ConnectProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(4096)
            if not chunk:
                return
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode()
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.proxy.hosts.append(target)
        upstream = socket.create_connection(("127.0.0.1", self.proxy.upstream_port))
        try:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            sockets = [client, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    (upstream if sock is client else client).sendall(chunk)
        except OSError:
            return
        finally:
            upstream.close()


class ConnectProxy:
    """Tunnels ``CONNECT host:port`` to the fake, recording which hosts the SDK asked for."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hosts: list[str] = []
        handler = type("ProxyHandler", (_ProxyHandler,), {"proxy": self})
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> ConnectProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def pod_token(
    key: Any,
    issuer: str,
    audience: str,
    *,
    namespace: str = "default",
    service_account: str = "app",
    pod_name: str = "app-0",
    pod_uid: str = "6c3f8c51-3d0e-4c7e-9d0b-1a2b3c4d5e6f",
    lifetime: int = 3600,
) -> str:
    """A projected service-account token as the kubelet would mint it for the pod."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": [audience],
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": secrets.token_hex(8),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": pod_name, "uid": pod_uid},
            "serviceaccount": {"name": service_account, "uid": "0f0f0f0f-1111-2222-3333-444455556666"},
        },
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "cluster-key-1"})


class FakeIMDS:
    """The Azure Instance Metadata Service token endpoint of one VM, on plain HTTP as IMDS is.

    ``GET /metadata/identity/oauth2/token?api-version=...&resource=...[&client_id=...]`` with the
    ``Metadata: true`` header answers as IMDS does (string-valued ``expires_in``/``expires_on``);
    the token it issues is one :class:`FakeAzure`'s vaults accept for that identity's client id.
    ``system`` is the VM's system-assigned identity; ``user_assigned`` the others attached to it.
    """

    def __init__(self, azure: FakeAzure, system: str, user_assigned: tuple[str, ...] = ()) -> None:
        self.azure = azure
        self.system = system
        self.user_assigned = set(user_assigned)
        self.requests: list[dict[str, Any]] = []
        handler = type("IMDSHandler", (_IMDSHandler,), {"imds": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FakeIMDS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _IMDSHandler(BaseHTTPRequestHandler):
    imds: FakeIMDS
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        metadata = self.headers.get("Metadata", "")
        self.imds.requests.append({"path": url.path, "query": query, "metadata": metadata})
        if url.path != "/metadata/identity/oauth2/token":
            self._send(404, {"error": "not_found", "error_description": "unknown path"})
            return
        if metadata.lower() != "true":
            self._send(
                400,
                {"error": "invalid_request", "error_description": "Required metadata header not specified"},
            )
            return
        resource = query.get("resource", "")
        if not query.get("api-version") or not resource:
            self._send(400, {"error": "invalid_request", "error_description": "Required parameter missing"})
            return
        client_id = query.get("client_id", self.imds.system)
        if client_id != self.imds.system and client_id not in self.imds.user_assigned:
            self._send(400, {"error": "invalid_request", "error_description": "Identity not found"})
            return
        issued = self.imds.azure.issue_token(client_id, resource.rstrip("/") + "/.default")
        now = int(time.time())
        self._send(
            200,
            {
                "access_token": issued["access_token"],
                "client_id": client_id,
                "expires_in": "86399",
                "expires_on": str(now + 86399),
                "ext_expires_in": "86399",
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
            },
        )
