"""Shared reads: identical reads of concurrent Mounts reach the backend once, never across identities.

The security property is checked against real servers with real tokens, counting at the server:
a real OpenBao with its kubernetes auth method (TokenReview at a local API stand-in), where two
service accounts with different policies ask for the same path at once (two reads, one refused)
while replicas of one service account share one read; a Vault stand-in that answers slowly, so
concurrent Mounts certainly overlap; and the real boto3 against moto behind a counting proxy.
Attestation is on (tokens verified with the issuer's key) except where a test says otherwise:
without it nothing about a pod is verified, so only the very same token shares.
"""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from keygate_dev.driver_client import Pod
from provider import metrics
from provider.domain import FetchContext, PodIdentity
from provider.errors import DeadlineExceeded, KeygateError, SecretNotFound
from providers.common.shared_reads import SharedReads, identity
from tests.azure_fake import pod_token as azure_pod_token
from tests.fault_checks import timed_mount
from tests.fault_server import FaultProxy, FaultVault
from tests.test_aws import admin, moto, moto_url, spc  # noqa: F401
from tests.test_azure import AUDIENCE as AZURE_AUDIENCE
from tests.test_azure import ISSUER as AZURE_ISSUER
from tests.test_azure import TENANT, AzureEnv, azure  # noqa: F401
from tests.test_azure import spc as azure_spc
from tests.test_gcp import GCP, POOL, SECRET_VALUE, gcp, secrets_param  # noqa: F401
from tests.vault_fixtures import ISSUER, Issuer, TokenReviewServer, Vault, kube_auth, vault  # noqa: F401

SECRET = "shared-Vault-value-3e1f"
KEYGATE = "keygate"


def ctx(pod: str = "app-0", sa: str = "app", deadline: float = 5.0) -> FetchContext:
    return FetchContext(
        pod=PodIdentity("default", pod, f"uid-{pod}", sa),
        spc_name="spc",
        parameters={},
        tokens={},
        node_secrets={},
        deadline=time.monotonic() + deadline,
    )


# --- the helper itself -----------------------------------------------------------------------


class Backend:
    """Counts calls; each call waits until released, so concurrent reads certainly overlap."""

    def __init__(self, answer: Any = "value", error: KeygateError | None = None) -> None:
        self.calls = 0
        self.answer = answer
        self.error = error
        self.release = asyncio.Event()

    async def read(self) -> Any:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.answer


def test_concurrent_identical_reads_share_one_call_and_its_result():
    async def run() -> None:
        shared: SharedReads[str] = SharedReads("test")
        backend = Backend()
        tasks = [asyncio.create_task(shared.read("k", backend.read, ctx(f"p{i}"))) for i in range(5)]
        await asyncio.sleep(0.01)
        backend.release.set()
        assert await asyncio.gather(*tasks) == ["value"] * 5
        assert backend.calls == 1 and shared.stats.leaders == 1 and shared.stats.followers == 4
        hits = metrics.REGISTRY.get_sample_value(
            "keygate_cache_hits_total", {"backend": "test", "cache": "shared_reads"}
        )
        assert hits is not None and hits >= 4
        assert shared.in_flight == 0
        await shared.read("k", backend.read, ctx())  # nothing cached: a new read
        assert backend.calls == 2

    asyncio.run(run())


def test_waiters_get_the_same_error_each_their_own_copy():
    async def run() -> None:
        shared: SharedReads[str] = SharedReads("test")
        backend = Backend(error=SecretNotFound("nothing at 'secret/app/db' (404)"))
        tasks = [asyncio.create_task(shared.read("k", backend.read, ctx())) for _ in range(3)]
        await asyncio.sleep(0.01)
        backend.release.set()
        errors = await asyncio.gather(*tasks, return_exceptions=True)
        assert backend.calls == 1
        assert all(isinstance(e, SecretNotFound) and "404" in e.message for e in errors)
        assert len({id(e) for e in errors}) == 3
        errors[0].log_fields["pod"] = "default/p0"  # type: ignore[union-attr]
        assert "pod" not in errors[1].log_fields  # type: ignore[union-attr]

    asyncio.run(run())


def test_a_cancelled_leader_does_not_fail_its_followers():
    async def run() -> None:
        shared: SharedReads[str] = SharedReads("test")
        backend = Backend()
        leader = asyncio.create_task(shared.read("k", backend.read, ctx("leader")))
        await asyncio.sleep(0.01)
        follower = asyncio.create_task(shared.read("k", backend.read, ctx("follower")))
        await asyncio.sleep(0.01)
        leader.cancel()  # the leader's Mount is cancelled (driver gave up, SIGTERM, ...)
        await asyncio.sleep(0.01)
        backend.release.set()
        assert await follower == "value"
        assert leader.cancelled() and backend.calls == 1

    asyncio.run(run())


