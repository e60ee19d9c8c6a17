"""Local stand-ins for the Google services the GCP backend calls, speaking their real protocols.

* :class:`FakeSecretManager`: a gRPC server for ``google.cloud.secretmanager.v1.SecretManagerService``
  ``AccessSecretVersion``, (de)serialising with the ``google-cloud-secret-manager`` package's own
  message types (the package ships no servicer, so a generic handler is registered). It checks
  the ``authorization`` bearer token against per-secret grants, resolves ``latest``, sets
  ``data_crc32c`` and can be told to fail the next calls (``fail_next``) or every call
  (``fail_all``), optionally only for names containing ``fail_only``, with a status code or a
  fault: ``"hang"`` (never answers: holds the call until the client gives up), ``"garbled"``
  (bytes that are no protobuf), ``"truncated"`` (the good answer cut in half) or
  ``"no_payload"`` (a well-formed answer without its payload).
* :class:`FakeParameterManager`: the Parameter Manager gRPC service (``RenderParameterVersion``,
  ``GetParameterVersion``) from the ``google-cloud-parametermanager`` package's messages.
* :class:`FakeGoogleAuth`: one HTTP server for STS token exchange (``POST /v1/token``), IAM
  Credentials ``generateAccessToken`` and the OAuth JWT-bearer grant (``POST /token``) used by
  service-account keys. Subject tokens are verified as real RS256 JWTs with the test cluster's
  public key; assertions with the registered service-account public keys.

Both record what they saw so tests can assert on the traffic (who, which token, how often).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import google_crc32c
import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud.secretmanager_v1.types import resources, service

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class Cluster:
    """A Kubernetes service-account issuer: signs pod-bound projected tokens with a real key."""

    issuer: str = "https://kubernetes.default.svc.cluster.local"
    key: rsa.RSAPrivateKey = field(default_factory=new_rsa)

    def pod_token(
        self,
        audience: str,
        namespace: str = "default",
        service_account: str = "app",
        pod: str = "app-0",
        pod_uid: str = "6c3f8c51-3d0e-4c7e-9d0b-1a2b3c4d5e6f",
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": [audience],
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": pod, "uid": pod_uid},
                "serviceaccount": {"name": service_account, "uid": "0b7c4f5e-sa"},
            },
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})


class Principals:
    """Access tokens minted by the fake auth server, mapped to the principal they stand for."""

    def __init__(self) -> None:
        self._by_token: dict[str, str] = {}
        self._lock = threading.Lock()

    def mint(self, principal: str, prefix: str) -> str:
        token = f"{prefix}.{secrets.token_urlsafe(24)}"
        with self._lock:
            self._by_token[token] = principal
        return token

    def add(self, token: str, principal: str) -> None:
        with self._lock:
            self._by_token[token] = principal

    def lookup(self, token: str) -> str | None:
        with self._lock:
            return self._by_token.get(token)

    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._by_token)


@dataclass
class Call:
    name: str
    principal: str | None
    server: str


class FakeSecretManager:
    """A Secret Manager gRPC server on 127.0.0.1 holding versions in memory."""

    def __init__(self, principals: Principals, label: str = "global") -> None:
        self.principals = principals
        self.label = label
        self.versions: dict[str, list[bytes]] = {}
        self.grants: dict[str, set[str]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.listers: dict[str, set[str]] = {}
        self.states: dict[tuple[str, int], str] = {}
        self.fail_next: list[grpc.StatusCode | str] = []
        self.fail_all: grpc.StatusCode | str | None = None
        self.fail_only = ""
        self.hanging = 0
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=48))
        handler = grpc.unary_unary_rpc_method_handler(
            self._answer,
            request_deserializer=service.AccessSecretVersionRequest.deserialize,
            response_serializer=_serialize,
        )
        listing = grpc.unary_unary_rpc_method_handler(
            self._list,
            request_deserializer=service.ListSecretsRequest.deserialize,
            response_serializer=service.ListSecretsResponse.serialize,
        )
        methods = {"AccessSecretVersion": handler, "ListSecrets": listing}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def add(self, secret: str, *values: bytes, grant: tuple[str, ...] = ()) -> None:
        """Add versions 1..n of ``secret`` (``projects/p/secrets/s``) readable by ``grant``."""
        with self._lock:
            self.versions.setdefault(secret, []).extend(values)
            self.grants.setdefault(secret, set()).update(grant)

    def set_state(self, secret: str, number: int, state: str) -> None:
        """Version ``number`` of ``secret`` becomes ``DISABLED``, ``DESTROYED`` or ``ENABLED``;
        like the service, access then fails with FAILED_PRECONDITION naming the state."""
        with self._lock:
            self.states[(secret, number)] = state

    def delete(self, secret: str) -> None:
        """Delete the secret with all its versions (access then answers NOT_FOUND)."""
        with self._lock:
            self.versions.pop(secret, None)
            self.grants.pop(secret, None)
            for key in [k for k in self.states if k[0] == secret]:
                del self.states[key]

    def revoke(self, secret: str, principal: str) -> None:
        """Remove ``principal``'s accessor grant on ``secret`` (access then answers PERMISSION_DENIED)."""
        with self._lock:
            self.grants.get(secret, set()).discard(principal)

    def _fault(self, name: str) -> grpc.StatusCode | str | None:
        with self._lock:
            if self.fail_only and self.fail_only not in name:
                return None
            if self.fail_next:
                return self.fail_next.pop(0)
            return self.fail_all

    def _answer(
        self, request: service.AccessSecretVersionRequest, context: grpc.ServicerContext
    ) -> service.AccessSecretVersionResponse | bytes:
        fault = self._fault(request.name)
        if isinstance(fault, grpc.StatusCode):
            with self._lock:
                self.calls.append(Call(request.name, None, self.label))
            context.abort(fault, f"injected {fault.name}")
        if fault == "hang":
            with self._lock:
                self.calls.append(Call(request.name, None, self.label))
                self.hanging += 1
            try:
                while context.is_active() and not self._released.wait(0.02):
                    pass
            finally:
                with self._lock:
                    self.hanging -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "released")
        good = self._access(request, context)
        if fault == "garbled":
            return b"\xff\xfe not a protobuf message \x00\x01"
        if fault == "truncated":
            whole = service.AccessSecretVersionResponse.serialize(good)
            return whole[: len(whole) // 2]
        if fault == "no_payload":
            return service.AccessSecretVersionResponse(name=good.name)
        return good

    def _access(
        self, request: service.AccessSecretVersionRequest, context: grpc.ServicerContext
    ) -> service.AccessSecretVersionResponse:
        metadata = dict(context.invocation_metadata())
        auth = str(metadata.get("authorization", ""))
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        principal = self.principals.lookup(token) if token else None
        with self._lock:
            self.calls.append(Call(request.name, principal, self.label))
        if principal is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.")
        secret, _, version = request.name.partition("/versions/")
        values = self.versions.get(secret)
        if values is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{secret}] not found or has no versions.")
        if principal not in self.grants.get(secret, set()):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission 'secretmanager.versions.access' denied for resource '{request.name}'",
            )
        number = len(values) if version == "latest" else int(version) if version.isdigit() else 0
        if not 1 <= number <= len(values):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
        state = self.states.get((secret, number), "ENABLED")
        if state != "ENABLED":
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Secret Version [{secret}/versions/{number}] is in {state} state.",
            )
        data = values[number - 1]
        return service.AccessSecretVersionResponse(
            name=f"{secret}/versions/{number}",
            payload=resources.SecretPayload(data=data, data_crc32c=google_crc32c.value(data)),
        )

    def set_labels(self, secret: str, **labels: str) -> None:
        """Set ``secret``'s labels (what ListSecrets filters on)."""
        with self._lock:
            self.labels[secret] = dict(labels)

    def allow_list(self, parent: str, principal: str) -> None:
        """Grant ``principal`` secretmanager.secrets.list on ``parent`` (``projects/p`` or
        ``projects/p/locations/l``)."""
        with self._lock:
            self.listers.setdefault(parent, set()).add(principal)

    def _matches(self, secret: str, terms: list[str], context: grpc.ServicerContext) -> bool:
        """The subset of List filtering keygate sends: ``name:<text>`` (the secret id contains it)
        and ``labels.<key>=<value>``, all of them ANDed; anything else is INVALID_ARGUMENT."""
        short = secret.rsplit("/", 1)[-1]
        labels = self.labels.get(secret, {})
        for term in terms:
            if term.startswith("name:"):
                if term[len("name:") :] not in short:
                    return False
            elif term.startswith("labels.") and "=" in term:
                key, _, value = term[len("labels.") :].partition("=")
                if labels.get(key) != value:
                    return False
            else:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid filter term [{term}].")
        return True

    def _list(
        self, request: service.ListSecretsRequest, context: grpc.ServicerContext
    ) -> service.ListSecretsResponse:
        """ListSecrets as the service answers it: the parent's secrets sorted by name, filtered,
        in pages of ``page_size`` (default 25) with an opaque next_page_token."""
        metadata = dict(context.invocation_metadata())
        auth = str(metadata.get("authorization", ""))
        principal = (
            self.principals.lookup(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        )
        with self._lock:
            self.calls.append(
                Call(f"list:{request.parent}?{request.filter}#{request.page_token}", principal, self.label)
            )
        if principal is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.")
        if principal not in self.listers.get(request.parent, set()):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission 'secretmanager.secrets.list' denied for resource '{request.parent}'",
            )
        terms = [t for t in request.filter.replace(" AND ", " ").split() if t]
        with self._lock:
            names = sorted(
                s
                for s in self.versions
                if s.startswith(f"{request.parent}/secrets/") and self._matches(s, terms, context)
            )
        size = request.page_size or 25
        start = int(request.page_token, 16) if request.page_token else 0
        page = names[start : start + size]
        token = format(start + size, "x") if start + size < len(names) else ""
        return service.ListSecretsResponse(
            secrets=[resources.Secret(name=n, labels=self.labels.get(n, {})) for n in page],
            next_page_token=token,
            total_size=len(names),
        )

    def __enter__(self) -> FakeSecretManager:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._server.stop(grace=None).wait()


