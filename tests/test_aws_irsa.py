"""IRSA without ``roleArn``: the pod's IAM role comes from its ServiceAccount's
``eks.amazonaws.com/role-arn`` annotation, as the AWS provider reads it.

End to end: real Mounts over the daemon's socket, the ServiceAccount read from the local
Kubernetes API (keygate_dev.devcluster, bearer token required), the real boto3 exchanging the pod's
own token at an STS web-identity endpoint that checks it as AWS does (tests/aws_web_identity_sts.py)
in front of a moto server with authentication ON, so a read succeeds only with the permissions of
the role the annotation names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from provider.attest.service_accounts import ServiceAccounts
from provider.errors import BackendUnavailable
from providers.aws.params import ROLE_ANNOTATION
from tests.aws_web_identity_sts import STSState, running_sts
from tests.kubeapi import DevCluster
from tests.test_aws_pod_identity import APP_ROLE, EMPTY_ROLE, ISSUER, REGION, pod_token, secret
from tests.test_aws_pod_identity import aws as aws  # the fixtures, shared
from tests.test_aws_pod_identity import issuer_key as issuer_key

STS_AUDIENCE = "sts.amazonaws.com"
SUBJECT = "system:serviceaccount:default:app"


@dataclass
class Env:
    aws: dict[str, Any]
    kube: DevCluster
    sts: STSState
    sts_url: str
    issuer_key: Any

    def daemon(self, start_daemon: Any, **kube_overrides: Any) -> Any:
        kube = {
            "kube_api_url": self.kube.url,
            "kube_ca": str(self.kube.ca_file),
            "kube_token_file": str(self.kube.token_file),
            **kube_overrides,
        }
        aws = {"endpoint_url": self.aws["url"], "sts_endpoint_url": self.sts_url}
        return start_daemon(backends={"aws": aws}, **kube)

    def pod(self, sa: str = "app", **fields: Any) -> Pod:
        shape = Pod(service_account=sa, **fields)
        token = pod_token(self.issuer_key, audience=STS_AUDIENCE, sa=sa, pod=shape)
        return Pod(service_account=sa, tokens={STS_AUDIENCE: token}, **fields)


@pytest.fixture
def env(aws: dict[str, Any], kube: DevCluster, issuer_key: Any) -> Iterator[Env]:
    # Both roles trust the app service account: which one it gets is the annotation's choice.
    trust = {APP_ROLE: frozenset({SUBJECT}), EMPTY_ROLE: frozenset({SUBJECT})}
    state = STSState(ISSUER, issuer_key.public_key(), aws["url"], aws["keys"], trust)
    with running_sts(state) as url:
        yield Env(aws, kube, state, url, issuer_key)


def params(name: str, **extra: str) -> dict[str, str]:
    objects = f'[{{"objectName": "{name}", "objectType": "secretsmanager", "objectAlias": "value"}}]'
    return {"region": REGION, "objects": objects, **extra}


def mount_error(d: Any, parameters: dict[str, str], pod: Pod) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("irsa-spc", parameters, pod))
    return info.value


def test_role_comes_from_the_service_account_annotation(start_daemon, env: Env):
    name = secret(env.aws, "from-irsa")
    env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: APP_ROLE})
    d = env.daemon(start_daemon)
    pod = env.pod()
    for _ in range(3):
        resp = d.client.mount(mount_request("irsa-spc", params(name), pod))
        assert {f.path: f.contents for f in resp.files} == {"value": b"from-irsa"}
    assert env.sts.assumed == [APP_ROLE]
    # One ServiceAccount GET: later Mounts within the cache's TTL reuse the answer.
    assert env.kube.hits["serviceaccount"] == 1


def test_the_annotated_role_is_the_one_whose_permissions_apply(start_daemon, env: Env):
    name = secret(env.aws, "not-for-the-empty-role")
    env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: EMPTY_ROLE})
    err = mount_error(env.daemon(start_daemon), params(name), env.pod())
    # moto's AccessDenied is an XML body botocore cannot parse for this JSON API: only the 403 shows
    assert "403" in err.details() and name in err.details()
    assert env.sts.assumed == [EMPTY_ROLE]


def test_spc_role_arn_wins_and_needs_no_service_account_read(start_daemon, env: Env):
    name = secret(env.aws, "spc-role")
    env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: EMPTY_ROLE})
    d = env.daemon(start_daemon)
    resp = d.client.mount(mount_request("irsa-spc", params(name, roleArn=APP_ROLE), env.pod()))
    assert resp.files[0].contents == b"spc-role"
    assert env.kube.hits["serviceaccount"] == 0 and env.sts.assumed == [APP_ROLE]


def test_untrusted_service_account_is_refused_by_sts(start_daemon, env: Env):
    """The annotation only names a role; STS still checks the role trusts the pod's own token."""
    name = secret(env.aws, "other-sa")
    env.kube.add_service_account("default", "other", {ROLE_ANNOTATION: APP_ROLE})
    err = mount_error(env.daemon(start_daemon), params(name), env.pod(sa="other"))
    assert err.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert "AssumeRoleWithWebIdentity" in err.details() and env.sts.assumed == []