def test_a_follower_keeps_its_own_deadline_and_the_read_goes_on_for_the_others():
    async def run() -> None:
        shared: SharedReads[str] = SharedReads("test")
        backend = Backend()
        patient = asyncio.create_task(shared.read("k", backend.read, ctx("patient", deadline=5)))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await shared.read("k", backend.read, ctx("hasty", deadline=0.05))
        backend.release.set()
        assert await patient == "value" and backend.calls == 1

    asyncio.run(run())


def test_when_nobody_waits_any_more_the_read_is_cancelled():
    async def run() -> None:
        shared: SharedReads[str] = SharedReads("test")
        backend = Backend()
        only = asyncio.create_task(shared.read("k", backend.read, ctx()))
        await asyncio.sleep(0.01)
        only.cancel()
        await asyncio.sleep(0.01)
        assert shared.in_flight == 0
        backend.release.set()
        assert await shared.read("k", backend.read, ctx()) == "value"
        assert backend.calls == 2

    asyncio.run(run())


def test_private_results_are_not_handed_to_another_owner_nor_cached():
    async def run() -> None:
        shared: SharedReads[dict[str, str]] = SharedReads("test", ttl=30)
        mine = Backend(answer={"lease": "mine"})
        theirs = Backend(answer={"lease": "theirs"})
        a = asyncio.create_task(shared.read("k", mine.read, ctx(), owner="a", private=lambda v: True))
        await asyncio.sleep(0.01)
        b = asyncio.create_task(shared.read("k", theirs.read, ctx(), owner="b", private=lambda v: True))
        await asyncio.sleep(0.01)
        mine.release.set()
        theirs.release.set()
        assert await a == {"lease": "mine"} and await b == {"lease": "theirs"}
        assert len(shared) == 0

    asyncio.run(run())


def test_the_reuse_cache_expires_and_is_bounded():
    async def run() -> None:
        shared: SharedReads[bytes] = SharedReads("test", ttl=0.2, max_entries=3, max_bytes=10_000)
        for i in range(10):
            backend = Backend(answer=b"x" * 100)
            backend.release.set()
            await shared.read(f"k{i}", backend.read, ctx())
        assert len(shared) == 3
        counted = Backend(answer=b"y")
        counted.release.set()
        await shared.read("k9", counted.read, ctx())
        assert counted.calls == 0  # still cached
        await asyncio.sleep(0.25)
        await shared.read("k9", counted.read, ctx())
        assert counted.calls == 1  # expired
        big = Backend(answer=b"z" * 20_000)
        big.release.set()
        await shared.read("big", big.read, ctx())
        await shared.read("big", big.read, ctx())
        assert big.calls == 2  # too big to keep: read each time

    asyncio.run(run())


def test_ttl_is_capped_and_off_means_off():
    with pytest.raises(KeygateError, match="shared_read_ttl"):
        SharedReads("test", ttl=61)

    async def run() -> None:
        shared: SharedReads[str] = SharedReads("test", enabled=False)
        backend = Backend()
        tasks = [asyncio.create_task(shared.read("k", backend.read, ctx())) for _ in range(3)]
        await asyncio.sleep(0.01)
        backend.release.set()
        await asyncio.gather(*tasks)
        assert backend.calls == 3

    asyncio.run(run())


def test_the_identity_part_of_the_key():
    a, b = ctx("app-0"), ctx("app-1")
    assert identity(a, verified=True, token="t1") == identity(b, verified=True, token="t2")
    assert identity(a, verified=True, token="t") != identity(ctx(sa="other"), verified=True, token="t")
    assert identity(a, verified=True, token="t", per_pod=True) != identity(
        b, verified=True, token="t", per_pod=True
    )
    # unverified: the same pod with another token does not share, and no key holds a token
    assert identity(a, verified=False, token="t1") != identity(a, verified=False, token="t2")
    assert "t1" not in identity(a, verified=False, token="t1")


# --- attested daemons -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def attested(start_daemon: Any, issuer: Issuer, tmp: Path, **overrides: Any) -> Any:
    """A daemon that verifies every pod's ``keygate`` token with ``issuer``'s key."""
    jwk = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
    jwks = tmp / f"jwks-{id(issuer)}.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "test", "alg": "RS256", "use": "sig"}]}))
    return start_daemon(
        insecure_skip_attestation=False,
        issuer=ISSUER,
        jwks_file=(str(jwks),),
        insecure_skip_image_check=True,
        **overrides,
    )


def replica(issuer: Issuer, i: int, sa: str = "app", *audiences: str) -> Pod:
    pod = Pod(name=f"{sa}-{i}", uid=f"uid-{sa}-{i}", service_account=sa)
    pod.tokens = {aud: issuer.mint(pod, aud) for aud in (KEYGATE, *audiences)}
    return pod


