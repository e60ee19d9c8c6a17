"""Admission control: beyond max_inflight, Mounts are refused at once instead of queuing."""

from __future__ import annotations

import json
import threading
import time

import grpc

from keygate_dev.driver_client import DriverClient, Pod, mount_request


def test_overload_is_refused_quickly_and_others_complete(start_daemon):
    d = start_daemon(
        max_inflight=2, backends={"slow": {"class": "tests.slow_backend:SlowBackend", "delay": 1.0}}
    )
    objects = json.dumps([{"objectName": "x", "backend": "slow", "value": "ok"}])
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()

    def call() -> None:
        start = time.perf_counter()
        with DriverClient(d.config.socket) as client:
            try:
                client.mount(mount_request("spc", {"objects": objects}, Pod()))
                result = "ok"
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                assert err.details().startswith("[ResourceExhausted] keygate is at its limit of 2")
                result = "refused"
        with lock:
            outcomes.append((result, time.perf_counter() - start))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(10)
    assert sorted(r for r, _ in outcomes) == ["ok", "ok", "refused", "refused", "refused", "refused"]
    assert all(elapsed < 0.5 for r, elapsed in outcomes if r == "refused")
    again = d.client.mount(mount_request("spc", {"objects": objects}, Pod()))
    assert again.files[0].contents == b"ok"
