"""Selector listings go through the rate limiter and shared reads, like every other backend call.

For each backend, counted at the server: replicas of one identity starting together make one
listing (single flight; the first listing is slowed at the server so the Mounts certainly
overlap), two identities make two, and with ``shared_read_ttl`` a listing is reused but an empty
one is not; a throttling answer during a listing is waited out (OpenBao, moto and Key Vault
behind fault rules answering 429 with Retry-After, GCP RESOURCE_EXHAUSTED) instead of failing
the Mount; and a tiny bucket stops a listing that needs more requests than it allows before the
deadline, with the rate-limit message. Attestation is on wherever sharing is checked, since only
verified identities share.
"""
# ruff: noqa: F811  (the fixtures of other test modules are imported by name)

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import hvac
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keygate_dev.driver_client import Pod
from provider import metrics
from tests.azure_fake import pod_token as azure_pod_token
from tests.fault_checks import SLACK, timed_mount
from tests.fault_server import FaultProxy, _vault_error
from tests.test_aws import admin, moto, moto_url, spc  # noqa: F401
from tests.test_azure import AUDIENCE as AZURE_AUDIENCE
from tests.test_azure import CLIENT_ID, AzureEnv, azure  # noqa: F401
from tests.test_azure import ISSUER as AZURE_ISSUER
from tests.test_azure import spc as azure_spc
from tests.test_gcp import GCP, POOL, gcp  # noqa: F401
from tests.test_shared_reads import KEYGATE, attested, replica
from tests.vault_fixtures import AUDIENCE, BaoServer, Issuer, TokenReviewServer, free_port

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def together(d: Any, jobs: list[tuple[dict[str, str], Pod]]) -> list[Any]:
    """Every (params, pod) Mount at once; their outcomes in order."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return [out for out, _ in pool.map(lambda job: timed_mount(d, *job), jobs)]


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


# --- Vault: a real OpenBao with a file audit log, kubernetes auth ---------------------------------

LIST_POLICY = """
path "secret/metadata/lim/*" { capabilities = ["list"] }
path "secret/metadata/lim" { capabilities = ["list"] }
path "secret/data/lim/*" { capabilities = ["read"] }
path "secret/metadata/empty/*" { capabilities = ["list"] }
path "secret/metadata/empty" { capabilities = ["list"] }
"""


class Bao:
    def __init__(self, server: BaoServer, log: Path, api: TokenReviewServer, issuer: Issuer) -> None:
        self.server, self.log, self.api, self.issuer = server, log, api, issuer
        self.review_delay = 0.0

    def requests(self, operation: str, prefix: str) -> int:
        """Requests ``operation`` under ``prefix`` in OpenBao's audit log (one entry each)."""
        count = 0
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            request = entry.get("request") or {}
            if entry.get("type") == "request" and request.get("operation") == operation:
                count += str(request.get("path", "")).startswith(prefix)
        return count

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.server.address, token="root")

    def params(self, path: str, selector: dict[str, Any] | None = None, address: str = "") -> dict[str, str]:
        objects = [
            {"objectName": "conf", "secretPath": path, "secretKey": "password", "selector": selector or {}}
        ]
        return {
            "vaultAddress": address or self.server.address,
            "roleName": "lister",
            "vaultAuthMethod": "kubernetes",
            "objects": json.dumps(objects),
        }


