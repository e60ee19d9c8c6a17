"""Backend faults through real Mounts: the real Vault backend against a misbehaving server.

Every Mount here goes over the Unix socket to a daemon whose Vault backend (its aiohttp client)
talks to :class:`tests.fault_server.FaultVault` (or a port that refuses or never completes a
handshake). Each must end within ``mount_timeout`` with a clean gRPC status whose message starts
with the keygate code, and never return (or write) part of the files.
"""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keygate_dev.driver_client import DriverClient, Pod, mount_request
from tests.conftest import NodeKey, Running
from tests.csi_volume import make_volume, off_tmpfs
from tests.fault_server import FaultVault, NoAccept, closed_port
from tests.vault_fixtures import Issuer, Vault, free_port, vault  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SECRET = "fault-run-SECRET-7f3e19"
OTHER = "fault-run-OTHER-5b2a08"
TIMEOUT = 1.5
SLACK = 0.6


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture
def fault() -> Iterator[FaultVault]:
    server = FaultVault(
        secrets={
            "secret/app/db": {"password": SECRET, "user": "app"},
            "secret/app/api": {"key": OTHER},
            "secret/app/extra": {"value": "x"},
        }
    )
    try:
        yield server
    finally:
        server.stop()


def params(address: str, objects: list[dict[str, Any]] | None = None) -> dict[str, str]:
    objects = objects or [
        {"objectName": "password", "secretPath": "secret/data/app/db", "secretKey": "password"},
        {"objectName": "api", "secretPath": "secret/data/app/api", "secretKey": "key"},
    ]
    return {
        "vaultAddress": address,
        "roleName": "app",
        "vaultAuthMethod": "jwt",
        "objects": json.dumps(objects),
    }


def timed_mount(
    d: Running, p: dict[str, str], pod: Pod, **kw: Any
) -> tuple[dict[str, bytes] | grpc.RpcError, float]:
    started = time.monotonic()
    try:
        resp = d.client.mount(mount_request("app-secrets", p, pod, **kw), timeout=30)
        out: dict[str, bytes] | grpc.RpcError = {f.path: f.contents for f in resp.files}
    except grpc.RpcError as err:
        out = err
    return out, time.monotonic() - started


def expect_error(
    d: Running, p: dict[str, str], pod: Pod, codes: set[grpc.StatusCode], within: float = TIMEOUT + SLACK
) -> str:
    """The mount fails with one of ``codes``, a keygate-coded message, in time; returns the message."""
    out, elapsed = timed_mount(d, p, pod)
    assert isinstance(out, grpc.RpcError), f"expected a failure, got files {sorted(out)}"
    assert out.code() in codes, (out.code(), out.details())
    assert out.code() != grpc.StatusCode.INTERNAL
    details = out.details() or ""
    assert details.startswith("[") and "] " in details, details
    trailers = dict(out.trailing_metadata() or ())
    assert trailers.get("keygate-error-code") == details[1 : details.index("]")]
    assert elapsed < within, f"mount took {elapsed:.2f}s, deadline {TIMEOUT}s"
    return details


def start(start_daemon: Callable[..., Running], **vault_settings: Any) -> Running:
    return start_daemon(mount_timeout=TIMEOUT, backends={"vault": vault_settings} if vault_settings else {})


DEADLINE = {grpc.StatusCode.DEADLINE_EXCEEDED}
UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE}


def test_healthy_fault_server_serves_and_logs_in_once(start_daemon, fault, issuer):
    d = start(start_daemon)
    pod = issuer.pod()
    for _ in range(3):
        out, _ = timed_mount(d, params(fault.address), pod)
        assert out == {"password": SECRET.encode(), "api": OTHER.encode()}
    assert fault.logins == 1


@pytest.mark.parametrize("where", ["auth/jwt/login", "secret/data/app/api"])
def test_black_hole_ends_at_the_deadline_and_frees_the_worker(start_daemon, fault, issuer, where):
    d = start(start_daemon)
    fault.add(where, "blackhole")
    msg = expect_error(d, params(fault.address), issuer.pod(), DEADLINE)
    assert f"within {TIMEOUT:g}s" in msg
    fault.clear()
    out, elapsed = timed_mount(d, params(fault.address), issuer.pod(name="app-1"))
    assert isinstance(out, dict) and elapsed < 0.5