def _serialize(message: service.AccessSecretVersionResponse | bytes) -> bytes:
    """The response on the wire; raw bytes pass as they are (the garbled and truncated faults)."""
    if isinstance(message, bytes):
        return message
    return service.AccessSecretVersionResponse.serialize(message)


@dataclass
class AuthLog:
    sts: list[dict[str, str]] = field(default_factory=list)
    iam: list[dict[str, Any]] = field(default_factory=list)
    oauth: list[str] = field(default_factory=list)


class FakeGoogleAuth:
    """STS, IAM Credentials and the OAuth token endpoint on one loopback HTTP server.

    ``audience`` is the STS audience it accepts; ``token_audiences`` the audiences a pod token may
    carry. ``impersonation[gsa]`` lists the principals allowed to mint tokens for ``gsa``.
    """

    def __init__(self, principals: Principals, cluster: Cluster, audience: str, token_audiences: set[str]):
        self.principals = principals
        self.cluster = cluster
        self.audience = audience
        self.token_audiences = token_audiences
        self.impersonation: dict[str, set[str]] = {}
        self.sa_keys: dict[str, Any] = {}
        self.log = AuthLog()
        self.fail_sts: list[int] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    form = json.loads(body or "{}")
                else:
                    form = {k: v[0] for k, v in parse_qs(body).items()}
                status, answer = fake.route(self.path, dict(self.headers), form)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.sts_url = f"{self.base}/v1/token"
        self.token_url = f"{self.base}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def route(self, path: str, headers: dict[str, str], form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/token":
            return self._sts(form)
        if path.startswith("/v1/projects/-/serviceAccounts/") and path.endswith(":generateAccessToken"):
            gsa = path.removeprefix("/v1/projects/-/serviceAccounts/").removesuffix(":generateAccessToken")
            return self._iam(gsa, headers, form)
        if path == "/token":
            return self._oauth(form)
        return 404, {"error": "not_found"}

    def _sts(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.log.sts.append(dict(form))
        if self.fail_sts:
            return self.fail_sts.pop(0), {"error": "temporarily_unavailable"}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
            return 400, {"error": "invalid_request", "error_description": "bad subject_token_type"}
        if form.get("audience") != self.audience:
            return 400, {
                "error": "invalid_target",
                "error_description": "The target service indicated by the audience is invalid",
            }
        try:
            claims = jwt.decode(
                form.get("subject_token", ""),
                self.cluster.key.public_key(),
                algorithms=["RS256"],
                audience=sorted(self.token_audiences),
                issuer=self.cluster.issuer,
            )
        except jwt.PyJWTError as exc:
            return 400, {
                "error": "invalid_grant",
                "error_description": f"The subject token is invalid ({type(exc).__name__})",
            }
        k8s = claims["kubernetes.io"]
        principal = f"ns/{k8s['namespace']}/sa/{k8s['serviceaccount']['name']}"
        token = self.principals.mint(principal, "sts")
        return 200, {
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 3600,
        }

    def _iam(self, gsa: str, headers: dict[str, str], form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        caller = self.principals.lookup(auth.removeprefix("Bearer "))
        self.log.iam.append({"gsa": gsa, "caller": caller, **form})
        if caller is None:
            return 401, {
                "error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no valid credential"}
            }
        if caller not in self.impersonation.get(gsa, set()):
            return 403, {
                "error": {
                    "code": 403,
                    "status": "PERMISSION_DENIED",
                    "message": "Permission 'iam.serviceAccounts.getAccessToken' denied",
                }
            }
        expire = (datetime.now(UTC) + timedelta(seconds=3600)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"accessToken": self.principals.mint(f"gsa/{gsa}", "gsa"), "expireTime": expire}

    def _oauth(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assertion = form.get("assertion", "")
        self.log.oauth.append(form.get("grant_type", ""))
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            key = self.sa_keys[issuer]
            # google-auth puts Google's token endpoint in ``aud`` whatever token_uri is, as Google expects.
            jwt.decode(assertion, key, algorithms=["RS256"], audience=GOOGLE_TOKEN_AUDIENCE)
        except (jwt.PyJWTError, KeyError):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        return 200, {
            "access_token": self.principals.mint(f"sa/{issuer}", "oauth"),
            "expires_in": 3600,
            "token_type": "Bearer",
        }

    def service_account_key(self, email: str) -> str:
        """A real service-account key file (JSON) whose public half this server trusts."""
        key = new_rsa()
        self.sa_keys[email] = key.public_key()
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "proj",
                "private_key_id": "k1",
                "private_key": pem(key),
                "client_email": email,
                "client_id": "1",
                "token_uri": self.token_url,
            }
        )

    def __enter__(self) -> FakeGoogleAuth:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def all_tokens(*principals: Principals) -> Iterator[str]:
    for p in principals:
        yield from p.tokens()


