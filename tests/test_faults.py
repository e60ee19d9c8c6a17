"""Backend faults: every Mount ends within its deadline with a clean error and nothing partial,
other pods are unaffected, and no secret leaks into logs, errors, metrics or audit records.

The real Vault backend (hvac over HTTP) is pointed at a local server that misbehaves on purpose.
"""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest

from provider.driver_client import DriverClient, Pod, mount_request
from tests.fault_server import closed_port, fault_server, wait_until
from tests.ops_helpers import free_port, http_get

TIMEOUT = 2.0
POD = Pod(
    namespace="shop", name="cart-0", service_account="cart", tokens={"vault": "header.payload.signature"}
)
SECRET = b"fault-run-secret-7c1d"


def vault_spc(address: str, paths: tuple[str, ...] = ("secret/data/app",)) -> dict[str, str]:
    objects = [{"objectName": f"o{i}", "secretPath": p, "secretKey": "password"} for i, p in enumerate(paths)]
    return {"vaultAddress": address, "roleName": "app", "objects": json.dumps(objects)}


def outcome(d, params, pod=POD) -> tuple[grpc.StatusCode | None, str, float]:
    start = time.perf_counter()
    try:
        resp = d.client.mount(mount_request("spc", params, pod), timeout=30)
    except grpc.RpcError as err:
        return err.code(), err.details() or "", time.perf_counter() - start
    assert resp.files, "a successful mount returns every file"
    return None, "", time.perf_counter() - start


@pytest.fixture
def faulty(start_daemon):
    return lambda **kw: start_daemon(mount_timeout=TIMEOUT, **kw)


@pytest.mark.parametrize(
    ("mode", "kwargs", "status", "fragment"),
    [
        ("blackhole", {}, grpc.StatusCode.DEADLINE_EXCEEDED, "[DeadlineExceeded]"),
        ("slowloris", {"trickle": 0.2}, grpc.StatusCode.DEADLINE_EXCEEDED, "[DeadlineExceeded]"),
        ("status", {"status": 429}, grpc.StatusCode.UNAVAILABLE, "answered 429"),
        ("status", {"status": 503}, grpc.StatusCode.UNAVAILABLE, "answered 503"),
        ("status", {"status": 500}, grpc.StatusCode.UNAVAILABLE, "answered 500"),
        ("garbled", {}, grpc.StatusCode.UNAUTHENTICATED, "refused the pod's login"),
    ],
    ids=["blackhole", "slowloris", "429-storm", "503-storm", "500-storm", "garbled-json"],
)
def test_faults_end_within_the_deadline_with_a_clean_error(faulty, mode, kwargs, status, fragment):
    d = faulty()
    with fault_server(mode, **kwargs) as server:
        code, message, elapsed = outcome(d, vault_spc(server.url))
    assert code == status, message
    assert fragment in message and "Traceback" not in message
    assert elapsed < TIMEOUT + 1.0
    if mode == "status":
        assert 1 < server.requests <= 4, "retries are bounded"


def test_connection_refused_is_quick_and_clean(faulty):
    d = faulty()
    code, message, elapsed = outcome(d, vault_spc(f"http://127.0.0.1:{closed_port()}"))
    assert code == grpc.StatusCode.UNAVAILABLE and "unreachable" in message
    assert elapsed < TIMEOUT + 1.0


def test_throttling_that_clears_within_the_retry_budget_succeeds(faulty):
    d = faulty()
    with fault_server("status", status=429, fail_first=2) as server:
        code, message, _ = outcome(d, vault_spc(server.url))
    assert code is None, message
    assert server.requests >= 3


def test_partial_failure_across_objects_returns_nothing(faulty, node_key):
    d = faulty()
    with fault_server("healthy", status=403, fail_first=0, fail_path="forbidden") as vault:
        params = vault_spc(vault.url, ("secret/data/app", "secret/data/forbidden"))
        params["objects"] = json.dumps(
            [
                *json.loads(params["objects"]),
                {"objectName": "ok", "backend": "sealed", "sealed": node_key.seal(SECRET, "shop", "ok")},
            ]
        )
        code, message, _ = outcome(d, params)
        assert code == grpc.StatusCode.PERMISSION_DENIED, message
        assert "secret/data/forbidden" in message
        healthy = vault_spc(vault.url, ("secret/data/app",))
        assert outcome(d, healthy)[0] is None, "the same backend serves the readable path"


def test_bulkhead_other_pods_are_unaffected_by_a_hanging_backend(faulty, node_key):
    d = faulty()
    sealed = {"objects": json.dumps([{"objectName": "pw", "sealed": node_key.seal(SECRET, "web", "pw")}])}
    web = Pod(namespace="web", name="web-0", service_account="web")
    with fault_server("blackhole") as hole:
        results: list[grpc.StatusCode | None] = []

        def hang(i: int) -> None:
            pod = Pod(
                namespace="shop",
                name=f"cart-{i}",
                uid=f"uid-{i}",
                service_account="cart",
                tokens={"vault": f"header.payload{i}.signature"},
            )
            with DriverClient(d.config.socket) as client:
                try:
                    client.mount(mount_request("spc", vault_spc(hole.url), pod), timeout=30)
                    results.append(None)
                except grpc.RpcError as err:
                    results.append(err.code())

        threads = [threading.Thread(target=hang, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        wait_until(lambda: hole.requests >= 8)
        latencies = []
        for _ in range(20):
            start = time.perf_counter()
            resp = d.client.mount(mount_request("spc", sealed, web))
            latencies.append(time.perf_counter() - start)
            assert resp.files[0].contents == SECRET
        for t in threads:
            t.join(20)
    assert max(latencies) < 0.5, latencies
    assert results == [grpc.StatusCode.DEADLINE_EXCEEDED] * 24


def test_no_secret_anywhere_after_a_fault_run(start_daemon, node_key):
    port = free_port()
    d = start_daemon(mount_timeout=TIMEOUT, metrics_addr=f"127.0.0.1:{port}")
    sealed_value = node_key.seal(SECRET, "shop", "pw")
    errors = []
    with fault_server("status", status=500) as broken, fault_server("blackhole") as hole:
        for address in (broken.url, hole.url, f"http://127.0.0.1:{closed_port()}"):
            params = vault_spc(address)
            params["objects"] = json.dumps(
                [
                    *json.loads(params["objects"]),
                    {"objectName": "pw", "backend": "sealed", "sealed": sealed_value},
                ]
            )
            code, message, _ = outcome(d, params)
            assert code is not None
            errors.append(message)
        ok = d.client.mount(
            mount_request("spc", {"objects": json.dumps([{"objectName": "pw", "sealed": sealed_value}])}, POD)
        )
        assert ok.files[0].contents == SECRET
    scrape = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    outputs = [*errors, d.log_text(), d.audit_text(), scrape]
    for text in outputs:
        assert SECRET.decode() not in text
        assert POD.tokens["vault"] not in text
    assert '"decision"' in d.audit_text()
