"""A stand-in for the node's EKS Pod Identity Agent, speaking its wire format, for the tests.

The real agent (aws/eks-pod-identity-agent) serves ``GET /v1/credentials``: the pod's projected
token arrives raw in the ``Authorization`` header; the agent refuses a request addressed to a host
other than its own (403, "Called agent through invalid address..."), an empty, unparseable or
expired token (400, plain text), then asks EKS Auth (AssumeRoleForPodIdentity), which verifies the
token and maps its service account to the Pod Identity association's role; EKS Auth errors come
back as ``[request-id]: (SomeException): message, fault: client`` with EKS Auth's status. On success
it answers JSON ``{AccessKeyId, SecretAccessKey, Token, AccountId, Expiration}`` (RFC 3339).

Here "EKS Auth" is played by real checks: the token's signature against the test issuer's real
key, audience ``pods.eks.amazonaws.com`` and issuer, then ``sts:AssumeRole`` on a moto server
(authentication on) with the agent's own IAM user, so the credentials it hands out are ones moto
accepts for exactly the association's role.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import jwt

AUDIENCE = "pods.eks.amazonaws.com"


@dataclass
class AgentState:
    """What the agent knows and what it saw."""

    issuer: str
    public_key: Any
    sts_url: str
    access_key: tuple[str, str]
    associations: Mapping[tuple[str, str], str]
    allowed_hosts: tuple[str, ...] = ()
    cluster: str = "test-cluster"
    requests: int = 0
    authorizations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: AgentState


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _text(self, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _eks_auth_error(self, status: int, code: str, message: str) -> None:
        self._text(status, f"[{uuid.uuid4()}]: ({code}): {message}, fault: client")

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests += 1
            state.authorizations.append(self.headers.get("Authorization", ""))
        if self.path != "/v1/credentials":
            self._text(404, "404 page not found")
            return
        host = self.headers.get("Host", "")
        bare = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        if state.allowed_hosts and bare not in state.allowed_hosts:
            self._text(
                403,
                f"Access Denied. Called agent through invalid address, please use either "
                f"[{' '.join(state.allowed_hosts)}] address not {bare}",
            )
            return
        token = self.headers.get("Authorization", "")
        if not token:
            self._text(400, "Service account token cannot be empty")
            return
        try:
            unverified = jwt.decode(
                token, options={"verify_signature": False, "verify_aud": False, "verify_exp": True}
            )
        except jwt.ExpiredSignatureError:
            self._text(400, "Service account token failed basic claim validations: token is expired")
            return
        except jwt.PyJWTError:
            self._text(400, "Service account token cannot be parsed: token is malformed")
            return
        try:  # EKS Auth's own verification of the token
            claims = jwt.decode(
                token, state.public_key, algorithms=["RS256"], audience=AUDIENCE, issuer=state.issuer
            )
        except jwt.PyJWTError as exc:
            self._eks_auth_error(
                400, "InvalidTokenException", f"The token is not valid: {type(exc).__name__}"
            )
            return
        sub = str(claims.get("sub", unverified.get("sub", "")))
        parts = sub.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            self._eks_auth_error(400, "InvalidTokenException", "The token subject is not a service account")
            return
        role = state.associations.get((parts[2], parts[3]))
        if role is None:
            self._eks_auth_error(
                404, "ResourceNotFoundException", "No Pod Identity Association found for the service account"
            )
            return
        pod = claims.get("kubernetes.io", {}).get("pod", {}).get("name", "pod")
        sts = boto3.client(
            "sts",
            endpoint_url=state.sts_url,
            region_name="us-east-1",
            aws_access_key_id=state.access_key[0],
            aws_secret_access_key=state.access_key[1],
        )
        creds = sts.assume_role(RoleArn=role, RoleSessionName=f"eks-{state.cluster}-{pod}"[:64])[
            "Credentials"
        ]
        expiration = creds["Expiration"].astimezone(UTC)
        answer = {
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["SessionToken"],
            "AccountId": role.split(":")[4],
            # Go's time.RFC3339Nano, as the agent marshals it
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%S.") + f"{expiration.microsecond:06d}000Z",
        }
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class RunningAgent:
    state: AgentState
    url: str


@contextmanager
def running_agent(state: AgentState, host: str = "127.0.0.1") -> Iterator[RunningAgent]:
    """Serve the fake agent on ``host`` (``::1`` for IPv6) at a free port until the block ends."""
    server_type = _V6Server if ":" in host else _Server
    server = server_type((host, 0), _Handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield RunningAgent(state, f"http://{shown}:{port}/v1/credentials")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