def test_connect_timeout_honours_the_deadline_and_request_timeout(start_daemon, issuer):
    dead = NoAccept()
    try:
        d = start(start_daemon)
        expect_error(d, params(dead.address), issuer.pod(), DEADLINE)
        # A generous mount deadline: the short request timeout, not the deadline, must end this
        # one, even when a loaded machine stretches the retries' backoff.
        quick = start_daemon(mount_timeout=8.0, backends={"vault": {"request_timeout": 0.1}})
        msg = expect_error(quick, params(dead.address), issuer.pod(), UNAVAILABLE, within=8.0)
        assert "is unreachable while logging in" in msg and "attempts" in msg
    finally:
        dead.stop()


def test_connection_refused_fails_fast_after_bounded_retries(start_daemon, issuer):
    d = start(start_daemon)
    msg = expect_error(d, params(f"http://127.0.0.1:{closed_port()}"), issuer.pod(), UNAVAILABLE, within=1.2)
    assert "is unreachable while logging in" in msg and "(after 4 attempts)" in msg


def test_429_storm_then_success_is_retried_within_the_budget(start_daemon, fault, issuer):
    d = start(start_daemon)
    fault.add("secret/data/app/db", "status", status=429, times=2)
    fault.add("auth/jwt/login", "status", status=429, times=1)
    out, elapsed = timed_mount(d, params(fault.address), issuer.pod())
    assert out == {"password": SECRET.encode(), "api": OTHER.encode()}
    assert elapsed < TIMEOUT
    assert fault.requests["secret/data/app/db"] == 3 and fault.requests["auth/jwt/login"] == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_endless_throttling_or_5xx_gives_up_after_bounded_attempts(start_daemon, fault, issuer, status):
    d = start(start_daemon)
    fault.add("secret/data/app/db", "status", status=status)
    msg = expect_error(d, params(fault.address), issuer.pod(), UNAVAILABLE)
    assert f"answered {status} while reading 'secret/data/app/db'" in msg and "attempts)" in msg
    assert 1 < fault.requests["secret/data/app/db"] <= 4


@pytest.mark.parametrize("action", ["trickle_headers", "trickle_body"])
def test_slow_loris_is_cut_at_the_deadline(start_daemon, fault, issuer, action):
    d = start(start_daemon)
    rule = fault.add("secret/data/app/db", action, interval=0.02)
    expect_error(d, params(fault.address), issuer.pod(), DEADLINE)
    # keygate must also drop the connection (free its worker), not keep reading for ~10 s.
    deadline = time.monotonic() + 1.0
    while fault.trickling and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fault.trickling == 0 and fault.cut >= 1, "the trickled connection outlived the mount"
    assert rule.hits >= 1


@pytest.mark.parametrize(
    ("where", "action", "words"),
    [
        ("auth/jwt/login", "garbled", "answered 200 without a JSON body while logging in"),
        ("secret/data/app/db", "garbled", "answered 200 without a JSON body while reading"),
        ("auth/jwt/login", "truncate", "broke off its answer while logging in"),
        ("secret/data/app/db", "truncate", "broke off its answer while reading"),
        ("secret/data/app/db", "reset", "broke off its answer while reading"),
    ],
)
def test_truncated_or_garbled_answers_are_clean_errors(start_daemon, fault, issuer, where, action, words):
    d = start(start_daemon)
    fault.add(where, action)
    msg = expect_error(d, params(fault.address), issuer.pod(), UNAVAILABLE)
    assert words in msg, msg
    assert SECRET not in msg


