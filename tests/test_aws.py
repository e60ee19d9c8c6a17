"""The AWS backend end to end: a real moto server (STS, Secrets Manager, SSM) on a free port,
the real boto3, and real Mounts over the daemon's Unix socket."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import grpc
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keygate_dev.driver_client import Pod, mount_request
from provider.domain import PodIdentity
from provider.errors import Code, InvalidSPC, PermissionDenied, SecretNotFound, Unauthenticated
from providers.aws.auth import session_name
from providers.aws.backend import AWSBackend
from providers.aws.client import translate_error
from providers.aws.params import translate_path
from providers.common.runtime import Retryable

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/app"
REGION = "us-east-1"
FAILOVER = "us-west-2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server (all services, STS included) on a free loopback port for this module."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def moto(moto_url: str) -> str:
    """The moto server, emptied before each test."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    return moto_url


def admin(url: str, service: str, region: str = REGION):
    """A boto3 client that seeds moto (the cluster admin's view, not keygate's)."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def sa_token() -> str:
    """A real RS256-signed, projected-service-account-shaped JWT for audience sts.amazonaws.com."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "test"}
    claims = {
        "iss": "https://oidc.example.test",
        "aud": ["sts.amazonaws.com"],
        "sub": "system:serviceaccount:default:app",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": "default",
            "serviceaccount": {"name": "app", "uid": "sa-uid"},
            "pod": {"name": "app-0", "uid": Pod().uid},
        },
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture
def pod(sa_token: str) -> Pod:
    return Pod(tokens={"sts.amazonaws.com": sa_token})


def aws_daemon(start_daemon, url: str, **extra):
    settings = {"endpoint_url": url, **extra}
    return start_daemon(backends={"aws": settings})


def spc(objects: list[dict], **params: str) -> dict[str, str]:
    base = {"region": REGION, "roleArn": ROLE, "objects": json.dumps(objects)}
    base.update(params)
    return base


def files_of(resp) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def mount_error(d, params: dict[str, str], pod: Pod, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("aws-spc", params, pod, **kw))
    return info.value


# --- happy paths ------------------------------------------------------------------------------