def mount_all(d: Any, params: dict[str, str], pods: list[Pod]) -> list[Any]:
    with ThreadPoolExecutor(len(pods)) as pool:
        return [out for out, _ in pool.map(lambda p: timed_mount(d, params, p), pods)]


@pytest.fixture
def slow_vault() -> Iterator[FaultVault]:
    server = FaultVault(secrets={"secret/app/db": {"password": SECRET}})
    try:
        yield server
    finally:
        server.release()
        server.stop()


def fault_params(server: FaultVault, method: str = "kubernetes") -> dict[str, str]:
    objects = [{"objectName": "password", "secretPath": "secret/data/app/db", "secretKey": "password"}]
    return {
        "vaultAddress": server.address,
        "roleName": "app",
        "vaultAuthMethod": method,
        "objects": json.dumps(objects),
    }


def test_replicas_starting_together_share_one_read(start_daemon, short_tmp, issuer, slow_vault):
    d = attested(start_daemon, issuer, short_tmp)
    slow_vault.add("secret/data/app/db", "trickle_body", interval=0.004, times=1)
    pods = [replica(issuer, i, "app", "vault") for i in range(6)]
    outs = mount_all(d, fault_params(slow_vault), pods)
    assert outs == [{"password": SECRET.encode()}] * 6
    assert slow_vault.requests["secret/data/app/db"] == 1  # counted at the server
    assert slow_vault.logins == 1  # the followers' own logins were not needed either


def test_vault_jwt_roles_share_only_within_one_pod(start_daemon, short_tmp, issuer, slow_vault):
    # a jwt role may bind any claim (the pod's name too), so replicas do not share
    d = attested(start_daemon, issuer, short_tmp)
    slow_vault.add("secret/data/app/db", "trickle_body", interval=0.004, times=1)
    pods = [replica(issuer, i, "app", "vault") for i in range(3)]
    outs = mount_all(d, fault_params(slow_vault, "jwt"), pods)
    assert outs == [{"password": SECRET.encode()}] * 3
    assert slow_vault.requests["secret/data/app/db"] == 3


def test_without_attestation_only_the_very_same_token_shares(start_daemon, issuer, slow_vault):
    d = start_daemon()  # insecure_skip_attestation: the pod attributes are not verified
    slow_vault.add("secret/data/app/db", "trickle_body", interval=0.004, times=2)
    one = replica(issuer, 0, "app", "vault")
    forged = Pod(name=one.name, uid=one.uid, service_account="app", tokens={"vault": "not.a.token"})
    outs = mount_all(d, fault_params(slow_vault), [one, one, forged])
    assert outs[:2] == [{"password": SECRET.encode()}] * 2
    assert slow_vault.requests["secret/data/app/db"] == 2  # the forged token got a read of its own


# --- real OpenBao: policies decide, shared reads never widen them ----------------------------

OTHER_POLICY = 'path "secret/data/elsewhere/*" { capabilities = ["read"] }'


@pytest.fixture(scope="module")
def bao(vault: Vault, kube_auth: TokenReviewServer) -> Vault:
    root = vault.root()
    root.secrets.kv.v2.create_or_update_secret("app/shared", {"password": SECRET}, mount_point="secret")
    root.sys.create_or_update_policy("other", OTHER_POLICY)
    root.write(
        "auth/kubernetes/role/other",
        bound_service_account_names=["other"],
        bound_service_account_namespaces=["default"],
        audience="vault",
        token_policies=["other"],
        token_ttl="1h",
    )
    return vault


def bao_params(vault: Vault, role: str) -> dict[str, str]:
    objects = [{"objectName": "password", "secretPath": "secret/data/app/shared", "secretKey": "password"}]
    return {
        "vaultAddress": vault.address,
        "roleName": role,
        "vaultAuthMethod": "kubernetes",
        "vaultCACertPath": vault.ca_file,
        "objects": json.dumps(objects),
    }


def reads(d: Any) -> int:
    return int(d.mounter.registry.get("vault").stats["reads"])


def test_two_service_accounts_at_once_two_reads_one_refused(start_daemon, short_tmp, bao):
    d = attested(start_daemon, bao.issuer, short_tmp, shared_read_ttl=30)
    app, other = replica(bao.issuer, 0, "app", "vault"), replica(bao.issuer, 0, "other", "vault")
    with ThreadPoolExecutor(2) as pool:
        mine = pool.submit(timed_mount, d, bao_params(bao, "app"), app)
        theirs = pool.submit(timed_mount, d, bao_params(bao, "other"), other)
        (got, _), (refused, _) = mine.result(), theirs.result()
    assert got == {"password": SECRET.encode()}
    assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "403" in refused.details() and SECRET not in refused.details()
    assert reads(d) >= 2  # one each (the refused one retries after a fresh login)
    # and with the answer cached, the other identity still goes to Vault and is still refused
    again, _ = timed_mount(d, bao_params(bao, "other"), other)
    assert isinstance(again, grpc.RpcError) and again.code() == grpc.StatusCode.PERMISSION_DENIED


