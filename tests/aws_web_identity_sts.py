"""STS ``AssumeRoleWithWebIdentity`` for the tests, with the checks AWS makes, in front of moto.

moto with authentication on cannot take the unsigned web-identity call (it looks for a signature),
and it would not check the token anyway. This endpoint speaks STS's query protocol (form POST,
XML answers and ``ErrorResponse`` documents) and plays AWS's part: the token's signature against
the test issuer's real key, its issuer and audience (``sts.amazonaws.com``), then the role's trust
policy as a map from role ARN to the service-account subjects it trusts. Only then does it call
``sts:AssumeRole`` on moto with an IAM user allowed everything, so the credentials it returns are
ones moto accepts for exactly that role's permissions.
"""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

import boto3
import jwt

NS = "https://sts.amazonaws.com/doc/2011-06-15/"
AUDIENCE = "sts.amazonaws.com"


@dataclass
class STSState:
    issuer: str
    public_key: Any
    moto_url: str
    access_key: tuple[str, str]
    trust: Mapping[str, frozenset[str]]  # role ARN -> subjects (system:serviceaccount:ns:name)
    assumed: list[str] = field(default_factory=list)  # role ARNs, in order
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: STSState


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _xml(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._xml(
            status,
            f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
            "</ErrorResponse>",
        )

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            self._error(400, "InvalidAction", f"not served here: {form.get('Action')}")
            return
        role, session = form.get("RoleArn", ""), form.get("RoleSessionName", "")
        try:
            claims = jwt.decode(
                form.get("WebIdentityToken", ""),
                state.public_key,
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=state.issuer,
            )
        except jwt.PyJWTError as exc:
            self._error(400, "InvalidIdentityToken", f"the token is not valid ({type(exc).__name__})")
            return
        if claims.get("sub") not in state.trust.get(role, frozenset()):
            self._error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
            return
        sts = boto3.client(
            "sts",
            endpoint_url=state.moto_url,
            region_name="us-east-1",
            aws_access_key_id=state.access_key[0],
            aws_secret_access_key=state.access_key[1],
        )
        creds = sts.assume_role(RoleArn=role, RoleSessionName=session)["Credentials"]
        with state.lock:
            state.assumed.append(role)
        expiration = creds["Expiration"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._xml(
            200,
            f'<AssumeRoleWithWebIdentityResponse xmlns="{NS}"><AssumeRoleWithWebIdentityResult>'
            f"<SubjectFromWebIdentityToken>{escape(str(claims['sub']))}</SubjectFromWebIdentityToken>"
            f"<Audience>{AUDIENCE}</Audience><AssumedRoleUser>"
            f"<Arn>{escape(role)}/{escape(session)}</Arn><AssumedRoleId>AROA:{escape(session)}</AssumedRoleId>"
            f"</AssumedRoleUser><Credentials><SessionToken>{creds['SessionToken']}</SessionToken>"
            f"<SecretAccessKey>{creds['SecretAccessKey']}</SecretAccessKey>"
            f"<Expiration>{expiration}</Expiration><AccessKeyId>{creds['AccessKeyId']}</AccessKeyId>"
            f"</Credentials><Provider>{escape(state.issuer)}</Provider></AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>",
        )


@contextmanager
def running_sts(state: STSState) -> Iterator[str]:
    """Serve ``state`` on a free loopback port; yields the endpoint URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
