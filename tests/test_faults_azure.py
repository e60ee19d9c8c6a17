"""Backend faults through real Mounts: the real Azure SDK against a misbehaving Key Vault / Entra ID.

The daemon's Azure backend (azure-keyvault + azure-identity, workload identity) reaches
``tests.azure_fake.FakeAzure`` through its CONNECT proxy; ``FakeAzure.chaos`` makes the vault
(``/secrets/<name>``) or the Entra token endpoint misbehave. Every failing Mount must end within
the mount deadline with a keygate-coded status, return no files and leak no secret.
"""
# ruff: noqa: F811  (the fixtures of tests.test_azure / tests.test_gcp are imported by name)

from __future__ import annotations

import json
import time
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
from tests.fault_server import closed_port
from tests.test_azure import TENANT, AzureEnv, azure, spc  # noqa: F401
from tests.test_gcp import GCP, gcp, secrets_param  # noqa: F401
from tests.vault_fixtures import free_port

TIMEOUT = 1.5
WITHIN = TIMEOUT + SLACK
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
DB = "db-SECRET-az-41c9e2"
API = "api-OTHER-az-77d0b3"
EXTRA = "extra-az-0b61"


def seeded(azure: AzureEnv) -> str:
    vault = azure.vault()
    azure.fake.add_secret(vault, "db", DB)
    azure.fake.add_secret(vault, "api", API)
    azure.fake.add_secret(vault, "extra", EXTRA)
    return vault


def params(vault: str, names: tuple[str, ...] = ("db", "api")) -> dict[str, str]:
    return spc(vault, [{"objectName": n, "objectType": "secret"} for n in names])


def start(start_daemon: Any, azure: AzureEnv, **kw: Any) -> Any:
    return start_daemon(
        mount_timeout=kw.pop("mount_timeout", TIMEOUT), backends={"azure": azure.settings()}, **kw
    )


GOOD = {"db": DB.encode(), "api": API.encode()}


def test_healthy_fake_serves_and_exchanges_the_token_once(start_daemon, azure):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    for _ in range(3):
        out, _ = timed_mount(d, params(vault), azure.pod())
        assert out == GOOD
    assert azure.fake.token_requests == 1


@pytest.mark.parametrize("where", ["/secrets/api", TOKEN_PATH])
def test_black_hole_ends_at_the_deadline_then_recovers(start_daemon, azure, where):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add(where, "blackhole")
    msg = expect_error(d, params(vault), azure.pod(), DEADLINE, WITHIN)
    assert f"within {TIMEOUT:g}s" in msg
    azure.fake.chaos.clear()
    out, elapsed = timed_mount(d, params(vault), azure.pod())
    assert out == GOOD and elapsed < 1.0, (out, elapsed)


@pytest.mark.parametrize(
    ("where", "action"), [("/secrets/db", "trickle_body"), (TOKEN_PATH, "trickle_headers")]
)
def test_slow_loris_is_cut_at_the_deadline(start_daemon, azure, where, action):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add(where, action, interval=0.05)
    expect_error(d, params(vault), azure.pod(), DEADLINE, WITHIN)


def test_throttling_with_retry_after_is_retried_within_the_budget(start_daemon, azure):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add("/secrets/db", "status", status=429, times=2, retry_after="0.2")
    azure.fake.chaos.add(TOKEN_PATH, "status", status=429, times=1, retry_after="0.2")
    out, elapsed = timed_mount(d, params(vault), azure.pod())
    assert out == GOOD and elapsed < TIMEOUT, (out, elapsed)
    assert azure.fake.chaos.count("/secrets/db") >= 3


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, "30"), (500, None), (502, None), (503, "5"), (504, None)]
)
def test_endless_throttling_or_5xx_gives_up_after_bounded_attempts(
    start_daemon,
    azure,
    status,
    retry_after,
):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add("/secrets/db", "status", status=status, retry_after=retry_after)
    msg = expect_error(d, params(vault), azure.pod(), UNAVAILABLE, WITHIN)
    assert f"Key Vault answered {status}" in msg and "attempts)" in msg, msg
    if retry_after is not None:  # asks for longer than the deadline: fails at once
        assert "Retry-After" in msg and azure.fake.chaos.count("/secrets/db") == 1, msg
    else:
        assert 1 < azure.fake.chaos.count("/secrets/db") <= 5


@pytest.mark.parametrize("status", [400, 409, 501])
def test_a_refusal_is_not_retried(start_daemon, azure, status):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add("/secrets/db", "status", status=status)
    msg = expect_error(d, params(vault, ("db",)), azure.pod(), UNAVAILABLE, WITHIN)
    assert f"Key Vault answered {status}" in msg and "attempts" not in msg, msg
    assert azure.fake.chaos.count("/secrets/db") == 1


@pytest.mark.parametrize("status", [500, 503])
def test_entra_outage_is_retried_then_reported(start_daemon, azure, status):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add(TOKEN_PATH, "status", status=status)
    msg = expect_error(d, params(vault), azure.pod(), UNAVAILABLE, WITHIN)
    assert "attempts)" in msg, msg
    azure.fake.chaos.clear()
    out, _ = timed_mount(d, params(vault), azure.pod())
    assert out == GOOD


