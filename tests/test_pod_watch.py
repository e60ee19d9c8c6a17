"""The node's pod watch: one watch instead of a Pod GET per Mount, never a stale answer."""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.kubeapi import NODE, DevCluster, driver_pod, make_pod
from tests.test_attest import SECRET, spc


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_mounts_use_the_watch_and_see_changes(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(pod_watch=True)
    pod = make_pod(kube)
    request = mount_request("app-secrets", spc(node_key, pod.namespace), driver_pod(pod, kube.mint(pod)))
    assert d.client.mount(request).files[0].contents == SECRET
    wait_for(lambda: kube.hits["watch"] == 1)
    gets = kube.hits["pod"]
    for _ in range(5):
        assert d.client.mount(request).files[0].contents == SECRET
    assert kube.hits["pod"] <= gets + 1, "mounts kept reading the Pod although the watch has it"
    before = kube.hits["pod"]
    for _ in range(5):
        d.client.mount(request)
    assert kube.hits["pod"] == before
    debugged = dataclasses.replace(pod, ephemeral_images={"debug": "busybox:latest"})
    kube.add_pod(debugged)

    def denied() -> bool:
        try:
            d.client.mount(request)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "ephemeralContainer `debug` image `busybox:latest` is not pinned" in (err.details() or "")
            return True
        return False

    wait_for(denied, timeout=3.0)
    assert kube.hits["pod"] == before, "the change came from the watch, not a GET"


def test_deleted_pod_falls_back_to_get(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(pod_watch=True)
    pod = make_pod(kube)
    request = mount_request("app-secrets", spc(node_key, pod.namespace), driver_pod(pod, kube.mint(pod)))
    d.client.mount(request)
    wait_for(lambda: kube.hits["watch"] == 1)
    kube.remove_pod(pod)

    def gone() -> bool:
        try:
            d.client.mount(request)
        except grpc.RpcError as err:
            assert "does not exist" in (err.details() or "")
            return True
        return False

    wait_for(gone, timeout=3.0)


def test_pods_of_other_nodes_are_not_cached(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(pod_watch=True)
    pod = make_pod(kube)
    d.client.mount(
        mount_request("app-secrets", spc(node_key, pod.namespace), driver_pod(pod, kube.mint(pod)))
    )
    wait_for(lambda: kube.hits["watch"] == 1)
    elsewhere = make_pod(kube, name="other-0", uid="11111111-2222-4333-8444-555555555555", node_name="node-b")
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(
            mount_request(
                "app-secrets", spc(node_key, pod.namespace), driver_pod(elsewhere, kube.mint(elsewhere))
            )
        )
    assert info.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert "node-b" in (info.value.details() or "") and NODE in (info.value.details() or "")


def test_pod_watch_needs_node_name(start_daemon, kube: DevCluster):
    from provider.errors import KeygateError
    from tests.kubeapi import attest_settings

    settings = attest_settings(kube, pod_watch=True)
    settings["node_name"] = ""
    with pytest.raises(KeygateError, match="pod_watch needs node_name"):
        start_daemon(**settings)
