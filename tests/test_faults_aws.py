"""Backend faults through real Mounts: the real boto3 against a misbehaving AWS endpoint.

moto cannot misbehave, so a :class:`tests.fault_server.FaultProxy` sits between the daemon's
AWS backend and a real moto server: it relays every call (STS AssumeRoleWithWebIdentity,
Secrets Manager, SSM) unless a rule black-holes, trickles, throttles, fails, garbles or cuts
it. Every failing Mount must end within the mount deadline with a keygate-coded status, return
no files and leak no secret.
"""
# ruff: noqa: F811  (the fixtures of tests.test_aws / tests.test_gcp are imported by name)

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from keygate_dev.driver_client import Pod
from tests.conftest import NodeKey
from tests.fault_checks import (
    DEADLINE,
    SLACK,
    UNAVAILABLE,
    assert_clean,
    check_error,
    describe,
    expect_error,
    scrape,
    timed_mount,
)
from tests.fault_server import FaultProxy, closed_port
from tests.test_aws import admin, moto, moto_url, pod, sa_token, spc  # noqa: F401
from tests.test_gcp import GCP, gcp, secrets_param  # noqa: F401
from tests.vault_fixtures import free_port

TIMEOUT = 1.5
WITHIN = TIMEOUT + SLACK
GET = "secretsmanager.GetSecretValue"
SSM = "AmazonSSM.GetParameters"
STS = "AssumeRoleWithWebIdentity"
DB = "db-SECRET-aws-6e02c4"
API = "api-OTHER-aws-19fa7d"
EXTRA = "extra-aws-55c1"
PARAM = "param-aws-8d3e20"
GOOD = {"app_db": DB.encode(), "app_api": API.encode()}


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    sm = admin(moto, "secretsmanager")
    sm.create_secret(Name="app/db", SecretString=DB)
    sm.create_secret(Name="app/api", SecretString=API)
    sm.create_secret(Name="app/extra", SecretString=EXTRA)
    admin(moto, "ssm").put_parameter(Name="/app/param", Value=PARAM, Type="SecureString")
    server = FaultProxy(moto)
    try:
        yield server
    finally:
        server.stop()


def objects(*names: str) -> dict[str, str]:
    names = names or ("app/db", "app/api")
    items = [
        {"objectName": n, "objectType": "ssmparameter" if n.startswith("/") else "secretsmanager"}
        for n in names
    ]
    return spc(items)


def start(start_daemon: Any, proxy: FaultProxy, **kw: Any) -> Any:
    timeout = kw.pop("mount_timeout", TIMEOUT)
    backends = {"aws": {"endpoint_url": proxy.address, **kw.pop("aws", {})}, **kw.pop("backends", {})}
    return start_daemon(mount_timeout=timeout, backends=backends, **kw)


def test_healthy_proxy_relays_and_assumes_the_role_once(start_daemon, proxy, pod):
    d = start(start_daemon, proxy)
    for _ in range(3):
        out, _ = timed_mount(d, objects("app/db", "app/api", "/app/param"), pod)
        assert out == {**GOOD, "_app_param": PARAM.encode()}
    assert proxy.count(STS) == 1 and proxy.count(GET) == 6 and proxy.count(SSM) == 3


@pytest.mark.parametrize("where", [GET, STS])
def test_black_hole_ends_at_the_deadline_then_recovers(start_daemon, proxy, pod, where):
    d = start(start_daemon, proxy)
    proxy.add(where, "blackhole")
    msg = expect_error(d, objects(), pod, DEADLINE, WITHIN)
    assert f"within {TIMEOUT:g}s" in msg or "deadline" in msg, msg
    proxy.clear()
    out, elapsed = timed_mount(d, objects(), pod)
    assert out == GOOD and elapsed < 1.0, (out, elapsed)


@pytest.mark.parametrize(("where", "action"), [(GET, "trickle_body"), (STS, "trickle_headers")])
def test_slow_loris_is_cut_at_the_deadline(start_daemon, proxy, pod, where, action):
    d = start(start_daemon, proxy)
    proxy.add(where, action, interval=0.05)
    expect_error(d, objects(), pod, DEADLINE, WITHIN)


