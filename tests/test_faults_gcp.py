"""Backend faults through real Mounts: the real GCP SDK against a misbehaving Secret Manager / STS.

The daemon's GCP backend (google-cloud-secret-manager over gRPC, google-auth for STS and IAM)
talks to ``tests.gcp_fake``: the Secret Manager fake answers gRPC status codes, never answers,
or sends bytes that are no (or a truncated) protobuf; a :class:`tests.fault_server.FaultProxy` in
front of the STS / IAM Credentials fake black-holes, trickles, throttles or garbles the token
exchange. Every failing Mount must end within the mount deadline with a keygate-coded status,
return no files and leak no secret.
"""
# ruff: noqa: F811  (the fixtures of tests.test_gcp / tests.test_azure are imported by name)

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import grpc
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
from tests.fault_server import FaultProxy, NoAccept, _response, closed_port
from tests.test_azure import AzureEnv, azure, spc  # noqa: F401
from tests.test_gcp import (  # noqa: F401
    GCP,
    GSA,
    JSON_SECRET,
    POD_PRINCIPAL,
    SECRET_VALUE,
    YAML_SECRET,
    gcp,
    secrets_param,
)
from tests.vault_fixtures import free_port

TIMEOUT = 1.5
WITHIN = TIMEOUT + SLACK
DB = "projects/proj/secrets/db/versions/2"
CFG = "projects/proj/secrets/cfg/versions/1"
YML = "projects/proj/secrets/yml/versions/1"
GOOD = {"db": SECRET_VALUE, "cfg": JSON_SECRET}
GOOGLE_STATUS = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE"}


def google_error(status: int, route: str) -> bytes:
    """A Google API error body, as STS and IAM Credentials send one."""
    name = GOOGLE_STATUS.get(status, "UNKNOWN")
    body = {"error": {"code": status, "message": "fault injected", "status": name}}
    return _response(status, json.dumps(body).encode())


@pytest.fixture
def auth_proxy(gcp: GCP) -> Iterator[FaultProxy]:
    proxy = FaultProxy(gcp.auth.base, error=google_error)
    try:
        yield proxy
    finally:
        proxy.stop()


def settings(gcp: GCP, proxy: FaultProxy, **extra: Any) -> dict[str, Any]:
    return gcp.settings(sts_endpoint=f"{proxy.address}/v1/token", iam_endpoint=proxy.address, **extra)


def params(*names: str) -> dict[str, str]:
    names = names or ("db", "cfg")
    resources = {"db": DB, "cfg": CFG, "yml": YML}
    return secrets_param(*({"resourceName": resources[n], "fileName": n} for n in names))


def start(start_daemon: Any, gcp: GCP, proxy: FaultProxy, **kw: Any) -> Any:
    timeout = kw.pop("mount_timeout", TIMEOUT)
    return start_daemon(mount_timeout=timeout, backends={"gcp": settings(gcp, proxy)}, **kw)


def test_healthy_fakes_serve_and_exchange_the_token_once(start_daemon, gcp, auth_proxy):
    d = start(start_daemon, gcp, auth_proxy)
    for _ in range(3):
        out, _ = timed_mount(d, params(), gcp.pod())
        assert out == GOOD
    assert len(gcp.auth.log.sts) == 1 and len(gcp.sm.calls) == 6


def test_a_server_that_never_answers_ends_at_the_deadline_then_recovers(start_daemon, gcp, auth_proxy):
    d = start(start_daemon, gcp, auth_proxy)
    gcp.sm.fail_all = "hang"
    msg = expect_error(d, params(), gcp.pod(), DEADLINE, WITHIN)
    assert f"within {TIMEOUT:g}s" in msg or "deadline" in msg, msg
    deadline = time.monotonic() + 1.0
    while gcp.sm.hanging and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gcp.sm.hanging == 0, "the gRPC call outlived the mount (no deadline on the call)"
    gcp.sm.fail_all = None
    out, elapsed = timed_mount(d, params(), gcp.pod())
    assert out == GOOD and elapsed < 1.0, (out, elapsed)


def test_an_address_that_never_completes_a_handshake_ends_at_the_deadline(start_daemon, gcp, auth_proxy):
    dead = NoAccept()
    try:
        d = start_daemon(
            mount_timeout=TIMEOUT,
            backends={"gcp": settings(gcp, auth_proxy, endpoint=f"127.0.0.1:{dead.port}")},
        )
        expect_error(d, params(), gcp.pod(), DEADLINE | UNAVAILABLE, WITHIN)
    finally:
        dead.stop()


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED],
)
def test_transient_status_storm_gives_up_after_bounded_attempts(start_daemon, gcp, auth_proxy, code):
    d = start(start_daemon, gcp, auth_proxy)
    gcp.sm.fail_only = "secrets/db/"
    gcp.sm.fail_all = code
    msg = expect_error(d, params(), gcp.pod(), UNAVAILABLE, WITHIN)
    assert "busy or unavailable reading projects/proj/secrets/db" in msg and "attempts)" in msg, msg
    assert 1 < len([c for c in gcp.sm.calls if "/db/" in c.name]) <= 4