def test_one_failing_path_fails_the_whole_mount_and_writes_nothing(start_daemon, fault, issuer, short_tmp):
    target = make_volume(short_tmp / "kubelet", issuer.pod().uid)
    d = start_daemon(mount_timeout=TIMEOUT, write_files=True, **off_tmpfs(short_tmp / "kubelet"))
    objects = [
        {"objectName": "password", "secretPath": "secret/data/app/db", "secretKey": "password"},
        {"objectName": "api", "secretPath": "secret/data/app/api", "secretKey": "key"},
        {"objectName": "extra", "secretPath": "secret/data/app/extra", "secretKey": "value"},
    ]
    fault.add("secret/data/app/extra", "status", status=503)
    out, elapsed = timed_mount(d, params(fault.address, objects), issuer.pod(), target_path=str(target))
    assert isinstance(out, grpc.RpcError) and out.code() == grpc.StatusCode.UNAVAILABLE
    assert "secret/data/app/extra" in (out.details() or "") and elapsed < TIMEOUT + SLACK
    assert fault.requests["secret/data/app/db"] == 1 and fault.requests["secret/data/app/api"] == 1
    assert list(target.iterdir()) == []
    fault.clear()
    out, _ = timed_mount(d, params(fault.address, objects), issuer.pod(), target_path=str(target))
    assert isinstance(out, dict) and len(out) == 3
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("..")) == [
        "api",
        "extra",
        "password",
    ]


def test_bulkhead_a_black_holed_vault_does_not_slow_other_pods(
    start_daemon, fault, issuer, node_key: NodeKey, vault: Vault
):
    """40 Mounts hang on one Vault while sealed and healthy-OpenBao Mounts of other pods run."""
    vault.root().secrets.kv.v2.create_or_update_secret("app/bulkhead", {"v": OTHER}, mount_point="secret")
    d = start_daemon(mount_timeout=3.0)
    fault.add("secret/data/app/db", "blackhole")
    hanging = 40
    bao_objects = json.dumps(
        [{"objectName": "v", "secretPath": "secret/data/app/bulkhead", "secretKey": "v"}]
    )
    bao_pod = vault.issuer.pod(name="healthy-0")
    timed_mount(d, vault.params(bao_objects), bao_pod)  # warm: one login, one TLS pool
    with ThreadPoolExecutor(hanging + 4) as pool:
        stuck = [
            pool.submit(timed_mount, d, params(fault.address), issuer.pod(name=f"stuck-{i}"))
            for i in range(hanging)
        ]
        deadline = time.monotonic() + 2.0
        while fault.requests["secret/data/app/db"] < hanging and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fault.requests["secret/data/app/db"] >= 16, "the hanging mounts never reached the black hole"
        other_times: list[float] = []
        for i in range(10):
            pod = Pod(namespace="ns1", name=f"sealed-{i}")
            sealed = json.dumps([{"objectName": "s", "sealed": node_key.seal(b"v", "ns1", "s")}])
            out, elapsed = timed_mount(d, {"objects": sealed}, pod)
            assert out == {"s": b"v"}
            other_times.append(elapsed)
            out, elapsed = timed_mount(d, vault.params(bao_objects), bao_pod)
            assert out == {"v": OTHER.encode()}, out
            other_times.append(elapsed)
        assert max(other_times) < 0.5, other_times
        results = [f.result() for f in stuck]
    for out, elapsed in results:
        assert isinstance(out, grpc.RpcError) and out.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < 3.0 + 1.0


# --- restart safety ------------------------------------------------------------------------


