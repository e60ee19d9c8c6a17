"""EKS Pod Identity end to end: real Mounts over the daemon's socket, the real boto3, a moto server
with authentication ON (so only the credentials the agent issued for the association's role are
accepted), and a fake EKS Pod Identity Agent (tests/aws_pod_identity_agent.py) that speaks the
real agent's wire format and verifies the pod's token against the test issuer's real key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import grpc
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from keygate_dev.driver_client import Pod, mount_request
from tests.aws_pod_identity_agent import AUDIENCE, AgentState, ipv6_loopback_works, running_agent

ACCOUNT = "123456789012"
REGION = "us-east-1"
ISSUER = "https://oidc.eks.example.test/id/TEST"
APP_ROLE = f"arn:aws:iam::{ACCOUNT}:role/app"
EMPTY_ROLE = f"arn:aws:iam::{ACCOUNT}:role/no-permissions"
REPO = Path(__file__).resolve().parents[1]


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _client(url: str, service: str, keys: tuple[str, str]):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
    )


@pytest.fixture(scope="module")
def aws() -> Iterator[dict]:
    """moto with IAM authentication after the first 3 requests, which create the agent's IAM user."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
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
        iam = _client(url, "iam", ("bootstrap", "bootstrap"))
        iam.create_user(UserName="pod-identity-agent")
        everything = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="pod-identity-agent", PolicyName="all", PolicyDocument=json.dumps(everything)
        )
        created = iam.create_access_key(UserName="pod-identity-agent")["AccessKey"]
        keys = (created["AccessKeyId"], created["SecretAccessKey"])
        iam = _client(url, "iam", keys)  # authentication is on from here
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/pod-identity-agent"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        for role in ("app", "no-permissions"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        read = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
        }
        iam.put_role_policy(RoleName="app", PolicyName="read", PolicyDocument=json.dumps(read))
        yield {"url": url, "keys": keys}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pod_token(
    key, *, audience: str = AUDIENCE, sa: str = "app", pod: Pod | None = None, ttl: int = 3600
) -> str:
    """A projected service-account token as the kubelet mints it (RS256, pod-bound claims)."""
    pod = pod or Pod()
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": [audience],
        "sub": f"system:serviceaccount:{pod.namespace}:{sa}",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "kubernetes.io": {
            "namespace": pod.namespace,
            "serviceaccount": {"name": sa, "uid": "sa-uid"},
            "pod": {"name": pod.name, "uid": pod.uid},
        },
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "test"})


def agent_state(aws: dict, issuer_key, **extra) -> AgentState:
    associations = {("default", "app"): APP_ROLE, ("default", "restricted"): EMPTY_ROLE}
    return AgentState(
        issuer=ISSUER,
        public_key=issuer_key.public_key(),
        sts_url=aws["url"],
        access_key=aws["keys"],
        associations=associations,
        **extra,
    )


def secret(aws: dict, value: str) -> str:
    name = f"pi/{uuid.uuid4().hex[:10]}"
    _client(aws["url"], "secretsmanager", aws["keys"]).create_secret(Name=name, SecretString=value)
    return name


def daemon(start_daemon, aws: dict, ipv4: str, ipv6: str | None = None):
    settings = {
        "endpoint_url": aws["url"],
        "pod_identity_endpoint_ipv4": ipv4,
        "pod_identity_endpoint_ipv6": ipv6 or closed_url(),
        "pod_identity_timeout": 2,
    }
    return start_daemon(backends={"aws": settings})


def params(name: str, **extra: str) -> dict[str, str]:
    objects = [{"objectName": name, "objectType": "secretsmanager", "objectAlias": "value"}]
    return {"region": REGION, "usePodIdentity": "true", "objects": json.dumps(objects), **extra}


def closed_url(host: str = "127.0.0.1") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{_free_port(host)}/v1/credentials"


def mount_error(d, parameters: dict[str, str], pod: Pod) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("pi-spc", parameters, pod))
    return info.value


def test_pod_identity_mount_uses_the_agents_credentials(start_daemon, aws, issuer_key):
    name = secret(aws, "from-pod-identity")
    token = pod_token(issuer_key)
    with running_agent(agent_state(aws, issuer_key)) as agent:
        d = daemon(start_daemon, aws, agent.url)
        pod = Pod(tokens={AUDIENCE: token})
        resp = d.client.mount(mount_request("pi-spc", params(name), pod))
        assert {f.path: f.contents for f in resp.files} == {"value": b"from-pod-identity"}
        assert agent.state.authorizations == [token]  # the raw token, as the real agent reads it
        again = d.client.mount(mount_request("pi-spc", params(name), pod))
        assert again.files[0].contents == b"from-pod-identity"
        assert agent.state.requests == 1  # cached until shortly before Expiration
    assert token not in d.log_text()
    # the role's permissions apply: moto refuses the same read for a role without them
    with running_agent(agent_state(aws, issuer_key)) as agent:
        d = daemon(start_daemon, aws, agent.url)
        restricted = Pod(
            service_account="restricted", tokens={AUDIENCE: pod_token(issuer_key, sa="restricted")}
        )
        err = mount_error(d, params(name), restricted)
        # moto answers this JSON-protocol call with an XML AccessDenied body botocore cannot parse,
        # so keygate sees only the HTTP 403 (real AWS sends AccessDeniedException: PermissionDenied)
        assert "403" in err.details() and agent.state.requests == 1