PARAMETER_SERVICE = "google.cloud.parametermanager.v1.ParameterManager"


@dataclass
class ParameterVersion:
    data: bytes
    disabled: bool = False


class FakeParameterManager:
    """A Parameter Manager gRPC server on 127.0.0.1: ``RenderParameterVersion`` and
    ``GetParameterVersion`` with the ``google-cloud-parametermanager`` package's own messages.

    Versions are named (Parameter Manager has no numbering); a disabled version is refused with
    FAILED_PRECONDITION, as the service does. Rendering substitutes
    ``__REF__("//secretmanager.googleapis.com/<secret version>")`` with the value held by
    ``secrets`` (a :class:`FakeSecretManager`), so tests see the rendered payload, not the raw one.
    """

    def __init__(self, principals: Principals, label: str = "global", secrets: Any = None) -> None:
        from google.cloud.parametermanager_v1.types import service as pm

        self.pm = pm
        self.principals = principals
        self.label = label
        self.secrets = secrets
        self.params: dict[str, dict[str, ParameterVersion]] = {}
        self.grants: dict[str, set[str]] = {}
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=8))
        render = grpc.unary_unary_rpc_method_handler(
            self._render,
            request_deserializer=pm.RenderParameterVersionRequest.deserialize,
            response_serializer=pm.RenderParameterVersionResponse.serialize,
        )
        get = grpc.unary_unary_rpc_method_handler(
            self._get,
            request_deserializer=pm.GetParameterVersionRequest.deserialize,
            response_serializer=pm.ParameterVersion.serialize,
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    PARAMETER_SERVICE, {"RenderParameterVersion": render, "GetParameterVersion": get}
                ),
            )
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def add(
        self,
        parameter: str,
        version: str,
        data: bytes,
        *,
        grant: tuple[str, ...] = (),
        disabled: bool = False,
    ) -> None:
        """Add ``version`` of ``parameter`` (``projects/p/locations/l/parameters/n``)."""
        with self._lock:
            self.params.setdefault(parameter, {})[version] = ParameterVersion(data, disabled)
            self.grants.setdefault(parameter, set()).update(grant)

    def add_version(
        self, version: str, data: bytes, *, grant: tuple[str, ...] = (), disabled: bool = False
    ) -> None:
        """Add one version by its full name (``projects/p/locations/l/parameters/n/versions/v``)."""
        parameter, _, name = version.partition("/versions/")
        self.add(parameter, name, data, grant=grant, disabled=disabled)

    def _lookup(self, name: str, context: grpc.ServicerContext) -> ParameterVersion:
        metadata = dict(context.invocation_metadata())
        auth = str(metadata.get("authorization", ""))
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        principal = self.principals.lookup(token) if token else None
        with self._lock:
            self.calls.append(Call(name, principal, self.label))
        if principal is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.")
        parameter, _, version = name.partition("/versions/")
        versions = self.params.get(parameter)
        if versions is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Parameter [{parameter}] not found.")
        if principal not in self.grants.get(parameter, set()):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission 'parametermanager.parameterVersions.render' denied for resource '{name}'",
            )
        found = versions.get(version)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Parameter Version [{name}] not found.")
        return found

    def _render(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = self._lookup(request.name, context)
        if found.disabled:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"Parameter Version [{request.name}] is disabled."
            )
        rendered = found.data
        if self.secrets is not None:
            for secret, values in self.secrets.versions.items():
                ref = f'__REF__("//secretmanager.googleapis.com/{secret}/versions/latest")'.encode()
                rendered = rendered.replace(ref, values[-1])
        return self.pm.RenderParameterVersionResponse(
            parameter_version=request.name,
            payload=self.pm.ParameterVersionPayload(data=found.data),
            rendered_payload=rendered,
        )

    def _get(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = self._lookup(request.name, context)
        return self.pm.ParameterVersion(
            name=request.name,
            disabled=found.disabled,
            payload=self.pm.ParameterVersionPayload(data=found.data),
        )

    def __enter__(self) -> FakeParameterManager:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait()