def test_transient_statuses_then_success_are_retried_within_the_budget(start_daemon, gcp, auth_proxy):
    d = start(start_daemon, gcp, auth_proxy)
    gcp.sm.fail_next = [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ]
    out, elapsed = timed_mount(d, params("db"), gcp.pod())
    assert out == {"db": SECRET_VALUE} and elapsed < TIMEOUT, (out, elapsed)


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED])
def test_a_definite_server_error_is_not_retried(start_daemon, gcp, auth_proxy, code):
    d = start(start_daemon, gcp, auth_proxy)
    gcp.sm.fail_all = code
    msg = expect_error(d, params("db"), gcp.pod(), UNAVAILABLE, WITHIN)
    assert f"({code.name})" in msg and "attempts" not in msg, msg
    assert len(gcp.sm.calls) == 1


def test_connection_refused_fails_fast_after_bounded_retries(start_daemon, gcp, auth_proxy):
    endpoint = f"127.0.0.1:{closed_port()}"
    d = start_daemon(mount_timeout=TIMEOUT, backends={"gcp": settings(gcp, auth_proxy, endpoint=endpoint)})
    msg = expect_error(d, params(), gcp.pod(), UNAVAILABLE, WITHIN)
    assert "busy or unavailable" in msg and "(after 4 attempts)" in msg, msg


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("garbled", "(INTERNAL)"),
        ("truncated", "(INTERNAL)"),
        ("no_payload", "without a payload"),
    ],
)
def test_garbled_or_truncated_protobuf_is_a_clean_error(start_daemon, gcp, auth_proxy, fault, words):
    d = start(start_daemon, gcp, auth_proxy)
    gcp.sm.fail_all = fault
    msg = expect_error(d, params(), gcp.pod(), UNAVAILABLE, WITHIN)
    assert words in msg, msg
    assert SECRET_VALUE.decode() not in msg


def test_one_failing_secret_fails_the_whole_mount_and_returns_nothing(start_daemon, gcp, auth_proxy):
    d = start(start_daemon, gcp, auth_proxy)
    gcp.sm.fail_only = "secrets/yml/"
    gcp.sm.fail_all = grpc.StatusCode.UNAVAILABLE
    out, elapsed = timed_mount(d, params("db", "cfg", "yml"), gcp.pod())
    msg = check_error(out, elapsed, UNAVAILABLE, WITHIN)
    assert "projects/proj/secrets/yml" in msg
    assert {c.name for c in gcp.sm.calls} >= {DB, CFG}  # the others were read, and dropped
    gcp.sm.fail_all = None
    out, _ = timed_mount(d, params("db", "cfg", "yml"), gcp.pod())
    assert out == {**GOOD, "yml": YAML_SECRET}


# --- the token exchange (STS, IAM Credentials) ------------------------------------------------


@pytest.mark.parametrize("action", ["blackhole", "trickle_headers", "trickle_body"])
def test_sts_black_hole_or_slow_loris_ends_at_the_deadline_then_recovers(
    start_daemon, gcp, auth_proxy, action
):
    d = start(start_daemon, gcp, auth_proxy)
    auth_proxy.add("/v1/token", action, interval=0.05)
    expect_error(d, params(), gcp.pod(), DEADLINE, WITHIN)
    auth_proxy.clear()
    out, elapsed = timed_mount(d, params(), gcp.pod())
    assert out == GOOD and elapsed < 1.0, (out, elapsed)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_sts_outage_is_retried_then_reported_as_unavailable(start_daemon, gcp, auth_proxy, status):
    d = start(start_daemon, gcp, auth_proxy)
    auth_proxy.add("/v1/token", "status", status=status, retry_after="30")
    msg = expect_error(d, params(), gcp.pod(), UNAVAILABLE, WITHIN)
    assert "STS" in msg and "attempts)" in msg, msg
    assert 1 < auth_proxy.count("/v1/token") <= 4
    auth_proxy.clear()
    out, _ = timed_mount(d, params(), gcp.pod())
    assert out == GOOD


def test_sts_throttled_once_is_retried_within_the_budget(start_daemon, gcp, auth_proxy):
    d = start(start_daemon, gcp, auth_proxy)
    auth_proxy.add("/v1/token", "status", status=429, times=2, retry_after="1")
    out, elapsed = timed_mount(d, params(), gcp.pod())
    assert out == GOOD and elapsed < TIMEOUT


@pytest.mark.parametrize("action", ["garbled", "truncate", "reset"])
def test_sts_garbled_or_cut_answer_is_a_clean_error(start_daemon, gcp, auth_proxy, action):
    d = start(start_daemon, gcp, auth_proxy)
    auth_proxy.add("/v1/token", action)
    msg = expect_error(d, params(), gcp.pod(), UNAVAILABLE, WITHIN)
    assert "STS" in msg, msg