def test_missing_or_wrong_audience_token(start_daemon, aws, issuer_key):
    name = secret(aws, "never")
    with running_agent(agent_state(aws, issuer_key)) as agent:
        d = daemon(start_daemon, aws, agent.url)
        only_irsa = Pod(tokens={"sts.amazonaws.com": pod_token(issuer_key, audience="sts.amazonaws.com")})
        err = mount_error(d, params(name), only_irsa)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert f"audience {AUDIENCE!r}" in err.details() and "tokenRequests" in err.details()
        assert agent.state.requests == 0
        wrong = pod_token(issuer_key, audience="sts.amazonaws.com")
        err = mount_error(d, params(name), Pod(tokens={AUDIENCE: wrong}))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "InvalidTokenException" in err.details() and wrong not in err.details()
        forged = pod_token(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        err = mount_error(d, params(name), Pod(tokens={AUDIENCE: forged}))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        expired = pod_token(issuer_key, ttl=-120)
        err = mount_error(d, params(name), Pod(tokens={AUDIENCE: expired}))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in err.details()
        err = mount_error(
            d,
            params(name),
            Pod(service_account="other", tokens={AUDIENCE: pod_token(issuer_key, sa="other")}),
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no Pod Identity association" in err.details()


def test_agent_403_is_permission_denied_with_its_reason(start_daemon, aws, issuer_key):
    name = secret(aws, "never")
    state = agent_state(aws, issuer_key, allowed_hosts=("169.254.170.23", "fd00:ec2::23"))
    with running_agent(state) as agent:
        d = daemon(start_daemon, aws, agent.url)
        err = mount_error(d, params(name), Pod(tokens={AUDIENCE: pod_token(issuer_key)}))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "HTTP 403" in err.details() and "invalid address" in err.details()


def test_agent_down_is_backend_unavailable(start_daemon, aws, issuer_key):
    name = secret(aws, "never")
    down = closed_url()
    d = daemon(start_daemon, aws, down)
    err = mount_error(
        d, params(name, preferredAddressType="ipv4"), Pod(tokens={AUDIENCE: pod_token(issuer_key)})
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach the EKS Pod Identity Agent" in err.details() and down in err.details()


def test_bad_spc_values_are_refused(start_daemon, aws, issuer_key):
    d = daemon(start_daemon, aws, closed_url())
    pod = Pod(tokens={AUDIENCE: pod_token(issuer_key)})
    for extra, needle in (
        ({"preferredAddressType": "ipv5"}, "preferredAddressType"),
        ({"usePodIdentity": "yes please"}, "usePodIdentity"),
        ({"roleArn": APP_ROLE}, "roleArn"),
    ):
        err = mount_error(d, params("x", **extra), pod)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.details()


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback (::1) here")
def test_preferred_address_type_selects_the_agent_address(start_daemon, aws, issuer_key):
    name = secret(aws, "over-ipv6")
    with running_agent(agent_state(aws, issuer_key), host="::1") as agent6:
        d = daemon(start_daemon, aws, closed_url(), agent6.url)
        for preference in ("ipv6", "auto", "IPv6"):
            pod = Pod(uid=str(uuid.uuid4()), tokens={AUDIENCE: pod_token(issuer_key)})
            resp = d.client.mount(mount_request("pi-spc", params(name, preferredAddressType=preference), pod))
            assert resp.files[0].contents == b"over-ipv6"
        assert agent6.state.requests == 3  # auto: IPv4 unreachable, then IPv6
        err = mount_error(
            d, params(name, preferredAddressType="ipv4"), Pod(tokens={AUDIENCE: pod_token(issuer_key)})
        )
        assert err.code() == grpc.StatusCode.UNAVAILABLE and agent6.state.requests == 3


def test_csidriver_aws_component_requests_both_aws_audiences(tmp_path):
    kubectl = subprocess.run(["kubectl", "version", "--client"], capture_output=True)
    if kubectl.returncode != 0:
        pytest.skip("kubectl not installed")
    driver = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": "secrets-store.csi.k8s.io"},
        "spec": {"podInfoOnMount": True, "attachRequired": False},
    }
    (tmp_path / "csidriver.yaml").write_text(yaml.safe_dump(driver))
    comp = REPO / "daemonset" / "components" / "csidriver-aws"
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [csidriver.yaml]\ncomponents: [{os.path.relpath(comp, tmp_path)}]\n"
    )
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, check=True)
    (csi,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "CSIDriver"]
    audiences = [t["audience"] for t in csi["spec"]["tokenRequests"]]
    assert audiences == ["keygate", "sts.amazonaws.com", AUDIENCE]
    assert csi["spec"]["requiresRepublish"] is True