@pytest.mark.parametrize(
    "annotations, reason",
    [
        ({}, f"has no {ROLE_ANNOTATION}"),
        ({ROLE_ANNOTATION: ""}, f"has no {ROLE_ANNOTATION}"),
        ({ROLE_ANNOTATION: "app"}, "is not an IAM role ARN"),
        ({ROLE_ANNOTATION: APP_ROLE + "\nx"}, "is not an IAM role ARN"),
        ({ROLE_ANNOTATION: APP_ROLE + " arn:aws:iam::123456789012:role/b"}, "is not an IAM role ARN"),
        ({"eks.amazonaws.com/role": APP_ROLE}, f"has no {ROLE_ANNOTATION}"),
    ],
)
def test_missing_or_malformed_annotation_is_refused(start_daemon, env: Env, annotations, reason):
    env.kube.add_service_account("default", "app", annotations)
    err = mount_error(env.daemon(start_daemon), params("x"), env.pod())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in err.details() and "default/app" in err.details() and "roleArn" in err.details()
    assert env.sts.assumed == []


def test_missing_service_account_and_refused_api_read(start_daemon, env: Env, tmp_path):
    err = mount_error(env.daemon(start_daemon), params("x"), env.pod(sa="ghost"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "service account default/ghost does not exist" in err.details() and "roleArn" in err.details()
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-daemon-token")
    env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: APP_ROLE})
    err = mount_error(env.daemon(start_daemon, kube_token_file=str(wrong)), params("x"), env.pod())
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "'get' on serviceaccounts" in err.details() and "not-the-daemon-token" not in err.details()


def test_no_kubernetes_api_configured_says_to_set_role_arn(start_daemon, env: Env, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    aws = {"endpoint_url": env.aws["url"], "sts_endpoint_url": env.sts_url}
    d = start_daemon(backends={"aws": aws})
    err = mount_error(d, params("x"), env.pod())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ROLE_ANNOTATION in err.details() and "roleArn" in err.details() and "kube_api_url" in err.details()


def test_concurrent_mounts_share_one_service_account_read(start_daemon, env: Env):
    name = secret(env.aws, "shared")
    env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: APP_ROLE})
    d = env.daemon(start_daemon)
    pod = env.pod()
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: d.client.mount(mount_request("irsa-spc", params(name), pod)), range(8))
        )
    assert all(r.files[0].contents == b"shared" for r in results)
    assert env.kube.hits["serviceaccount"] == 1


def test_service_account_cache_expires_and_follows_a_new_annotation(env: Env):
    env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: APP_ROLE, "big": "x" * 100_000})
    accounts = ServiceAccounts(
        env.kube.url, str(env.kube.ca_file), str(env.kube.token_file), ttl=0.3, max_entries=2
    )

    async def scenario() -> None:
        try:
            first = await accounts.annotations("default", "app")
            assert first[ROLE_ANNOTATION] == APP_ROLE
            # Too big to remember (over the per-entry byte limit): read again, never held.
            await accounts.annotations("default", "app")
            assert accounts.reads == 2
            env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: EMPTY_ROLE})
            assert (await accounts.annotations("default", "app"))[ROLE_ANNOTATION] == EMPTY_ROLE
            await accounts.annotations("default", "app")
            assert accounts.reads == 3  # the small answer is remembered
            env.kube.add_service_account("default", "app", {ROLE_ANNOTATION: APP_ROLE})
            time.sleep(0.4)
            assert (await accounts.annotations("default", "app"))[ROLE_ANNOTATION] == APP_ROLE
            assert accounts.reads == 4
            for n in range(5):  # more service accounts than entries: the oldest are dropped
                env.kube.add_service_account("default", f"sa-{n}", {})
                await accounts.annotations("default", f"sa-{n}")
            assert len(accounts._cache) <= 2
            with pytest.raises(BackendUnavailable, match="does not exist"):
                await accounts.annotations("default", "nobody")
        finally:
            await accounts.aclose()

    asyncio.run(scenario())


def test_with_attestation_the_attested_service_account_names_the_role(attest_daemon, env: Env):
    """Attestation on: the pod is verified against the API (token, Pod), and its attested service
    account is the one whose annotation is read."""
    from tests.kubeapi import make_pod

    name = secret(env.aws, "attested")
    spec = make_pod(env.kube)
    env.kube.add_service_account(spec.namespace, spec.service_account, {ROLE_ANNOTATION: APP_ROLE})
    d = attest_daemon(backends={"aws": {"endpoint_url": env.aws["url"], "sts_endpoint_url": env.sts_url}})
    shape = Pod(namespace=spec.namespace, name=spec.name, uid=spec.uid, service_account=spec.service_account)
    tokens = {
        "keygate": env.kube.mint(spec),
        STS_AUDIENCE: pod_token(env.issuer_key, audience=STS_AUDIENCE, sa=spec.service_account, pod=shape),
    }
    pod = Pod(shape.namespace, shape.name, shape.uid, shape.service_account, tokens)
    resp = d.client.mount(mount_request("irsa-spc", params(name), pod))
    assert resp.files[0].contents == b"attested"
    assert env.sts.assumed == [APP_ROLE] and env.kube.hits["serviceaccount"] == 1