def test_sts_refused_connection_is_unavailable(start_daemon, gcp, auth_proxy):
    sts = f"http://127.0.0.1:{closed_port()}/v1/token"
    d = start_daemon(mount_timeout=TIMEOUT, backends={"gcp": gcp.settings(sts_endpoint=sts)})
    msg = expect_error(d, params(), gcp.pod(), UNAVAILABLE, WITHIN)
    assert "STS endpoint could not be reached" in msg and "(after 4 attempts)" in msg, msg


def test_iam_credentials_outage_is_unavailable_not_permission_denied(start_daemon, gcp, auth_proxy):
    gcp.auth.impersonation[GSA] = {POD_PRINCIPAL}
    d = start(start_daemon, gcp, auth_proxy)
    auth_proxy.add("/v1/projects/-/serviceAccounts/", "status", status=503)
    p = {**params("db"), "gcpServiceAccount": GSA}
    msg = expect_error(d, p, gcp.pod(), UNAVAILABLE, WITHIN)
    assert "IAM Credentials" in msg and "attempts)" in msg, msg


# --- isolation and hygiene ---------------------------------------------------------------------


def test_bulkhead_a_hung_secret_manager_does_not_slow_sealed_or_azure_mounts(
    start_daemon, gcp, auth_proxy, azure: AzureEnv, node_key: NodeKey
):
    """24 GCP Mounts hang (more than the GCP pool's 16 workers) while other pods mount."""
    vault = azure.vault()
    azure.fake.add_secret(vault, "db", "azure-value")
    backends = {"gcp": settings(gcp, auth_proxy), "azure": azure.settings()}
    d = start_daemon(mount_timeout=3.0, backends=backends, shared_reads=False)  # each read reaches the hang
    az_params = spc(vault, [{"objectName": "db", "objectType": "secret"}])
    assert timed_mount(d, az_params, azure.pod())[0] == {"db": b"azure-value"}  # warm: one token
    assert timed_mount(d, params(), gcp.pod())[0] == GOOD  # warm: the token is cached
    gcp.sm.fail_all = "hang"
    hanging = 24
    with ThreadPoolExecutor(hanging) as pool:
        stuck = [pool.submit(timed_mount, d, params("db"), gcp.pod()) for _ in range(hanging)]
        deadline = time.monotonic() + 2.0
        while gcp.sm.hanging < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gcp.sm.hanging >= 16, "the GCP mounts never reached the hung server"
        times: list[float] = []
        for i in range(8):
            sealed = json.dumps([{"objectName": "s", "sealed": node_key.seal(b"v", "ns1", "s")}])
            out, elapsed = timed_mount(d, {"objects": sealed}, Pod(namespace="ns1", name=f"sealed-{i}"))
            assert out == {"s": b"v"}
            times.append(elapsed)
            out, elapsed = timed_mount(d, az_params, azure.pod())
            assert out == {"db": b"azure-value"}, out
            times.append(elapsed)
        assert max(times) < 0.5, times
        results = [f.result() for f in stuck]
    for out, elapsed in results:
        check_error(out, elapsed, DEADLINE, 3.0 + SLACK + 0.4)


def test_no_secret_reaches_logs_errors_metrics_or_audit_in_a_fault_run(start_daemon, gcp, auth_proxy):
    port = free_port()
    d = start(start_daemon, gcp, auth_proxy, metrics_addr=f"127.0.0.1:{port}")
    errors: list[str] = []
    jwts: list[str] = []

    def run(fault: Any = None, rule: tuple[str, str, dict[str, Any]] | None = None) -> None:
        gcp.sm.fail_all = fault
        auth_proxy.clear()
        if rule is not None:
            auth_proxy.add(rule[0], rule[1], **rule[2])
        pod = replace(gcp.pod(), uid=f"uid-{len(errors)}")  # its own identity: a fresh exchange
        jwts.append(next(iter(pod.tokens.values())))
        out, _ = timed_mount(d, params("db", "cfg", "yml"), pod)
        errors.append(describe(out))

    run()
    run(grpc.StatusCode.UNAVAILABLE)
    run(grpc.StatusCode.INTERNAL)
    run("garbled")
    run("truncated")
    run("no_payload")
    run("hang")
    run(rule=("/v1/token", "garbled", {}))
    run(rule=("/v1/token", "status", {"status": 503}))
    run(rule=("/v1/token", "truncate", {}))
    assert len([e for e in errors if e]) >= 9, errors
    metrics = scrape(port)
    assert "keygate_backend_errors_total" in metrics
    assert len(d.audit_records()) == 10
    signatures = [jwt.split(".")[2] for jwt in jwts]
    values = [SECRET_VALUE.decode(), "pw-json-9931", "yaml-key-7781"]
    assert_clean(d, errors, metrics, [*values, *jwts, *signatures, *gcp.principals.tokens()])