def test_throttling_with_retry_after_is_retried_within_the_budget(start_daemon, proxy, pod):
    d = start(start_daemon, proxy)
    proxy.add(GET, "status", status=429, times=2, retry_after="0.2")
    proxy.add(STS, "status", status=429, times=1, retry_after="0.2")
    out, elapsed = timed_mount(d, objects(), pod)
    assert out == GOOD and elapsed < TIMEOUT, (out, elapsed)
    assert proxy.count(GET) >= 4 and proxy.count(STS) == 2


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, "30"), (500, None), (502, None), (503, "5"), (504, None)]
)
def test_endless_throttling_or_5xx_gives_up_after_bounded_attempts(
    start_daemon, proxy, pod, status, retry_after
):
    d = start(start_daemon, proxy)
    proxy.add(GET, "status", status=status, retry_after=retry_after, contains="app/db")
    msg = expect_error(d, objects(), pod, UNAVAILABLE, WITHIN)
    assert "Secrets Manager secret 'app/db'" in msg and "attempts)" in msg, msg
    if retry_after is not None:  # asks for longer than the deadline: fails at once
        assert "Retry-After" in msg and proxy.count(GET) - 1 == 1, msg
    else:
        assert 1 < proxy.count(GET) - 1 <= 4  # app/api once, app/db at most 4 times


@pytest.mark.parametrize("status", [400, 501])
def test_an_unknown_refusal_is_not_retried(start_daemon, proxy, pod, status):
    d = start(start_daemon, proxy)
    proxy.add(GET, "status", status=status)
    msg = expect_error(d, objects("app/db"), pod, UNAVAILABLE, WITHIN)
    assert "attempts" not in msg, msg
    assert proxy.count(GET) == 1


def test_ssm_outage_is_retried_then_reported(start_daemon, proxy, pod):
    d = start(start_daemon, proxy)
    proxy.add(SSM, "status", status=503)
    msg = expect_error(d, objects("/app/param"), pod, UNAVAILABLE, WITHIN)
    assert "SSM parameters" in msg and "attempts)" in msg, msg


def test_connection_refused_fails_fast_after_bounded_retries(start_daemon, moto, pod):
    d = start_daemon(
        mount_timeout=TIMEOUT, backends={"aws": {"endpoint_url": f"http://127.0.0.1:{closed_port()}"}}
    )
    msg = expect_error(d, objects(), pod, UNAVAILABLE, WITHIN)
    assert "cannot reach AWS" in msg and "(after 4 attempts)" in msg, msg


@pytest.mark.parametrize(
    ("where", "action", "words"),
    [
        (GET, "garbled", "unreadable answer"),
        (GET, "truncate", "unreadable answer"),
        (GET, "reset", "cannot reach AWS"),
        (SSM, "garbled", "unreadable answer"),
        (STS, "garbled", "unreadable answer"),
        (STS, "truncate", "unreadable answer"),
        (STS, "reset", "cannot reach AWS"),
    ],
)
def test_truncated_or_garbled_answers_are_clean_errors(start_daemon, proxy, pod, where, action, words):
    d = start(start_daemon, proxy)
    proxy.add(where, action)
    msg = expect_error(d, objects("app/db", "app/api", "/app/param"), pod, UNAVAILABLE, WITHIN)
    assert words in msg and "(after 4 attempts)" in msg, msg
    assert DB not in msg and API not in msg and PARAM not in msg


@pytest.mark.parametrize("status", [500, 503])
def test_sts_outage_is_unavailable_not_unauthenticated(start_daemon, proxy, pod, status):
    d = start(start_daemon, proxy)
    proxy.add(STS, "status", status=status)
    msg = expect_error(d, objects(), pod, UNAVAILABLE, WITHIN)
    assert "AssumeRoleWithWebIdentity" in msg and "attempts)" in msg, msg
    assert proxy.count(STS) <= 2 * 4  # each of the two reads retries the exchange
    proxy.clear()
    assert timed_mount(d, objects(), pod)[0] == GOOD