def test_same_identity_is_one_read_and_attestation_still_runs_for_every_pod(start_daemon, short_tmp, bao):
    d = attested(start_daemon, bao.issuer, short_tmp, shared_read_ttl=30)
    pods = [replica(bao.issuer, i, "app", "vault") for i in range(4)]
    for pod in pods:
        out, _ = timed_mount(d, bao_params(bao, "app"), pod)
        assert out == {"password": SECRET.encode()}
    assert reads(d) == 1
    # a pod whose keygate token is not the issuer's gets nothing, even with the answer cached
    impostor = replica(bao.issuer, 9, "app", "vault")
    stranger = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    impostor.tokens = {**impostor.tokens, KEYGATE: stranger.mint(impostor, KEYGATE)}
    out, _ = timed_mount(d, bao_params(bao, "app"), impostor)
    assert isinstance(out, grpc.RpcError) and out.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reads(d) == 1


# --- AWS: counted at moto's side --------------------------------------------------------------

GET = "secretsmanager.GetSecretValue"


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    admin(moto, "secretsmanager").create_secret(Name="app/shared", SecretString=SECRET)
    server = FaultProxy(moto)
    try:
        yield server
    finally:
        server.stop()


def test_aws_replicas_share_reads_other_roles_do_not(start_daemon, short_tmp, issuer, proxy):
    d = attested(
        start_daemon, issuer, short_tmp, shared_read_ttl=30, backends={"aws": {"endpoint_url": proxy.address}}
    )
    objects = [{"objectName": "app/shared", "objectType": "secretsmanager", "objectAlias": "db"}]
    for i in range(3):
        out, _ = timed_mount(d, spc(objects), replica(issuer, i, "app", "sts.amazonaws.com"))
        assert out == {"db": SECRET.encode()}
    assert proxy.count(GET) == 1
    other_role = spc(objects, roleArn="arn:aws:iam::123456789012:role/other")
    out, _ = timed_mount(d, other_role, replica(issuer, 0, "app", "sts.amazonaws.com"))
    assert out == {"db": SECRET.encode()}
    out, _ = timed_mount(d, spc(objects), replica(issuer, 0, "batch", "sts.amazonaws.com"))
    assert out == {"db": SECRET.encode()}
    assert proxy.count(GET) == 3  # another role, another service account: their own reads


# --- GCP and Azure: counted by their fake servers ----------------------------------------------


def test_gcp_replicas_share_one_version_access(start_daemon, short_tmp, issuer, gcp: GCP):
    d = attested(start_daemon, issuer, short_tmp, shared_read_ttl=30, backends={"gcp": gcp.settings()})
    params = secrets_param({"resourceName": "projects/proj/secrets/db/versions/latest", "fileName": "db"})
    for i in range(3):
        pod = Pod(name=f"app-{i}", uid=f"uid-app-{i}")
        pod.tokens = {
            POOL: gcp.cluster.pod_token(POOL, pod=pod.name, pod_uid=pod.uid),
            KEYGATE: issuer.mint(pod, KEYGATE),
        }
        out, _ = timed_mount(d, params, pod)
        assert out == {"db": SECRET_VALUE}
    assert [c.name for c in gcp.sm.calls] == ["projects/proj/secrets/db/versions/latest"]


def test_azure_replicas_share_one_secret_read(start_daemon, short_tmp, issuer, azure: AzureEnv):
    vault = azure.vault()
    azure.fake.add_secret(vault, "db", "az-shared-value-77e1")
    d = attested(start_daemon, issuer, short_tmp, shared_read_ttl=30, backends={"azure": azure.settings()})
    params = azure_spc(vault, [{"objectName": "db", "objectType": "secret"}])
    for i in range(3):
        pod = Pod(name=f"app-{i}", uid=f"uid-app-{i}")
        token = azure_pod_token(
            azure.cluster_key, AZURE_ISSUER, AZURE_AUDIENCE, pod_name=pod.name, pod_uid=pod.uid
        )
        pod.tokens = {AZURE_AUDIENCE: token, KEYGATE: issuer.mint(pod, KEYGATE)}
        out, _ = timed_mount(d, params, pod)
        assert out == {"db": b"az-shared-value-77e1"}
    # one read for three pods: the SDK's unauthenticated challenge, the read, one token exchange
    assert azure.fake.chaos.count("/secrets/db") == 2
    assert azure.fake.chaos.count(f"/{TENANT}/oauth2") == 1
