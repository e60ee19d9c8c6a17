"""Metrics, health and logs of a real daemon, observed the way Prometheus and the kubelet do."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keygate_dev.driver_client import Pod, mount_request
from keygate_dev.embedded import daemon_thread
from provider import logs, metrics
from provider.config import Config, load
from provider.errors import KeygateError
from provider.logs import current_request_id
from tests.ops_helpers import ProbeBackend, free_port, http_get, register_probe, samples, value

SECRET = b"s3cr3t-value-that-must-never-leak"


def _ops(start_daemon):
    port = free_port()
    d = start_daemon(metrics_addr=f"127.0.0.1:{port}")
    return d, f"http://127.0.0.1:{port}"


def test_metrics_count_real_mounts_by_outcome_code_and_backend(start_daemon, node_key):
    d, base = _ops(start_daemon)
    before = samples(http_get(base + "/metrics")[1])
    pod = Pod(namespace="shop", name="cart-5f7d9")
    good = f"- objectName: pw\n  sealed: {node_key.seal(SECRET, 'shop', 'pw')}\n"
    wrong_ns = f"- objectName: pw\n  sealed: {node_key.seal(SECRET, 'other', 'pw')}\n"
    for _ in range(2):
        d.client.mount(mount_request("spc", {"objects": good}, pod))
    with pytest.raises(grpc.RpcError) as denied:
        d.client.mount(mount_request("spc", {"objects": wrong_ns}, pod))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError):
        d.client.mount(mount_request("spc", {"objects": "- objectName: x\n  sealed: nope\n"}, pod))

    status, text = http_get(base + "/metrics")
    assert status == 200
    after = samples(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("keygate_mounts_total", outcome="ok", code="") == 2
    assert delta("keygate_mounts_total", outcome="error", code="PermissionDenied") == 1
    assert delta("keygate_mounts_total", outcome="error", code="InvalidSecretProviderClass") == 1
    assert delta("keygate_mount_duration_seconds_count", outcome="ok") == 2
    assert delta("keygate_mount_duration_seconds_count", outcome="error") == 2
    assert delta("keygate_backend_request_duration_seconds_count", backend="sealed", outcome="ok") == 2
    assert delta("keygate_backend_request_duration_seconds_count", backend="sealed", outcome="error") == 1
    assert delta("keygate_backend_errors_total", backend="sealed", code="PermissionDenied") == 1
    assert delta("keygate_backend_objects_total", backend="sealed") == 2
    assert value(after, "keygate_mounts_in_flight") == 0
    assert value(after, "keygate_ready") == 1
    assert value(after, "keygate_build_info", version="0.1.0") == 1
    assert value(after, "process_resident_memory_bytes") > 0
    # no content, no pod or object names in any label or value
    for needle in (SECRET.decode(), "cart-5f7d9", "shop", "'pw'", 'pw"'):
        assert needle not in text
    assert SECRET.decode() not in d.log_text()


def test_openmetrics_is_offered_to_scrapers_that_ask():
    import urllib.request

    from provider.health import OpsServer, Readiness

    ops = OpsServer("127.0.0.1:0", Readiness(), None)
    ops.start()
    try:
        host, port = ops.address
        req = urllib.request.Request(
            f"http://{host}:{port}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert resp.read().decode().rstrip().endswith("# EOF")
        assert http_get(f"http://{host}:{port}/nope")[0] == 404
    finally:
        ops.stop()


def test_in_flight_gauge_and_request_id_reach_the_backend(start_daemon):
    d, base = _ops(start_daemon)
    register_probe(d.mounter.registry)
    ProbeBackend.gate.clear()
    ProbeBackend.entered.clear()
    ProbeBackend.seen_request_ids.clear()
    params = {"objects": "- objectName: a\n  backend: probe\n  value: hello\n", "probeWait": "true"}
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(d.client.mount, mount_request("spc", params, Pod()))
        assert ProbeBackend.entered.wait(10)
        during = samples(http_get(base + "/metrics")[1])
        assert value(during, "keygate_mounts_in_flight") == 1
        ProbeBackend.gate.set()
        response = future.result(timeout=10)
    assert response.files[0].contents == b"hello"
    assert value(samples(http_get(base + "/metrics")[1]), "keygate_mounts_in_flight") == 0

    lines = [json.loads(line) for line in d.log_text().splitlines()]
    (probe_line,) = [x for x in lines if x["msg"] == "probe fetch"]
    (mount_line,) = [x for x in lines if x["msg"] == "mount" and x.get("spc") == "spc"]
    assert probe_line["request_id"] == mount_line["request_id"] == ProbeBackend.seen_request_ids[0]
    assert len(mount_line["request_id"]) == 16
    assert current_request_id() == ""


def test_record_hooks_for_attestation_and_caches_are_bounded():
    before = samples(_scrape_registry())
    metrics.record_denial("token_expired")
    metrics.record_denial("Token_Expired")
    metrics.record_denial("pod default/web-1 presented a token for pod default/web-2")
    metrics.record_cache_hit("vault", "token")
    metrics.record_cache_miss("vault", "token")
    after = samples(_scrape_registry())
    assert (
        value(after, "keygate_attestation_denials_total", reason="token_expired")
        - value(before, "keygate_attestation_denials_total", reason="token_expired")
        == 2
    )
    assert (
        value(after, "keygate_attestation_denials_total", reason="other")
        - value(before, "keygate_attestation_denials_total", reason="other")
        == 1
    )
    assert value(after, "keygate_cache_hits_total", backend="vault", cache="token") >= 1
    assert value(after, "keygate_cache_misses_total", backend="vault", cache="token") >= 1
    text = _scrape_registry()
    assert "web-1" not in text and "web-2" not in text
    saved = set(metrics._seen.get("reason", set()))
    try:
        for i in range(metrics.MAX_LABEL_VALUES + 5):
            metrics.record_denial(f"reason_{i}")
        reasons = {
            dict(labels)["reason"]
            for (name, labels) in samples(_scrape_registry())
            if name == "keygate_attestation_denials_total"
        }
        assert len(reasons) <= metrics.MAX_LABEL_VALUES + 1
    finally:
        # other tests (attestation) must still get their own reason labels
        metrics._seen["reason"] = saved
        for i in range(metrics.MAX_LABEL_VALUES + 5):
            with contextlib.suppress(KeyError):
                metrics.ATTESTATION_DENIALS.remove(f"reason_{i}")


def _scrape_registry() -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.REGISTRY).decode()


def test_http_health_and_readiness_with_a_policy_hook(start_daemon):
    d, base = _ops(start_daemon)
    assert http_get(base + "/healthz") == (200, "ok\n")
    status, body = http_get(base + "/readyz")
    assert status == 200
    ready = json.loads(body)
    assert ready["ready"] is True
    assert set(ready["conditions"]) == {"socket", "keys"}

    d.mounter.readiness.set("policy", False, "release policy not loaded yet")
    status, body = http_get(base + "/readyz")
    assert status == 503
    assert json.loads(body)["conditions"]["policy"] == {
        "ok": False,
        "detail": "release policy not loaded yet",
    }
    assert value(samples(http_get(base + "/metrics")[1]), "keygate_ready") == 0
    d.mounter.readiness.set("policy", True)
    assert http_get(base + "/readyz")[0] == 200


def test_grpc_health_on_the_provider_socket(start_daemon):
    d = start_daemon()
    with grpc.insecure_channel(f"unix:{d.config.socket}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "v1alpha1.CSIDriverProvider"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_draining_turns_health_not_serving_and_finishes_in_flight_mounts(short_tmp, node_key):
    port = free_port()
    config = Config(
        socket=str(short_tmp / "drain.sock"),
        sealed_key=(str(node_key.path),),
        metrics_addr=f"127.0.0.1:{port}",
        grace_period=10,
        insecure_skip_attestation=True,
    )
    base = f"http://127.0.0.1:{port}"
    ProbeBackend.gate.clear()
    ProbeBackend.entered.clear()
    params = {"objects": "- objectName: a\n  backend: probe\n  value: v\n", "probeWait": "true"}
    cm = daemon_thread(config)
    mounter = cm.__enter__()
    register_probe(mounter.registry)
    from keygate_dev.driver_client import DriverClient

    with ThreadPoolExecutor(3) as pool, DriverClient(config.socket) as client:
        channel = grpc.insecure_channel(f"unix:{config.socket}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        in_flight = pool.submit(client.mount, mount_request("spc", params, Pod()))
        assert ProbeBackend.entered.wait(10)
        stopping = pool.submit(cm.__exit__, None, None, None)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        deadline = time.monotonic() + 10
        while http_get(base + "/readyz")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert json.loads(http_get(base + "/readyz")[1])["conditions"]["socket"]["detail"] == "draining"
        ProbeBackend.gate.set()
        assert in_flight.result(timeout=10).files[0].contents == b"v"
        stopping.result(timeout=15)
        channel.close()


def test_metrics_address_is_validated_and_a_busy_port_fails_start(short_tmp, node_key):
    assert load(None, {"KEYGATE_METRICS_ADDR": ""}).metrics_addr == ""
    assert load(None, {}).metrics_addr == ":8098"
    assert load(None, {"KEYGATE_METRICS_ADDR": "[::1]:9000"}).metrics_addr == "[::1]:9000"
    for bad in ("8098", "localhost:http", ":99999"):
        with pytest.raises(KeygateError, match="metrics address"):
            load(None, {"KEYGATE_METRICS_ADDR": bad})
    port = free_port()
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        config = Config(
            socket=str(short_tmp / "busy.sock"),
            sealed_key=(str(node_key.path),),
            metrics_addr=f"127.0.0.1:{port}",
            insecure_skip_attestation=True,
        )
        with pytest.raises(KeygateError, match="cannot listen for metrics"), daemon_thread(config):
            pass


def test_json_logs_have_stable_keys_and_text_logs_read_well(start_daemon, node_key):
    d = start_daemon()
    objects = f"- objectName: pw\n  sealed: {node_key.seal(SECRET, 'default', 'pw')}\n"
    d.client.mount(mount_request("spc", {"objects": objects}, Pod()))
    lines = [json.loads(line) for line in d.log_text().splitlines()]
    assert lines, "the daemon logged nothing"
    for line in lines:
        assert {"time", "level", "logger", "msg"} <= set(line)
    (mount,) = [x for x in lines if x["msg"] == "mount"]
    assert mount["outcome"] == "ok" and mount["level"] == "info"
    assert {"request_id", "duration_ms", "pod", "spc", "objects", "files"} <= set(mount)

    buffer = io.StringIO()
    logs.setup("info", "text", buffer)
    try:
        logging.getLogger("keygate.test").info("hello", extra={"request_id": "abc"})
        logging.getLogger("keygate.test").debug("hidden")
    finally:
        logs.setup("debug", "json", d.log)
    text = buffer.getvalue()
    assert "INFO" in text and "hello request_id=abc" in text and "hidden" not in text
    assert SECRET.decode() not in d.log_text()