def test_one_failing_secret_fails_the_whole_mount_and_returns_nothing(start_daemon, proxy, pod):
    d = start(start_daemon, proxy)
    names = ("app/db", "app/api", "app/extra")
    proxy.add(GET, "status", status=503, contains="app/extra")
    out, elapsed = timed_mount(d, objects(*names), pod)
    msg = check_error(out, elapsed, UNAVAILABLE, WITHIN)
    assert "'app/extra'" in msg and DB not in msg
    assert proxy.count(GET) >= 3  # the others were read, and dropped
    proxy.clear()
    out, _ = timed_mount(d, objects(*names), pod)
    assert out == {**GOOD, "app_extra": EXTRA.encode()}


def test_bulkhead_a_black_holed_aws_does_not_slow_sealed_or_gcp_mounts(
    start_daemon, proxy, pod, gcp: GCP, node_key: NodeKey
):
    """24 AWS Mounts hang (more than the AWS pool's 16 workers) while other pods mount."""
    # shared_reads off: the burst must reach the hole as separate reads
    d = start(start_daemon, proxy, mount_timeout=3.0, backends={"gcp": gcp.settings()}, shared_reads=False)
    gcp_params = secrets_param({"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "db"})
    gcp_pod = gcp.pod()
    assert isinstance(timed_mount(d, gcp_params, gcp_pod)[0], dict)  # warm: one STS exchange
    assert timed_mount(d, objects(), pod)[0] == GOOD  # warm: credentials cached
    proxy.add(GET, "blackhole")
    hanging = 24
    with ThreadPoolExecutor(hanging) as pool:
        stuck = [pool.submit(timed_mount, d, objects("app/db"), pod) for _ in range(hanging)]
        deadline = time.monotonic() + 2.0
        while proxy.count(GET) < 2 + 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.count(GET) >= 2 + 16, "the AWS mounts never reached the hole"
        times: list[float] = []
        for i in range(8):
            sealed = json.dumps([{"objectName": "s", "sealed": node_key.seal(b"v", "ns1", "s")}])
            out, elapsed = timed_mount(d, {"objects": sealed}, Pod(namespace="ns1", name=f"sealed-{i}"))
            assert out == {"s": b"v"}
            times.append(elapsed)
            out, elapsed = timed_mount(d, gcp_params, gcp_pod)
            assert isinstance(out, dict) and len(out) == 1, out
            times.append(elapsed)
        assert max(times) < 0.5, times
        results = [f.result() for f in stuck]
    for out, elapsed in results:
        check_error(out, elapsed, DEADLINE, 3.0 + SLACK + 0.4)


def test_no_secret_reaches_logs_errors_metrics_or_audit_in_a_fault_run(start_daemon, proxy, pod, sa_token):
    port = free_port()
    d = start(start_daemon, proxy, metrics_addr=f"127.0.0.1:{port}")
    errors: list[str] = []

    def run(*rules: tuple[str, str, dict[str, Any]]) -> None:
        proxy.clear()
        for where, action, kw in rules:
            proxy.add(where, action, **kw)
        fresh = replace(pod, name=f"app-{len(errors)}")  # its own session: the role is assumed again
        out, _ = timed_mount(d, objects("app/db", "app/api", "/app/param"), fresh)
        errors.append(describe(out))

    run()
    run((GET, "status", {"status": 429, "times": 2}))
    run((GET, "truncate", {}))
    run((GET, "garbled", {}))
    run((SSM, "garbled", {}))
    run((GET, "trickle_body", {"interval": 0.01}))
    run((GET, "status", {"status": 503}))
    run((GET, "blackhole", {}))
    run((STS, "garbled", {}))
    run((STS, "status", {"status": 503}))
    assert len([e for e in errors if e]) >= 8, errors
    metrics = scrape(port)
    assert "keygate_backend_errors_total" in metrics
    assert len(d.audit_records()) == 10
    keys = [
        key
        for route, body in proxy.answers
        if route == STS
        for key in re.findall(rb"<(?:SecretAccessKey|SessionToken)>([^<]+)<", body)
    ]
    assert keys, "the run assumed no role"
    needles = [DB, API, PARAM, sa_token, sa_token.split(".")[2], *(k.decode() for k in keys)]
    assert_clean(d, errors, metrics, needles)