def serve(tmp: Path, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provider.cli",
            "serve",
            "--socket",
            str(tmp / "kg.sock"),
            "--config",
            str(config),
            "--insecure-skip-attestation",
            "--metrics-addr=",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def until_version(sock: str, proc: subprocess.Popen[bytes], limit: float = 15.0) -> float:
    """Seconds from now until the daemon at ``sock`` answers Version."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "daemon exited")
        if os.path.exists(sock):
            try:
                with DriverClient(sock) as c:
                    c.version()
                return time.monotonic() - started
            except grpc.RpcError:
                pass
        time.sleep(0.005)
    raise AssertionError("daemon did not serve Version")


def test_sigterm_during_a_burst_then_restart_serves_within_the_cold_start_target(short_tmp):
    """30 Mounts in flight at SIGTERM: the quick ones finish, the slow ones fail cleanly; no hang."""
    config = short_tmp / "config.yaml"
    config.write_text(
        "grace_period: 1.0\nmount_timeout: 10\nbackends:\n  slow:\n"
        "    class: tests.slow_backend:SlowBackend\n    delay: 0.6\n"
    )
    sock = str(short_tmp / "kg.sock")
    proc = serve(short_tmp, config)
    until_version(sock, proc)
    outcomes: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        slow = i % 2 == 1
        objects = [{"objectName": f"o{j}", "backend": "slow", "value": f"v{i}"} for j in range(3)]
        if slow:
            objects[0]["delay"] = 20
        started = time.monotonic()
        with DriverClient(sock) as c:
            try:
                resp = c.mount(mount_request("spc", {"objects": json.dumps(objects)}, Pod(name=f"p{i}")))
                assert [f.contents for f in resp.files] == [f"v{i}".encode()] * 3
                result = ("ok", "")
            except grpc.RpcError as err:
                result = (err.code().name, err.details() or "")
        with lock:
            outcomes.append((("slow" if slow else "quick"), result[0], time.monotonic() - started))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(10)
    assert proc.wait(10) == 0
    drained = time.monotonic() - signalled
    assert len(outcomes) == 30
    quick = [o for o in outcomes if o[0] == "quick"]
    slow = [o for o in outcomes if o[0] == "slow"]
    assert all(code == "ok" for _, code, _ in quick), quick
    assert all(code in ("UNAVAILABLE", "CANCELLED") for _, code, _ in slow), slow
    print(f"sigterm: {len(quick)} mounts completed, slow ones ended {sorted({c for _, c, _ in slow})}")
    assert drained < 1.0 + 1.5, f"draining took {drained:.2f}s with a 1 s grace period"
    assert not os.path.exists(sock)
    restart = serve(short_tmp, config)
    try:
        ready = until_version(sock, restart)
        print(f"restart: Version served {ready * 1000:.0f} ms after process start")
        assert ready < 3.0
        objects = json.dumps([{"objectName": "o", "backend": "slow", "value": "again", "delay": 0}])
        with DriverClient(sock) as c:
            assert c.mount(mount_request("spc", {"objects": objects}, Pod())).files[0].contents == b"again"
    finally:
        restart.send_signal(signal.SIGTERM)
        restart.wait(10)


# --- secret hygiene ------------------------------------------------------------------------


def test_no_secret_reaches_logs_errors_metrics_or_audit_in_a_fault_run(start_daemon, fault, issuer):
    port = free_port()
    d = start_daemon(mount_timeout=TIMEOUT, metrics_addr=f"127.0.0.1:{port}")
    jwts: list[str] = []
    errors: list[str] = []

    def run(*rules: tuple[str, str, dict[str, Any]], objects: list[dict[str, Any]] | None = None) -> None:
        fault.clear()
        for where, action, kw in rules:
            fault.add(where, action, **kw)
        pod = issuer.pod(name=f"app-{len(jwts)}")
        jwts.append(pod.tokens["vault"])
        out, _ = timed_mount(d, params(fault.address, objects), pod)
        if isinstance(out, grpc.RpcError):
            errors.append(f"{out.code().name} {out.details()} {out.trailing_metadata()}")

    run()
    run(("secret/data/app/db", "status", {"status": 429, "times": 2}))
    run(("secret/data/app/db", "truncate", {}))
    run(("secret/data/app/db", "garbled", {}))
    run(("secret/data/app/api", "trickle_body", {"interval": 0.01}))
    run(("secret/data/app/db", "status", {"status": 503}))
    run(("secret/data/app/db", "blackhole", {}))
    run(objects=[{"objectName": "p", "secretPath": "secret/data/app/db", "secretKey": "nope"}])
    run(("auth/jwt/login", "status", {"status": 403}))
    run(("auth/jwt/login", "garbled", {}))
    assert len(errors) >= 8, errors
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        scrape = resp.read().decode()
    assert "keygate_backend_errors_total" in scrape
    log_lines = d.log_text().splitlines()
    for line in log_lines:
        json.loads(line)
    audit = d.audit_records()
    assert len(audit) == 10
    tokens = [f"hvs.fault-token-{n}" for n in range(1, fault.logins + 1)]
    haystacks = {"log": "\n".join(log_lines), "errors": "\n".join(errors), "metrics": scrape}
    haystacks["audit"] = json.dumps(audit)
    signatures = [jwt.split(".")[2] for jwt in jwts]
    for needle in [SECRET, OTHER, *jwts, *signatures, *tokens]:
        for where, text in haystacks.items():
            assert needle not in text, f"a secret value reached the {where}"