def start_audited_bao(tmp: Path) -> tuple[BaoServer, Path]:
    """``bao server -dev`` on plain HTTP (so a FaultProxy can sit in front of it) with a file
    audit device (OpenBao enables those only from its config file): every request is counted."""
    log = tmp / "bao-audit.log"
    hcl = tmp / "audit.hcl"
    hcl.write_text(f'audit "file" "lim" {{\n  options = {{\n    file_path = "{log}"\n  }}\n}}\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    command = [shutil.which("bao") or "bao", "server", "-dev", "-dev-root-token-id=root"]
    command += [f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token", f"-config={hcl}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    server = BaoServer(f"http://127.0.0.1:{port}", "", str(tmp), process)
    deadline = time.monotonic() + 30
    while True:
        try:
            if not hvac.Client(url=server.address, token="root").sys.read_health_status(method="GET")[
                "sealed"
            ]:
                return server, log
        except Exception:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail("bao server did not start")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def bao(issuer: Issuer) -> Iterator[Bao]:
    """Its own OpenBao (an audit device needs a config file), its
    kubernetes auth reviewing tokens at an API stand-in that can be told to answer slowly, so a
    login (the first step of a listing) takes long enough for concurrent Mounts to overlap."""
    tmp = Path(tempfile.mkdtemp(prefix="kg-lim-"))
    server, log = start_audited_bao(tmp)
    api = TokenReviewServer(issuer)
    env = Bao(server, log, api, issuer)
    handler = api.httpd.RequestHandlerClass

    class Slow(handler):  # type: ignore[misc,valid-type]
        def do_POST(self) -> None:
            time.sleep(env.review_delay)
            super().do_POST()

    api.httpd.RequestHandlerClass = Slow
    try:
        root = hvac.Client(url=server.address, token="root")
        root.sys.enable_auth_method("kubernetes", path="kubernetes")
        root.write(
            "auth/kubernetes/config",
            kubernetes_host=api.url,
            kubernetes_ca_cert=api.ca_pem,
            disable_local_ca_jwt=True,
        )
        root.sys.create_or_update_policy("lister", LIST_POLICY)
        root.write(
            "auth/kubernetes/role/lister",
            bound_service_account_names=["app", "batch"],
            bound_service_account_namespaces=["default"],
            audience=AUDIENCE,
            token_policies=["lister"],
            token_ttl="1h",
        )
        for path in ("lim/a", "lim/b", "lim/f1/x", "lim/f2/y", "lim/f3/z"):
            root.secrets.kv.v2.create_or_update_secret(path, {"password": f"pw-{path}"}, mount_point="secret")
        yield env
    finally:
        api.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def vault_pods(b: Bao, sa: str, count: int) -> list[Pod]:
    return [replica(b.issuer, i, sa, AUDIENCE) for i in range(count)]


def test_vault_replicas_share_one_listing_two_identities_two(start_daemon, short_tmp, bao: Bao):
    d = attested(start_daemon, bao.issuer, short_tmp)
    params = bao.params("secret/data/lim")
    lists = bao.requests("list", "secret/metadata/lim")
    bao.review_delay = 0.5
    try:
        outs = together(d, [(params, p) for p in vault_pods(bao, "app", 6)])
    finally:
        bao.review_delay = 0.0
    assert outs == [{"conf/a": b"pw-lim/a", "conf/b": b"pw-lim/b"}] * 6, outs
    assert bao.requests("list", "secret/metadata/lim") - lists == 1  # counted by OpenBao
    lists = bao.requests("list", "secret/metadata/lim")
    bao.review_delay = 0.5
    try:
        jobs = [(params, vault_pods(bao, sa, 1)[0]) for sa in ("app", "batch")]
        outs = together(d, jobs)
    finally:
        bao.review_delay = 0.0
    assert outs == [{"conf/a": b"pw-lim/a", "conf/b": b"pw-lim/b"}] * 2, outs
    assert bao.requests("list", "secret/metadata/lim") - lists == 2  # never shared across identities


def test_vault_listing_reused_with_shared_read_ttl_and_an_empty_one_is_not(start_daemon, short_tmp, bao: Bao):
    d = attested(start_daemon, bao.issuer, short_tmp, shared_read_ttl=30)
    params = bao.params("secret/data/lim")
    lists = bao.requests("list", "secret/metadata/lim")
    for pod in vault_pods(bao, "app", 3):  # one after another: only the reuse cache can share
        out, _ = timed_mount(d, params, pod)
        assert out == {"conf/a": b"pw-lim/a", "conf/b": b"pw-lim/b"}, out
    assert bao.requests("list", "secret/metadata/lim") - lists == 1
    empty = bao.params("secret/data/empty")  # nothing there yet: an empty listing is never kept
    before = bao.requests("list", "secret/metadata/empty")
    for pod in vault_pods(bao, "app", 2):
        out, _ = timed_mount(d, empty, pod)
        assert out == {}, out
    assert bao.requests("list", "secret/metadata/empty") - before == 2


def test_vault_429_with_retry_after_during_listing_slows_down(start_daemon, short_tmp, bao: Bao):
    proxy = FaultProxy(bao.server.address, error=lambda status, route: _vault_error(status))
    try:
        proxy.add("/v1/secret/metadata/lim", "status", status=429, times=1, retry_after="1")
        d = attested(start_daemon, bao.issuer, short_tmp, mount_timeout=8.0)
        throttled = sample("keygate_backend_throttled_total", backend="vault")
        params = bao.params("secret/data/lim", address=proxy.address)
        out, _ = timed_mount(d, params, vault_pods(bao, "app", 1)[0])
        assert out == {"conf/a": b"pw-lim/a", "conf/b": b"pw-lim/b"}, out
        lists = sorted(t for t, route in proxy.arrivals if route == "/v1/secret/metadata/lim")
        assert len(lists) == 2 and lists[1] - lists[0] >= 0.9  # Retry-After honoured
        assert sample("keygate_backend_throttled_total", backend="vault") - throttled == 1
    finally:
        proxy.stop()


def test_vault_tiny_bucket_stops_the_listing_with_the_rate_limit_message(start_daemon, short_tmp, bao: Bao):
    # login, mount lookup, then one LIST per folder (depth 2: the root and f1, f2, f3) at 2/s
    d = attested(start_daemon, bao.issuer, short_tmp, vault_rate=2.0, vault_burst=1, mount_timeout=2.0)
    lists = bao.requests("list", "secret/metadata/lim")
    reads = bao.requests("read", "secret/data/lim")
    out, elapsed = timed_mount(d, bao.params("secret/data/lim", {"depth": 2}), vault_pods(bao, "app", 1)[0])
    assert isinstance(out, grpc.RpcError) and out.code() == EXHAUSTED, out
    assert "rate limit" in out.details() and "--vault-rate" in out.details(), out.details()
    assert elapsed < 2.0 + SLACK
    # burst + rate x deadline = 5 slots, two of them taken by the login and the mount lookup
    assert bao.requests("list", "secret/metadata/lim") - lists <= 3
    assert bao.requests("read", "secret/data/lim") == reads  # it stopped while listing


# --- AWS: moto behind a counting FaultProxy -----------------------------------------------------

LIST = "secretsmanager.ListSecrets"
BY_PATH = "AmazonSSM.GetParametersByPath"


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    server = FaultProxy(moto)
    try:
        yield server
    finally:
        server.stop()


def aws_prefix(moto: str, count: int = 3) -> str:
    prefix = f"lim-{uuid.uuid4().hex[:8]}/"
    sm = admin(moto, "secretsmanager")
    for i in range(count):
        sm.create_secret(Name=f"{prefix}s{i}", SecretString=f"v{i}")
    return prefix


def aws_params(prefix: str) -> dict[str, str]:
    return spc([{"objectName": prefix, "objectType": "secretsmanager", "objectAlias": "s", "selector": {}}])


def aws_pod(issuer: Issuer, i: int, sa: str = "app") -> Pod:
    return replica(issuer, i, sa, "sts.amazonaws.com")


def aws_daemon(start_daemon: Any, short_tmp: Path, issuer: Issuer, proxy: FaultProxy, **kw: Any) -> Any:
    return attested(start_daemon, issuer, short_tmp, backends={"aws": {"endpoint_url": proxy.address}}, **kw)


def test_aws_replicas_share_one_listing_two_identities_two(start_daemon, short_tmp, issuer, moto, proxy):
    prefix = aws_prefix(moto)
    d = aws_daemon(start_daemon, short_tmp, issuer, proxy)
    want = {"s/s0": b"v0", "s/s1": b"v1", "s/s2": b"v2"}
    proxy.add(LIST, "trickle_headers", interval=0.01, times=1)  # the first listing answers slowly
    assert together(d, [(aws_params(prefix), aws_pod(issuer, i)) for i in range(6)]) == [want] * 6
    assert proxy.count(LIST) == 1  # counted at the server's side of the proxy
    proxy.clear()
    proxy.add(LIST, "trickle_headers", interval=0.01, times=2)
    jobs = [(aws_params(prefix), aws_pod(issuer, 0, sa)) for sa in ("app", "batch")]
    assert together(d, jobs) == [want] * 2
    assert proxy.count(LIST) == 2


def test_aws_429_with_retry_after_during_listing_slows_down(start_daemon, short_tmp, issuer, moto, proxy):
    prefix = aws_prefix(moto, 1)
    d = aws_daemon(start_daemon, short_tmp, issuer, proxy, mount_timeout=8.0)
    proxy.add(LIST, "status", status=429, times=1, retry_after="1")
    throttled = sample("keygate_backend_throttled_total", backend="aws")
    out, _ = timed_mount(d, aws_params(prefix), aws_pod(issuer, 0))
    assert out == {"s/s0": b"v0"}, out
    lists = sorted(t for t, route in proxy.arrivals if route == LIST)
    assert len(lists) == 2 and lists[1] - lists[0] >= 0.9  # Retry-After honoured
    assert sample("keygate_backend_throttled_total", backend="aws") - throttled == 1


def ssm_path(moto: str, count: int) -> str:
    path = f"/lim{uuid.uuid4().hex[:8]}"
    ssm = admin(moto, "ssm")
    for i in range(count):
        ssm.put_parameter(Name=f"{path}/p{i:02d}", Value=f"v{i}", Type="String")
    return path


def ssm_params(path: str) -> dict[str, str]:
    return spc([{"objectName": path, "objectType": "ssmparameter", "objectAlias": "p", "selector": {}}])


def test_aws_listing_pages_take_slots_of_the_bucket(start_daemon, short_tmp, issuer, moto, proxy):
    path = ssm_path(moto, 25)  # three pages of ten
    d = aws_daemon(start_daemon, short_tmp, issuer, proxy, aws_rate=5.0, aws_burst=1, mount_timeout=8.0)
    waited = sample("keygate_backend_rate_limit_wait_seconds_sum", backend="aws")
    out, _ = timed_mount(d, ssm_params(path), aws_pod(issuer, 0))
    assert isinstance(out, dict) and len(out) == 25, out
    pages = sorted(t for t, route in proxy.arrivals if route == BY_PATH)
    # each page waited for its slot (the first one's own latency shortens the first gap)
    assert len(pages) == 3 and pages[2] - pages[1] >= 1 / 5 * 0.9, pages
    assert sample("keygate_backend_rate_limit_wait_seconds_sum", backend="aws") - waited >= 0.15


def test_aws_tiny_bucket_stops_the_listing_with_the_rate_limit_message(
    start_daemon, short_tmp, issuer, moto, proxy
):
    path = ssm_path(moto, 45)  # five pages
    d = aws_daemon(start_daemon, short_tmp, issuer, proxy, aws_rate=1.0, aws_burst=1, mount_timeout=1.5)
    out, elapsed = timed_mount(d, ssm_params(path), aws_pod(issuer, 0))
    assert isinstance(out, grpc.RpcError) and out.code() == EXHAUSTED, out
    assert "rate limit" in out.details() and "--aws-rate" in out.details(), out.details()
    assert elapsed < 1.5 + SLACK
    assert proxy.count(BY_PATH) <= 1 + 1 * 1.5
    assert proxy.requests["AmazonSSM.GetParameters"] == 0  # no batch read: it stopped while listing


# --- Azure: the Key Vault fake counts its requests ------------------------------------------------

OTHER_CLIENT = "22222222-3333-4444-5555-666666666666"


def azure_pod(env: AzureEnv, issuer: Issuer, i: int, sa: str = "app") -> Pod:
    pod = Pod(name=f"{sa}-{i}", uid=f"uid-{sa}-{i}", service_account=sa)
    token = azure_pod_token(
        env.cluster_key, AZURE_ISSUER, AZURE_AUDIENCE, service_account=sa, pod_name=pod.name, pod_uid=pod.uid
    )
    pod.tokens = {AZURE_AUDIENCE: token, KEYGATE: issuer.mint(pod, KEYGATE)}
    return pod


def azure_vault(env: AzureEnv, count: int = 3) -> str:
    vault = env.vault()
    for i in range(count):
        env.fake.add_secret(vault, f"app-{i:02d}", f"v{i}")
    return vault


def azure_params(vault: str, client_id: str = CLIENT_ID) -> dict[str, str]:
    obj = {"objectName": "app-", "objectType": "secret", "objectAlias": "a", "selector": {}}
    return azure_spc(vault, [obj], clientID=client_id)


def azure_lists(env: AzureEnv, vault: str) -> int:
    return sum(1 for r in env.fake.vault_requests(vault) if r["path"] == "/secrets" and r["authorized"])


def test_azure_replicas_share_one_listing_two_identities_two(start_daemon, short_tmp, issuer, azure):
    vault = azure_vault(azure)
    azure.fake.federate(OTHER_CLIENT, AZURE_ISSUER, "system:serviceaccount:default:batch", AZURE_AUDIENCE)
    azure.fake.grant(OTHER_CLIENT, vault)
    d = attested(start_daemon, issuer, short_tmp, backends={"azure": azure.settings()})
    want = {"a/00": b"v0", "a/01": b"v1", "a/02": b"v2"}
    azure.fake.chaos.add("/secrets", "trickle_body", interval=0.01, times=1)  # a slow first listing
    jobs = [(azure_params(vault), azure_pod(azure, issuer, i)) for i in range(6)]
    assert together(d, jobs) == [want] * 6
    assert azure_lists(azure, vault) == 1
    azure.fake.chaos.add("/secrets", "trickle_body", interval=0.01, times=1)
    jobs = [
        (azure_params(vault), azure_pod(azure, issuer, 0)),
        (azure_params(vault, OTHER_CLIENT), azure_pod(azure, issuer, 0, "batch")),
    ]
    assert together(d, jobs) == [want] * 2
    assert azure_lists(azure, vault) == 1 + 2


def test_azure_429_with_retry_after_during_listing_slows_down(start_daemon, short_tmp, issuer, azure):
    vault = azure_vault(azure, 1)
    d = attested(start_daemon, issuer, short_tmp, backends={"azure": azure.settings()}, mount_timeout=8.0)
    azure.fake.chaos.add("/secrets", "status", status=429, times=1, retry_after="1")
    throttled = sample("keygate_backend_throttled_total", backend="azure")
    out, elapsed = timed_mount(d, azure_params(vault), azure_pod(azure, issuer, 0))
    assert out == {"a/00": b"v0"}, out
    assert elapsed >= 0.9
    assert sample("keygate_backend_throttled_total", backend="azure") - throttled == 1


def test_azure_tiny_bucket_stops_the_listing_with_the_rate_limit_message(
    start_daemon, short_tmp, issuer, azure
):
    vault = azure_vault(azure, 90)  # four pages of 25
    d = attested(
        start_daemon,
        issuer,
        short_tmp,
        backends={"azure": azure.settings()},
        azure_rate=1.0,
        azure_burst=1,
        mount_timeout=1.5,
    )
    out, elapsed = timed_mount(d, azure_params(vault), azure_pod(azure, issuer, 0))
    assert isinstance(out, grpc.RpcError) and out.code() == EXHAUSTED, out
    assert "rate limit" in out.details() and "--azure-rate" in out.details(), out.details()
    assert elapsed < 1.5 + SLACK
    assert azure_lists(azure, vault) <= 1 + 1 * 1.5
    assert not [r for r in azure.fake.vault_requests(vault) if r["path"].startswith("/secrets/")]


# --- GCP: the Secret Manager fake records its calls ----------------------------------------------


class SlowListers(dict):  # type: ignore[type-arg]
    """The fake's list grants, looked up once per ListSecrets call: slowed, so listings overlap."""

    delay = 0.5

    def get(self, key: Any, default: Any = None) -> Any:
        time.sleep(self.delay)
        return super().get(key, default)


def gcp_pod(g: GCP, issuer: Issuer, i: int, sa: str = "app") -> Pod:
    pod = Pod(name=f"{sa}-{i}", uid=f"uid-{sa}-{i}", service_account=sa)
    token = g.cluster.pod_token(POOL, pod=pod.name, pod_uid=pod.uid, service_account=sa)
    pod.tokens = {POOL: token, KEYGATE: issuer.mint(pod, KEYGATE)}
    return pod


def gcp_seed(g: GCP, count: int, *principals: str) -> None:
    for i in range(count):
        g.sm.add(f"projects/proj/secrets/lim-{i:02d}", f"v{i}".encode(), grant=principals)
    for principal in principals:
        g.sm.allow_list("projects/proj", principal)


GCP_PARAMS = {
    "secrets": json.dumps([{"resourceName": "projects/proj/secrets/lim-", "path": "l", "selector": {}}])
}


def gcp_lists(g: GCP) -> int:
    return sum(1 for c in g.sm.calls if c.name.startswith("list:projects/proj?"))


def test_gcp_replicas_share_one_listing_two_identities_two(start_daemon, short_tmp, issuer, gcp: GCP):
    gcp_seed(gcp, 2, "ns/default/sa/app", "ns/default/sa/batch")
    d = attested(start_daemon, issuer, short_tmp, backends={"gcp": gcp.settings()})
    gcp.sm.listers = SlowListers(gcp.sm.listers)
    want = {"l/00": b"v0", "l/01": b"v1"}
    assert together(d, [(GCP_PARAMS, gcp_pod(gcp, issuer, i)) for i in range(6)]) == [want] * 6
    assert gcp_lists(gcp) == 1
    jobs = [(GCP_PARAMS, gcp_pod(gcp, issuer, 0, sa)) for sa in ("app", "batch")]
    assert together(d, jobs) == [want] * 2
    assert gcp_lists(gcp) == 1 + 2


def test_gcp_resource_exhausted_during_listing_is_retried(start_daemon, short_tmp, issuer, gcp: GCP):
    gcp_seed(gcp, 1, "ns/default/sa/app")
    d = attested(start_daemon, issuer, short_tmp, backends={"gcp": gcp.settings()}, mount_timeout=8.0)
    matches = gcp.sm._matches
    spent: list[int] = []

    def throttled_once(secret: str, terms: list[str], context: grpc.ServicerContext) -> bool:
        if not spent:
            spent.append(1)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for quota metric 'Access requests'"
            )
        return matches(secret, terms, context)

    gcp.sm._matches = throttled_once  # type: ignore[method-assign]
    before = sample("keygate_backend_throttled_total", backend="gcp")
    out, _ = timed_mount(d, GCP_PARAMS, gcp_pod(gcp, issuer, 0))
    assert out == {"l/00": b"v0"}, out
    assert gcp_lists(gcp) == 2
    assert sample("keygate_backend_throttled_total", backend="gcp") - before == 1


def test_gcp_tiny_bucket_stops_the_listing_with_the_rate_limit_message(
    start_daemon, short_tmp, issuer, gcp: GCP, monkeypatch
):
    from providers.gcp import listing

    monkeypatch.setattr(listing, "PAGE_SIZE", 1)
    gcp_seed(gcp, 6, "ns/default/sa/app")  # six pages
    d = attested(
        start_daemon,
        issuer,
        short_tmp,
        backends={"gcp": gcp.settings()},
        gcp_rate=1.0,
        gcp_burst=1,
        mount_timeout=1.5,
    )
    out, elapsed = timed_mount(d, GCP_PARAMS, gcp_pod(gcp, issuer, 0))
    assert isinstance(out, grpc.RpcError) and out.code() == EXHAUSTED, out
    assert "rate limit" in out.details() and "--gcp-rate" in out.details(), out.details()
    assert elapsed < 1.5 + SLACK
    assert gcp_lists(gcp) <= 1 + 1 * 1.5
    assert not [c for c in gcp.sm.calls if not c.name.startswith("list:")]  # no secret was read