def test_connection_refused_fails_fast_after_bounded_retries(start_daemon, azure):
    vault = seeded(azure)
    settings = azure.settings(proxy=f"http://127.0.0.1:{closed_port()}")
    d = start_daemon(mount_timeout=TIMEOUT, backends={"azure": settings})
    msg = expect_error(d, params(vault), azure.pod(), UNAVAILABLE, WITHIN)
    assert "cannot reach Key Vault" in msg and "(after 4 attempts)" in msg, msg


@pytest.mark.parametrize(
    ("where", "action", "words"),
    [
        ("/secrets/db", "garbled", "Key Vault answered 200 with a body that is not JSON"),
        ("/secrets/db", "truncate", "broke off its answer"),
        ("/secrets/db", "reset", "cannot reach Key Vault"),
        (TOKEN_PATH, "garbled", "Entra ID answered 200 with a body that is not JSON"),
        (TOKEN_PATH, "truncate", "broke off its answer"),
        (TOKEN_PATH, "reset", "cannot reach Key Vault"),
    ],
)
def test_truncated_or_garbled_answers_are_clean_errors(start_daemon, azure, where, action, words):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    azure.fake.chaos.add(where, action)
    msg = expect_error(d, params(vault), azure.pod(), UNAVAILABLE, WITHIN)
    assert words in msg and "(after 4 attempts)" in msg, msg
    assert DB not in msg and API not in msg


def test_one_failing_object_fails_the_whole_mount_and_returns_nothing(
    start_daemon,
    azure,
):
    vault = seeded(azure)
    d = start(start_daemon, azure)
    names = ("db", "api", "extra")
    azure.fake.chaos.add("/secrets/extra", "status", status=503)
    out, elapsed = timed_mount(d, params(vault, names), azure.pod())
    msg = check_error(out, elapsed, UNAVAILABLE, WITHIN)
    assert "'extra'" in msg and DB not in msg
    assert azure.fake.chaos.count("/secrets/db") >= 1 and azure.fake.chaos.count("/secrets/api") >= 1
    azure.fake.chaos.clear()
    out, _ = timed_mount(d, params(vault, names), azure.pod())
    assert isinstance(out, dict) and sorted(out) == ["api", "db", "extra"]


def test_bulkhead_a_black_holed_vault_does_not_slow_sealed_or_gcp_mounts(
    start_daemon,
    azure,
    gcp: GCP,
    node_key: NodeKey,
):
    """24 Azure Mounts hang (more than the Azure pool's 16 workers) while other pods mount."""
    vault = seeded(azure)
    d = start_daemon(mount_timeout=3.0, backends={"azure": azure.settings(), "gcp": gcp.settings()})
    gcp_params = secrets_param({"resourceName": "projects/proj/secrets/db/versions/2", "fileName": "db"})
    gcp_pod = gcp.pod()
    assert isinstance(timed_mount(d, gcp_params, gcp_pod)[0], dict)  # warm: one STS exchange
    out, _ = timed_mount(d, params(vault), azure.pod())
    assert out == GOOD  # warm: the token is cached, the hang is on the vault itself
    azure.fake.chaos.add("/secrets/db", "blackhole")
    hanging = 24
    with ThreadPoolExecutor(hanging) as pool:
        stuck = [pool.submit(timed_mount, d, params(vault), azure.pod()) for _ in range(hanging)]
        deadline = time.monotonic() + 2.0
        while azure.fake.chaos.count("/secrets/db") < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert azure.fake.chaos.count("/secrets/db") >= 16, "the Azure mounts never reached the hole"
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


def test_no_secret_reaches_logs_errors_metrics_or_audit_in_a_fault_run(start_daemon, azure):
    vault = seeded(azure)
    port = free_port()
    d = start(start_daemon, azure, metrics_addr=f"127.0.0.1:{port}")
    errors: list[str] = []
    jwts: list[str] = []
    chaos = azure.fake.chaos

    def run(*rules: tuple[str, str, dict[str, Any]], names: tuple[str, ...] = ("db", "api")) -> None:
        chaos.clear()
        for where, action, kw in rules:
            chaos.add(where, action, **kw)
        pod = replace(azure.pod(), name=f"app-{len(errors)}")  # its own credential: a fresh exchange
        jwts.append(next(iter(pod.tokens.values())))
        out, _ = timed_mount(d, params(vault, names), pod)
        errors.append(describe(out))

    run()
    run(("/secrets/db", "status", {"status": 429, "times": 2, "retry_after": "0"}))
    run(("/secrets/db", "truncate", {}))
    run(("/secrets/db", "garbled", {}))
    run(("/secrets/api", "trickle_body", {"interval": 0.01}))
    run(("/secrets/db", "status", {"status": 503}))
    run(("/secrets/db", "blackhole", {}))
    run(names=("db", "missing"))
    run((TOKEN_PATH, "truncate", {}))
    run((TOKEN_PATH, "status", {"status": 503}))
    assert len([e for e in errors if e]) >= 8, errors
    metrics = scrape(port)
    assert "keygate_backend_errors_total" in metrics
    assert len(d.audit_records()) == 10
    tokens = list(azure.fake.access_tokens)
    signatures = [jwt.split(".")[2] for jwt in jwts]
    assert_clean(d, errors, metrics, [DB, API, EXTRA, *jwts, *signatures, *tokens])
