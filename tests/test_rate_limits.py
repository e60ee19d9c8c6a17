"""Backend rate limits: one token bucket per endpoint shared by every Mount, Retry-After honoured.

The bucket itself is checked on a manual clock (exact waits, no timing). Through real Mounts,
the real boto3 talks to moto behind a :class:`tests.fault_server.FaultProxy`, which counts and
time-stamps what reaches the server: a limited burst sends no more than the bucket allows, a
429 with Retry-After holds every Mount back instead of failing them, and a wait that would pass
the deadline fails at once with a clear message.
"""
# ruff: noqa: F811  (the fixtures of tests.test_aws are imported by name)

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import grpc
import pytest

from provider import metrics
from provider.config import load
from provider.errors import KeygateError
from providers.common.rate_limit import MAX_RETRY_AFTER, RateLimits, TokenBucket, parse_retry_after
from tests.fault_checks import SLACK, UNAVAILABLE, expect_error, timed_mount
from tests.fault_server import FaultProxy
from tests.test_aws import admin, moto, moto_url, pod, sa_token, spc  # noqa: F401

GET = "secretsmanager.GetSecretValue"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# --- the bucket on a manual clock ------------------------------------------------------------


def test_bucket_lets_the_burst_through_then_queues_at_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    waits = [bucket.reserve(limit=10) for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])
    clock.now += 1.0  # one second refills 10 tokens, minus the 3 owed, capped at the burst
    assert [bucket.reserve(limit=10) for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_a_reservation_past_the_limit_takes_nothing():
    clock = Clock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    assert bucket.reserve(limit=1) == 0
    assert bucket.reserve(limit=0.2) is None  # would be 0.25 s away
    assert bucket.reserve(limit=1) == pytest.approx(0.25)  # the refused call left its place free


def test_rate_r_admits_about_r_per_second_over_a_long_run():
    clock = Clock()
    bucket = TokenBucket(rate=20, burst=5, clock=clock)
    admitted = 0
    for _ in range(1000):  # 10 s in 10 ms steps, a caller every step
        if bucket.reserve(limit=0) is not None:
            admitted += 1
        clock.now += 0.01
    assert 200 <= admitted <= 200 + 5


def test_pause_holds_everyone_then_restarts_empty():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    bucket.pause(2.0)
    assert bucket.held() == pytest.approx(2.0)
    assert bucket.reserve(limit=10) == pytest.approx(2.1)  # empty after the pause, then the rate
    assert bucket.reserve(limit=10) == pytest.approx(2.2)
    clock.now += 2.5
    assert bucket.held() == 0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 7 ", 7.0),
        ("999999", MAX_RETRY_AFTER),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
        ("-1", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("1" * 100, None),
    ],
)
def test_retry_after_header_forms(header, seconds):
    assert parse_retry_after(header, now=lambda: 1445412480.0 + 60) == seconds


def test_an_http_date_in_the_future_counts_from_now():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412480.0 - 30) == 30.0


def test_buckets_are_per_endpoint_and_bounded():
    limits = RateLimits("aws", rate=1, burst=1)
    first = limits.gate(("secretsmanager", "us-east-1", ""))
    assert limits.gate(("secretsmanager", "us-east-1", "")).bucket is first.bucket
    assert limits.gate(("ssm", "us-east-1", "")).bucket is not first.bucket
    huge = limits.gate("x" * 100_000)  # an endpoint too big to keep shares the overflow bucket
    assert huge.bucket is limits.gate("y" * 100_000).bucket
    for i in range(3000):
        limits.gate(f"https://vault-{i}.example")
    assert len(limits) <= 1024


def test_rate_options_reach_every_backend_and_are_checked():
    config = load(None, {"KEYGATE_AWS_RATE": "7.5", "KEYGATE_AWS_BURST": "3"})
    runtime = config.backend_settings()["aws"]["runtime"]
    assert runtime["rate"] == 7.5 and runtime["burst"] == 3
    assert config.backend_settings()["vault"]["runtime"]["rate"] == 1000.0
    with pytest.raises(KeygateError, match="--gcp-burst"):
        load(None, {"KEYGATE_GCP_BURST": "0"})
    with pytest.raises(KeygateError, match="--vault-rate"):
        load(None, {"KEYGATE_VAULT_RATE": "0"})


# --- through real Mounts: boto3 -> FaultProxy -> moto ----------------------------------------


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    server = FaultProxy(moto)
    try:
        yield server
    finally:
        server.stop()