def test_secrets_manager_and_ssm_by_name(start_daemon, moto, pod):
    sm = admin(moto, "secretsmanager")
    secret = sm.create_secret(Name="db/password", SecretString="s3cr3t-db")
    ssm = admin(moto, "ssm")
    ssm.put_parameter(Name="/app/config", Value="plain-config", Type="String")
    ssm.put_parameter(Name="/app/token", Value="tok-secure-value", Type="SecureString")
    ssm.put_parameter(Name="hosts", Value="a,b,c", Type="StringList")
    d = aws_daemon(start_daemon, moto)
    objects = [
        {"objectName": "db/password", "objectType": "secretsmanager"},
        {"objectName": "/app/config", "objectType": "ssmparameter"},
        {"objectName": "/app/token", "objectType": "ssmparameter", "objectAlias": "token"},
        {"objectName": "hosts", "objectType": "ssmparameter"},
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    assert files_of(resp) == {
        "db_password": b"s3cr3t-db",
        "_app_config": b"plain-config",
        "token": b"tok-secure-value",
        "hosts": b"a,b,c",
    }
    ids = [v.id for v in resp.object_version]
    assert ids == [
        secret["ARN"],
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/config",
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/token",
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/hosts",
    ]
    assert all(v.version and v.version != secret["VersionId"] for v in resp.object_version)
    # Rotation: a new value changes the object's version, the others stay put.
    sm.put_secret_value(SecretId="db/password", SecretString="rotated")
    again = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    assert files_of(again)["db_password"] == b"rotated"
    assert again.object_version[0].version != resp.object_version[0].version
    assert [v.version for v in again.object_version[1:]] == [v.version for v in resp.object_version[1:]]


def test_secret_by_arn_infers_type_and_names_the_file(start_daemon, moto, pod):
    sm = admin(moto, "secretsmanager")
    arn = sm.create_secret(Name="svc/api-key", SecretString="arn-value")["ARN"]
    binary_arn = sm.create_secret(Name="blob", SecretBinary=b"\x00\x01binary")["ARN"]
    d = aws_daemon(start_daemon, moto)
    objects = [{"objectName": arn}, {"objectName": binary_arn, "objectAlias": "blob.bin"}]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    assert files_of(resp) == {arn.replace("/", "_"): b"arn-value", "blob.bin": b"\x00\x01binary"}
    assert [v.id for v in resp.object_version] == [arn, binary_arn]


def test_object_version_and_label(start_daemon, moto, pod):
    sm = admin(moto, "secretsmanager")
    first = sm.create_secret(Name="rotating", SecretString="v-one")
    sm.put_secret_value(SecretId="rotating", SecretString="v-two")
    ssm = admin(moto, "ssm")
    ssm.put_parameter(Name="/p", Value="p-one", Type="SecureString")
    ssm.put_parameter(Name="/p", Value="p-two", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/p", Value="p-three", Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name="/p", ParameterVersion=2, Labels=["stable"])
    d = aws_daemon(start_daemon, moto)
    objects = [
        {"objectName": "rotating", "objectType": "secretsmanager", "objectAlias": "current"},
        {
            "objectName": "rotating",
            "objectType": "secretsmanager",
            "objectAlias": "pinned",
            "objectVersion": first["VersionId"],
        },
        {
            "objectName": "rotating",
            "objectType": "secretsmanager",
            "objectAlias": "previous",
            "objectVersionLabel": "AWSPREVIOUS",
        },
        {"objectName": "/p", "objectType": "ssmparameter", "objectAlias": "p-latest"},
        {"objectName": "/p", "objectType": "ssmparameter", "objectAlias": "p-v1", "objectVersion": "1"},
        {
            "objectName": "/p",
            "objectType": "ssmparameter",
            "objectAlias": "p-stable",
            "objectVersionLabel": "stable",
        },
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    assert files_of(resp) == {
        "current": b"v-two",
        "pinned": b"v-one",
        "previous": b"v-one",
        "p-latest": b"p-three",
        "p-v1": b"p-one",
        "p-stable": b"p-two",
    }
    ids = [v.id for v in resp.object_version]
    assert len(set(ids)) == 6
    assert ids[0] == f"{first['ARN']}#current"


def test_jmes_path_writes_each_key(start_daemon, moto, pod):
    document = {"username": "admin", "password": "jm3s-pass", "nested": {"port": 5432, "tags": ["a"]}}
    admin(moto, "secretsmanager").create_secret(Name="db/creds", SecretString=json.dumps(document))
    admin(moto, "ssm").put_parameter(Name="/cfg/json", Value='{"host": "db.local"}', Type="String")
    d = aws_daemon(start_daemon, moto)
    objects = [
        {
            "objectName": "db/creds",
            "objectType": "secretsmanager",
            "jmesPath": [
                {"path": "username", "objectAlias": "db-user"},
                {"path": "password", "objectAlias": "db/pass"},
                {"path": "nested.port", "objectAlias": "port"},
                {"path": "nested", "objectAlias": "nested.json"},
            ],
        },
        {
            "objectName": "/cfg/json",
            "objectType": "ssmparameter",
            "jmesPath": [{"path": "host", "objectAlias": "host"}],
        },
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    got = files_of(resp)
    assert got == {
        "db_creds": json.dumps(document).encode(),
        "db-user": b"admin",
        "db_pass": b"jm3s-pass",
        "port": b"5432",
        "nested.json": json.dumps(document["nested"]).encode(),
        "_cfg_json": b'{"host": "db.local"}',
        "host": b"db.local",
    }
    assert len({v.id for v in resp.object_version}) == 7


@pytest.mark.parametrize(
    ("translation", "expected"),
    [(None, "team_app_key"), ("False", "team/app/key"), ("-", "team-app-key"), ("+", "team+app+key")],
)
def test_path_translation(start_daemon, moto, pod, translation, expected):
    admin(moto, "secretsmanager").create_secret(Name="team/app/key", SecretString="pt-value")
    d = aws_daemon(start_daemon, moto)
    params = spc([{"objectName": "team/app/key", "objectType": "secretsmanager"}])
    if translation is not None:
        params["pathTranslation"] = translation
    resp = d.client.mount(mount_request("aws-spc", params, pod))
    assert files_of(resp) == {expected: b"pt-value"}


def test_path_translation_applies_to_aliases_and_rejects_bad_values(start_daemon, moto, pod):
    admin(moto, "secretsmanager").create_secret(Name="k", SecretString="alias-value")
    d = aws_daemon(start_daemon, moto)
    objects = [{"objectName": "k", "objectType": "secretsmanager", "objectAlias": "dir/k"}]
    assert files_of(d.client.mount(mount_request("aws-spc", spc(objects), pod))) == {"dir_k": b"alias-value"}
    nested = d.client.mount(mount_request("aws-spc", spc(objects, pathTranslation="False"), pod))
    assert files_of(nested) == {"dir/k": b"alias-value"}
    err = mount_error(d, spc(objects, pathTranslation="__"), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pathTranslation" in err.details()


def test_file_permission(start_daemon, moto, pod):
    admin(moto, "secretsmanager").create_secret(Name="perm", SecretString='{"a": "x"}')
    d = aws_daemon(start_daemon, moto)
    objects = [
        {
            "objectName": "perm",
            "objectType": "secretsmanager",
            "filePermission": "0400",
            "jmesPath": [{"path": "a", "objectAlias": "a"}],
        }
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod, permission=0o644))
    assert {f.path: f.mode for f in resp.files} == {"perm": 0o400, "a": 0o400}


# --- failover ---------------------------------------------------------------------------------


def test_failover_region_when_primary_is_unreachable(start_daemon, moto, pod):
    west_sm = admin(moto, "secretsmanager", FAILOVER)
    west_sm.create_secret(Name="db/pw", SecretString="west-pw")
    west_sm.create_secret(Name="db/pw-replica", SecretString="west-replica")
    west_arn = west_sm.create_secret(Name="by-arn", SecretString="west-arn")["ARN"]
    admin(moto, "ssm", FAILOVER).put_parameter(Name="/west/p", Value="west-param", Type="SecureString")
    closed = f"http://127.0.0.1:{_free_port()}"
    d = aws_daemon(start_daemon, moto, region_endpoint_urls={REGION: closed})
    objects = [
        {"objectName": "db/pw", "objectType": "secretsmanager"},
        {
            "objectName": "db/primary-name",
            "objectType": "secretsmanager",
            "objectAlias": "other",
            "failoverObject": {"objectName": "db/pw-replica"},
        },
        {"objectName": west_arn.replace(FAILOVER, REGION), "objectAlias": "arn-file"},
        {"objectName": "/west/p", "objectType": "ssmparameter"},
    ]
    started = time.monotonic()
    resp = d.client.mount(mount_request("aws-spc", spc(objects, failoverRegion=FAILOVER), pod))
    elapsed = time.monotonic() - started
    assert files_of(resp) == {
        "db_pw": b"west-pw",
        "other": b"west-replica",
        "arn-file": b"west-arn",
        "_west_p": b"west-param",
    }
    assert resp.object_version[2].id == west_arn
    assert "failover region" in d.log_text()
    assert elapsed < 10


def test_failover_object_with_versions_and_labels(start_daemon, moto, pod):
    """failoverObject names its own secret or parameter, with its own label; a VersionId is
    shared by replicas, so a failoverObject objectVersion must equal the primary's."""
    version_id = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
    west_sm = admin(moto, "secretsmanager", FAILOVER)
    west_sm.create_secret(Name="app/replica", SecretString="west-v1", ClientRequestToken=version_id)
    west_sm.put_secret_value(SecretId="app/replica", SecretString="west-v2")
    west_ssm = admin(moto, "ssm", FAILOVER)
    west_ssm.put_parameter(Name="/west/cfg", Value="cfg-one", Type="SecureString")
    west_ssm.put_parameter(Name="/west/cfg", Value="cfg-two", Type="SecureString", Overwrite=True)
    west_ssm.label_parameter_version(Name="/west/cfg", ParameterVersion=1, Labels=["blue"])
    closed = f"http://127.0.0.1:{_free_port()}"
    d = aws_daemon(start_daemon, moto, region_endpoint_urls={REGION: closed})
    objects = [
        {
            "objectName": "app/primary",
            "objectType": "secretsmanager",
            "objectAlias": "pinned",
            "objectVersion": version_id,
            "failoverObject": {"objectName": "app/replica", "objectVersion": version_id},
        },
        {
            "objectName": "app/primary",
            "objectType": "secretsmanager",
            "objectAlias": "previous",
            "failoverObject": {"objectName": "app/replica", "objectVersionLabel": "AWSPREVIOUS"},
        },
        {
            "objectName": "/east/cfg",
            "objectType": "ssmparameter",
            "objectAlias": "cfg",
            "objectVersionLabel": "green",
            "failoverObject": {"objectName": "/west/cfg", "objectVersionLabel": "blue"},
        },
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects, failoverRegion=FAILOVER), pod))
    assert files_of(resp) == {"pinned": b"west-v1", "previous": b"west-v1", "cfg": b"cfg-one"}
    assert all(FAILOVER in v.id for v in resp.object_version)
    mismatch = [{**objects[0], "failoverObject": {"objectName": "app/replica", "objectVersion": "b" * 32}}]
    err = mount_error(d, spc(mismatch, failoverRegion=FAILOVER), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "objectVersion must equal" in err.details()
    no_alias = [{k: v for k, v in objects[2].items() if k != "objectAlias"}]
    err = mount_error(d, spc(no_alias, failoverRegion=FAILOVER), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs objectAlias" in err.details()


def test_failover_when_primary_swallows_requests(start_daemon, moto, pod):
    """A primary that accepts connections but never answers still leaves time for the failover."""
    admin(moto, "secretsmanager", FAILOVER).create_secret(Name="slow", SecretString="slow-value")
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        d = start_daemon(
            mount_timeout=3.0,
            backends={
                "aws": {"endpoint_url": moto, "sts_endpoint_url": moto, "region_endpoint_urls": {REGION: url}}
            },
        )
        objects = [{"objectName": "slow", "objectType": "secretsmanager"}]
        started = time.monotonic()
        resp = d.client.mount(mount_request("aws-spc", spc(objects, failoverRegion=FAILOVER), pod))
        assert files_of(resp) == {"slow": b"slow-value"}
        assert 1.0 < time.monotonic() - started < 3.0
        # Without a failover region the same outage ends at the mount deadline.
        err = mount_error(d, spc(objects), pod)
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class _Throttler(BaseHTTPRequestHandler):
    """An AWS JSON endpoint that always answers ThrottlingException (HTTP 400)."""

    hits = 0

    def do_POST(self):
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def throttler() -> Iterator[tuple[str, type[_Throttler]]]:
    handler = type("Throttler", (_Throttler,), {"hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_throttling_is_retried_then_fails_over(start_daemon, moto, pod, throttler):
    url, handler = throttler
    admin(moto, "secretsmanager", FAILOVER).create_secret(Name="hot", SecretString="hot-value")
    d = aws_daemon(start_daemon, moto, sts_endpoint_url=moto, region_endpoint_urls={REGION: url})
    objects = [{"objectName": "hot", "objectType": "secretsmanager"}]
    resp = d.client.mount(mount_request("aws-spc", spc(objects, failoverRegion=FAILOVER), pod))
    assert files_of(resp) == {"hot": b"hot-value"}
    assert handler.hits == 4  # the retry policy's attempts, then the failover region
    # Without a failover region, throttling exhaustion is reported as unavailable.
    err = mount_error(d, spc(objects), pod)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "throttled" in err.details() and "'hot'" in err.details()


def test_not_found_in_primary_does_not_fail_over(start_daemon, moto, pod):
    admin(moto, "secretsmanager", FAILOVER).create_secret(Name="only-west", SecretString="w")
    d = aws_daemon(start_daemon, moto)
    objects = [{"objectName": "only-west", "objectType": "secretsmanager"}]
    err = mount_error(d, spc(objects, failoverRegion=FAILOVER), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "'only-west'" in err.details() and REGION in err.details()


# --- auth -------------------------------------------------------------------------------------


def test_pod_token_and_session_name(start_daemon, moto, pod):
    admin(moto, "secretsmanager").create_secret(Name="who", SecretString="who-value")
    d = aws_daemon(start_daemon, moto)
    objects = [{"objectName": "who", "objectType": "secretsmanager"}]
    d.client.mount(mount_request("aws-spc", spc(objects), pod))
    d.client.mount(mount_request("aws-spc", spc(objects), pod))
    backend = d.mounter.registry.get("aws")
    assert isinstance(backend, AWSBackend)
    assert backend.stats["AssumeRoleWithWebIdentity"] == 1  # cached per pod until expiry
    assert backend.stats["GetSecretValue"] == 2
    ((creds, _),) = [entry[0] for entry in backend._credentials._entries.values()]
    caller = boto3.client(
        "sts",
        endpoint_url=moto,
        region_name=REGION,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.session_token,
    ).get_caller_identity()
    assert caller["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app/keygate-default-app-0"
    # Another pod gets its own credentials.
    other = Pod(name="app-1", uid="other-uid", tokens=pod.tokens)
    d.client.mount(mount_request("aws-spc", spc(objects), other))
    assert backend.stats["AssumeRoleWithWebIdentity"] == 2


def test_missing_token_and_role_are_refused(start_daemon, moto, pod):
    d = aws_daemon(start_daemon, moto)
    objects = [{"objectName": "x", "objectType": "secretsmanager"}]
    err = mount_error(d, spc(objects), Pod())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "sts.amazonaws.com" in err.details() and "tokenRequests" in err.details()
    wrong_audience = Pod(tokens={"vault": next(iter(pod.tokens.values()))})
    assert mount_error(d, spc(objects), wrong_audience).code() == grpc.StatusCode.UNAUTHENTICATED
    no_role = spc(objects)
    del no_role["roleArn"]
    err = mount_error(d, no_role, pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "eks.amazonaws.com/role-arn" in err.details() and "default/app" in err.details()
    err = mount_error(d, spc(objects, roleArn="not-an-arn"), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_use_pod_identity_is_refused_clearly(start_daemon, moto, pod):
    d = aws_daemon(start_daemon, moto)
    params = spc([{"objectName": "x", "objectType": "secretsmanager"}], usePodIdentity="true")
    err = mount_error(d, params, pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "usePodIdentity" in err.details()


def test_role_resolver_hook(start_daemon, moto, pod):
    admin(moto, "secretsmanager").create_secret(Name="hooked", SecretString="hook-value")
    seen: list[PodIdentity] = []

    async def resolver(identity: PodIdentity) -> str | None:
        seen.append(identity)
        return ROLE

    d = aws_daemon(start_daemon, moto, role_resolver=resolver)
    params = spc([{"objectName": "hooked", "objectType": "secretsmanager"}])
    del params["roleArn"]
    resp = d.client.mount(mount_request("aws-spc", params, pod))
    assert files_of(resp) == {"hooked": b"hook-value"}
    assert seen[0].service_account == "app"


def test_static_credentials_from_node_publish_secret(start_daemon, moto):
    admin(moto, "secretsmanager").create_secret(Name="static", SecretString="static-value")
    d = aws_daemon(start_daemon, moto)
    params = spc([{"objectName": "static", "objectType": "secretsmanager"}])
    del params["roleArn"]
    node = {"awsAccessKeyId": "AKIAEXAMPLE", "awsSecretAccessKey": "node-secret-key-value"}
    resp = d.client.mount(mount_request("aws-spc", params, Pod(), secrets=node))
    assert files_of(resp) == {"static": b"static-value"}
    backend = d.mounter.registry.get("aws")
    assert backend.stats["AssumeRoleWithWebIdentity"] == 0
    err = mount_error(d, params, Pod(), secrets={"awsAccessKeyId": "AKIAEXAMPLE"})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- batching, mixed SPCs -----------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Forwards AWS JSON calls to moto unchanged and records each call's target and body."""

    upstream = ""
    calls: list[tuple[str, dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append((self.headers.get("X-Amz-Target", ""), json.loads(body or b"{}")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(self.upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, data, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, data, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder(moto) -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"upstream": moto, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_ssm_names_are_batched_by_ten(start_daemon, moto, pod, recorder):
    """Counted on the wire: GetParameters takes at most ten names, selectors included."""
    url, handler = recorder
    ssm = admin(moto, "ssm")
    for i in range(23):
        ssm.put_parameter(Name=f"/batch/p{i}", Value=f"value-{i}", Type="SecureString")
    ssm.put_parameter(Name="/batch/p0", Value="value-0-v2", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/batch/p1", Value="value-1-v2", Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name="/batch/p1", ParameterVersion=1, Labels=["stable"])
    d = aws_daemon(start_daemon, moto, sts_endpoint_url=moto, region_endpoint_urls={REGION: url})
    objects = [{"objectName": f"/batch/p{i}", "objectType": "ssmparameter"} for i in range(23)]
    objects += [
        {
            "objectName": "/batch/p0",
            "objectType": "ssmparameter",
            "objectAlias": "p0-v1",
            "objectVersion": "1",
        },
        {
            "objectName": "/batch/p1",
            "objectType": "ssmparameter",
            "objectAlias": "p1-stable",
            "objectVersionLabel": "stable",
        },
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    expected = {f"_batch_p{i}": f"value-{i}".encode() for i in range(2, 23)}
    expected |= {"_batch_p0": b"value-0-v2", "_batch_p1": b"value-1-v2"}
    expected |= {"p0-v1": b"value-0", "p1-stable": b"value-1"}
    assert files_of(resp) == expected
    names = [body["Names"] for target, body in handler.calls if target == "AmazonSSM.GetParameters"]
    assert len(names) == 3 and sorted(len(n) for n in names) == [5, 10, 10]
    requested = [name for batch in names for name in batch]
    assert len(requested) == len(set(requested)) == 25
    assert {"/batch/p0:1", "/batch/p1:stable"} <= set(requested)
    assert all(body.get("WithDecryption") is True for _, body in handler.calls)
    assert d.mounter.registry.get("aws").stats["GetParameters"] == 3


def test_mixed_spc_with_sealed(start_daemon, moto, pod, node_key):
    admin(moto, "secretsmanager").create_secret(Name="cloud", SecretString="cloud-value")
    d = aws_daemon(start_daemon, moto)
    objects = [
        {"objectName": "cloud", "objectType": "secretsmanager"},
        {"objectName": "local", "sealed": node_key.seal(b"sealed-value", "default", "local")},
    ]
    resp = d.client.mount(mount_request("aws-spc", spc(objects), pod))
    assert files_of(resp) == {"cloud": b"cloud-value", "local": b"sealed-value"}


def test_arn_object_is_recognised_without_region_parameter(start_daemon, moto, pod, node_key):
    arn = admin(moto, "secretsmanager").create_secret(Name="by-arn-only", SecretString="arn-only")["ARN"]
    d = aws_daemon(start_daemon, moto, region=REGION)
    objects = [
        {"objectName": arn, "objectAlias": "cloud"},
        {"objectName": "local", "sealed": node_key.seal(b"sealed-value", "default", "local")},
    ]
    params = {"roleArn": ROLE, "objects": json.dumps(objects)}
    resp = d.client.mount(mount_request("aws-spc", params, pod))
    assert files_of(resp) == {"cloud": b"arn-only", "local": b"sealed-value"}


# --- errors -----------------------------------------------------------------------------------


def test_not_found_errors_name_the_object(start_daemon, moto, pod):
    d = aws_daemon(start_daemon, moto)
    err = mount_error(d, spc([{"objectName": "missing/secret", "objectType": "secretsmanager"}]), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "'missing/secret'" in err.details() and "ResourceNotFoundException" in err.details()
    err = mount_error(d, spc([{"objectName": "/missing/param", "objectType": "ssmparameter"}]), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "'/missing/param'" in err.details()
    admin(moto, "ssm").put_parameter(Name="/v", Value="v", Type="String")
    pinned = [{"objectName": "/v", "objectType": "ssmparameter", "objectVersion": "7"}]
    err = mount_error(d, spc(pinned), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "'/v:7'" in err.details()


@pytest.mark.parametrize(
    ("obj", "params", "fragment"),
    [
        ({"objectName": "x"}, {}, "objectType"),
        ({"objectName": "x", "objectType": "kv"}, {}, "objectType"),
        (
            {
                "objectName": "x",
                "objectType": "secretsmanager",
                "jmesPath": [{"path": "a[", "objectAlias": "a"}],
            },
            {},
            "JMESPath",
        ),
        ({"objectName": "x", "objectType": "secretsmanager", "jmesPath": [{"path": "a"}]}, {}, "objectAlias"),
        (
            {
                "objectName": "x",
                "objectType": "ssmparameter",
                "objectVersion": "1",
                "objectVersionLabel": "l",
            },
            {},
            "not both",
        ),
        ({"objectName": "x", "objectType": "ssmparameter", "objectVersion": "abc"}, {}, "version number"),
        ({"objectName": "x", "objectType": "secretsmanager", "objectVersion": "short"}, {}, "VersionId"),
        ({"objectName": f"arn:aws:secretsmanager:{FAILOVER}:{ACCOUNT}:secret:x-AbCdEf"}, {}, "region"),
        (
            {"objectName": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/x", "objectType": "secretsmanager"},
            {},
            "ARN",
        ),
        ({"objectName": "arn:aws:s3:::bucket"}, {}, "ARN"),
        (
            {"objectName": "x", "objectType": "secretsmanager", "failoverObject": {"objectName": "y"}},
            {},
            "failoverRegion",
        ),
        ({"objectName": "x", "objectType": "secretsmanager"}, {"region": "moon-1"}, "region"),
        ({"objectName": "x", "objectType": "secretsmanager"}, {"failoverRegion": REGION}, "failoverRegion"),
    ],
)
def test_invalid_spc(start_daemon, moto, pod, obj, params, fragment):
    d = aws_daemon(start_daemon, moto)
    err = mount_error(d, spc([obj], **params), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.details()


def test_missing_region_is_explained(start_daemon, moto, pod):
    d = aws_daemon(start_daemon, moto)
    params = spc([{"objectName": "x", "objectType": "secretsmanager"}])
    del params["region"]
    err = mount_error(d, params, pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'region'" in err.details()


def test_jmes_path_on_non_json_and_missing_key(start_daemon, moto, pod):
    admin(moto, "secretsmanager").create_secret(Name="plain", SecretString="not-json-secret-value")
    admin(moto, "secretsmanager").create_secret(Name="json", SecretString='{"a": "json-secret-value"}')
    d = aws_daemon(start_daemon, moto)
    plain = [
        {
            "objectName": "plain",
            "objectType": "secretsmanager",
            "jmesPath": [{"path": "a", "objectAlias": "a"}],
        }
    ]
    err = mount_error(d, spc(plain), pod)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "not JSON" in err.details()
    missing = [
        {
            "objectName": "json",
            "objectType": "secretsmanager",
            "jmesPath": [{"path": "b", "objectAlias": "b"}],
        }
    ]
    err = mount_error(d, spc(missing), pod)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "'b'" in err.details()
    assert "secret-value" not in err.details()


def test_no_secret_value_in_logs_or_errors(start_daemon, moto, pod):
    values = ["log-probe-sm-value", "log-probe-ssm-value", "log-probe-jmes-value"]
    admin(moto, "secretsmanager").create_secret(
        Name="lp", SecretString=json.dumps({"k": values[2], "x": values[0]})
    )
    admin(moto, "ssm").put_parameter(Name="/lp", Value=values[1], Type="SecureString")
    d = aws_daemon(start_daemon, moto)
    good = [
        {"objectName": "lp", "objectType": "secretsmanager", "jmesPath": [{"path": "k", "objectAlias": "k"}]},
        {"objectName": "/lp", "objectType": "ssmparameter"},
    ]
    d.client.mount(mount_request("aws-spc", spc(good), pod))
    details = []
    bad = [
        {
            "objectName": "lp",
            "objectType": "secretsmanager",
            "jmesPath": [{"path": "nope", "objectAlias": "n"}],
        }
    ]
    details.append(mount_error(d, spc(bad), pod).details())
    details.append(
        mount_error(d, spc([{"objectName": "/nope", "objectType": "ssmparameter"}]), pod).details()
    )
    node = {"awsAccessKeyId": "AKIALOGPROBE", "awsSecretAccessKey": "log-probe-static-key"}
    static = spc([{"objectName": "nope", "objectType": "secretsmanager"}])
    details.append(mount_error(d, static, Pod(), secrets=node).details())
    text = d.log_text() + "\n".join(details)
    assert "keygate.mount" in text or "mount" in text
    token = next(iter(pod.tokens.values()))
    for secret in [*values, "log-probe-static-key", token, token.split(".")[2]]:
        assert secret not in text


# --- units that need no server --------------------------------------------------------------


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("ThrottlingException", 400), Retryable),
        (_client_error("Throttling", 400), Retryable),
        (_client_error("TooManyRequestsException", 429), Retryable),
        (_client_error("InternalServiceError", 500), Retryable),
        (_client_error("Whatever", 503), Retryable),
        (_client_error("AccessDeniedException", 400), PermissionDenied),
        (_client_error("ResourceNotFoundException", 400), SecretNotFound),
        (_client_error("ParameterNotFound", 400), SecretNotFound),
        (_client_error("InvalidIdentityToken", 400), Unauthenticated),
        (_client_error("ValidationException", 400), InvalidSPC),
        (EndpointConnectionError(endpoint_url="http://x"), Retryable),
    ],
)
def test_error_translation(error, expected):
    translated = translate_error(error, "objects[0] 'x'", REGION)
    assert type(translated) is expected
    assert "'x'" in translated.message
    if expected is Retryable:
        assert translated.code == Code.BACKEND_UNAVAILABLE


def test_session_name_and_translate_path():
    pod = PodIdentity(namespace="ns", name="p" * 80, uid="u", service_account="sa")
    name = session_name(pod)
    assert len(name) == 64 and name.startswith("keygate-ns-ppp")
    assert session_name(PodIdentity("a b", "c", "u", "s")) == "keygate-a-b-c"
    assert translate_path("a/b", {}) == "a_b"
    assert translate_path("a/b", {"pathTranslation": "false"}) == "a/b"
    with pytest.raises(InvalidSPC):
        translate_path("a/b", {"pathTranslation": "ab"})


def test_boto3_is_not_loaded_at_provider_import():
    code = "import provider.app, provider.server, providers.registry, sys; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