def seed(moto: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    names = [f"rl-{tag}/s{i}" for i in range(count)]
    sm = admin(moto, "secretsmanager")
    for name in names:
        sm.create_secret(Name=name, SecretString=f"value-of-{name}")
    return names


def objects(names: list[str]) -> dict[str, str]:
    return spc(
        [
            {"objectName": n, "objectType": "secretsmanager", "objectAlias": f"f{i}"}
            for i, n in enumerate(names)
        ]
    )


def start(start_daemon: Any, proxy: FaultProxy, **kw: Any) -> Any:
    return start_daemon(backends={"aws": {"endpoint_url": proxy.address}}, shared_reads=False, **kw)


def test_a_limited_burst_sends_at_most_burst_plus_rate_times_the_deadline(start_daemon, moto, proxy, pod):
    names = seed(moto, 30)
    d = start(start_daemon, proxy, aws_rate=10.0, aws_burst=2, mount_timeout=1.0)
    out, elapsed = timed_mount(d, objects(names), pod)
    assert isinstance(out, grpc.RpcError), sorted(out)
    assert out.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, out.details()
    assert "rate limit" in out.details() and "--aws-rate" in out.details(), out.details()
    assert elapsed < 1.0 + SLACK
    assert proxy.count(GET) <= 2 + 10 * 1.0  # burst + rate x deadline, never the whole burst of 30


def test_a_burst_within_the_budget_is_spread_out_not_refused(start_daemon, moto, proxy, pod):
    names = seed(moto, 8)
    d = start(start_daemon, proxy, aws_rate=20.0, aws_burst=2, mount_timeout=5.0)
    timed_mount(d, objects(names[:1]), pod)  # credentials and client built, so reads start at once
    time.sleep(0.2)  # the bucket refills to its burst
    proxy.clear()
    waited = sample("keygate_backend_rate_limit_wait_seconds_sum", backend="aws")
    out, _ = timed_mount(d, objects(names), pod)
    assert out == {f"f{i}": f"value-of-{n}".encode() for i, n in enumerate(names)}
    assert proxy.count(GET) == 8
    gets = sorted(t for t, route in proxy.arrivals if route == GET)
    assert gets[-1] - gets[0] >= (8 - 2) / 20 * 0.9  # the 6 beyond the burst came at the rate
    assert sample("keygate_backend_rate_limit_wait_seconds_sum", backend="aws") - waited >= 0.9 * (
        sum(k / 20 for k in range(1, 7))
    )


def test_429_with_retry_after_slows_every_mount_down_instead_of_failing(start_daemon, moto, proxy, pod):
    names = seed(moto, 2)
    d = start(start_daemon, proxy, aws_rate=5.0, aws_burst=1, mount_timeout=8.0)
    timed_mount(d, objects(names[:1]), pod)  # credentials and client built, so reads start at once
    time.sleep(0.3)  # the bucket refills
    proxy.clear()
    proxy.add(GET, "status", status=429, times=1, retry_after="1")
    throttled = sample("keygate_backend_throttled_total", backend="aws")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: timed_mount(d, objects(names), pod), range(3)))
    for out, _ in results:
        assert out == {"f0": f"value-of-{names[0]}".encode(), "f1": f"value-of-{names[1]}".encode()}, out
    assert proxy.count(GET) == 6 + 1  # every object once, the throttled one once more
    gets = sorted(t for t, route in proxy.arrivals if route == GET)
    first = gets[0]  # the throttled request (burst 1: nothing went before it)
    # While the endpoint's pause holds nobody is let through (one may have left before the
    # 429 arrived back: requests are 0.2 s apart).
    assert sum(1 for t in gets[1:] if t < first + 0.9) <= 1, [round(t - first, 2) for t in gets]
    assert sample("keygate_backend_throttled_total", backend="aws") - throttled == 1


def test_retry_after_beyond_the_deadline_fails_at_once(start_daemon, moto, proxy, pod):
    names = seed(moto, 1)
    d = start(start_daemon, proxy, mount_timeout=3.0)
    proxy.add(GET, "status", status=429, retry_after="30")
    msg = expect_error(d, objects(names), pod, UNAVAILABLE, within=1.0)
    assert "Retry-After" in msg and "30s" in msg and "throttled by AWS" in msg, msg
    assert proxy.count(GET) == 1


# --- Vault: the stand-in answers 429 with Retry-After ------------------------------------------


@contextlib.contextmanager
def throttled_vault(start_daemon, value: str, *, times: int, retry_after: str, mount_timeout: float):
    """A Vault stand-in answering 429 with ``retry_after`` to the first ``times`` reads of one
    secret, a daemon, and a Mount of it: yields (files, elapsed, read arrival times)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.fault_server import FaultVault
    from tests.vault_fixtures import Issuer

    server = FaultVault(secrets={"secret/app/db": {"password": value}})
    try:
        server.add("secret/data/app/db", "status", status=429, times=times, retry_after=retry_after)
        d = start_daemon(mount_timeout=mount_timeout)
        issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        params = {
            "vaultAddress": server.address,
            "roleName": "app",
            "vaultAuthMethod": "jwt",
            "objects": '[{"objectName": "pw", "secretPath": "secret/data/app/db", "secretKey": "password"}]',
        }
        out, elapsed = timed_mount(d, params, issuer.pod())
        yield out, elapsed, sorted(t for t, route in server.arrivals if route == "secret/data/app/db")
    finally:
        server.release()
        server.stop()


def test_vault_429_with_retry_after_is_waited_out_and_counted(start_daemon):
    throttled = sample("keygate_backend_throttled_total", backend="vault")
    with throttled_vault(start_daemon, "vault-rl-value", times=1, retry_after="1", mount_timeout=5.0) as (
        out,
        elapsed,
        reads,
    ):
        assert out == {"pw": b"vault-rl-value"}
        assert elapsed >= 0.9  # the Retry-After was honoured, not just the usual short backoff
        assert len(reads) == 2 and reads[1] - reads[0] >= 0.9
        assert sample("keygate_backend_throttled_total", backend="vault") - throttled == 1


def test_a_retry_after_of_zero_is_taken_as_a_second(start_daemon):
    """OpenBao's rate-limit quota rounds Retry-After down and answers "0" while it still refuses:
    keygate waits a second between such answers instead of spending its attempts at once."""
    with throttled_vault(start_daemon, "vault-rl-zero", times=2, retry_after="0", mount_timeout=8.0) as (
        out,
        _,
        reads,
    ):
        assert out == {"pw": b"vault-rl-zero"}
        assert len(reads) == 3 and all(b - a >= 0.9 for a, b in pairwise(reads)), reads
