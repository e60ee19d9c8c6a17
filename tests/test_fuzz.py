"""Property-based fuzzing of Mount: whatever arrives, the daemon answers with a clean error or a
complete file set, within the deadline, and keeps serving.

KEYGATE_FUZZ_EXAMPLES sets the number of generated requests (CI runs 10 000 in total across the
strategies below).
"""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keygate_dev.driver_client import Pod, attributes
from provider.attest import InsecureTrustAttributes
from provider.wire import service_pb2 as pb

EXAMPLES = int(os.environ.get("KEYGATE_FUZZ_EXAMPLES", "3400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    derandomize=bool(os.environ.get("CI")),
)
KNOWN_CODES = {
    "InvalidRequest",
    "InvalidSecretProviderClass",
    "Unauthenticated",
    "PermissionDenied",
    "SecretNotFound",
    "BackendUnavailable",
    "DeadlineExceeded",
    "ResourceExhausted",
}
CLEAN_STATUSES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

text = st.text(max_size=40)
huge = st.integers(min_value=10_000, max_value=300_000).map(lambda n: "A" * n)
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_value = st.recursive(
    scalar, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(text, c, max_size=4)), max_leaves=12
)
field_names = st.sampled_from(
    [
        "objectName",
        "objectAlias",
        "filePermission",
        "mode",
        "sealed",
        "backend",
        "fileName",
        "path",
        "secretPath",
        "objectType",
        "resourceName",
        "encoding",
        "array",
    ]
)
paths = st.one_of(
    text,
    st.sampled_from(
        ["../x", "/abs", "a/../../b", "..data", ".", "a//b", "a\\b", "x\x00y", "ok/file", "🔑/k"]
    ),
    huge,
)
modes = st.one_of(st.sampled_from(["0400", "0999", "rw", "", "0o644", "7777"]), st.integers(-5, 5000), text)
object_item = st.dictionaries(
    field_names,
    st.one_of(paths, modes, scalar, st.sampled_from(["sealed", "vault", "nope", "keygate:v1:abc.def"])),
    max_size=6,
)


def deep(n: int) -> str:
    return "[" * n + "]" * n


objects_param = st.one_of(
    st.lists(object_item, max_size=6).map(json.dumps),
    st.lists(object_item, max_size=4).map(lambda items: "\n".join(f"- {json.dumps(i)}" for i in items)),
    json_value.map(json.dumps),
    text,
    st.integers(1, 100_000).map(deep),
    st.just("a: &a [*a]"),
    st.just("!!python/object/apply:os.system ['true']"),
    huge,
)
pod_attrs = st.fixed_dictionaries(
    {},
    optional={
        "csi.storage.k8s.io/pod.name": text,
        "csi.storage.k8s.io/pod.namespace": text,
        "csi.storage.k8s.io/pod.uid": text,
        "csi.storage.k8s.io/serviceAccount.name": text,
        "csi.storage.k8s.io/serviceAccount.tokens": st.one_of(text, json_value.map(json.dumps)),
        "secretProviderClass": text,
        "backend": st.sampled_from(["sealed", "vault", "x", ""]),
    },
)


def _check(client, request: pb.MountRequest) -> None:
    start = time.monotonic()
    try:
        response = client.stub.Mount(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in CLEAN_STATUSES, (err.code(), err.details())
        details = err.details() or ""
        code = details[1 : details.index("]")] if details.startswith("[") else ""
        assert code in KNOWN_CODES, details
        assert "Traceback" not in details
    else:
        assert len(response.object_version) >= 1
        assert len(response.files) >= 1
    assert time.monotonic() - start < 10


@pytest.fixture
def fuzz_daemon(start_daemon):
    return start_daemon(attestor=InsecureTrustAttributes(), mount_timeout=5.0)


@FUZZ
@given(
    attrs=pod_attrs, objects=objects_param, permission=st.one_of(text, st.integers(-1000, 100000).map(str))
)
def test_fuzz_structured_requests(fuzz_daemon, attrs, objects, permission):
    attrs = {**attrs, "objects": objects}
    request = pb.MountRequest(
        attributes=json.dumps(attrs), secrets="{}", target_path="/t", permission=permission
    )
    _check(fuzz_daemon.client, request)


@FUZZ
@given(
    attributes_raw=st.one_of(text, json_value.map(json.dumps), huge, st.integers(1, 50_000).map(deep)),
    secrets_raw=st.one_of(text, json_value.map(json.dumps)),
    target=st.one_of(text, paths),
)
def test_fuzz_raw_strings(fuzz_daemon, attributes_raw, secrets_raw, target):
    request = pb.MountRequest(
        attributes=attributes_raw, secrets=secrets_raw, target_path=target, permission="420"
    )
    _check(fuzz_daemon.client, request)


@FUZZ
@given(objects=st.lists(object_item, min_size=1, max_size=5), pod_ns=text)
def test_fuzz_objects_with_valid_pod(fuzz_daemon, node_key, objects, pod_ns):
    pod = Pod(namespace=pod_ns or "ns")
    for item in objects:
        if item.get("sealed") == "sealed" and isinstance(item.get("objectName"), str) and item["objectName"]:
            item["sealed"] = node_key.seal(b"v", pod.namespace, item["objectName"])
    request = pb.MountRequest(
        attributes=attributes("spc", {"objects": json.dumps(objects)}, pod),
        secrets="{}",
        target_path="/t",
        permission="420",
    )
    _check(fuzz_daemon.client, request)


def test_invalid_utf8_on_the_wire_is_refused_and_daemon_survives(fuzz_daemon):
    channel = fuzz_daemon.client.channel
    raw_call = channel.unary_unary(
        "/v1alpha1.CSIDriverProvider/Mount", request_serializer=None, response_deserializer=None
    )
    # field 1 (attributes), wire type 2, length 3, invalid UTF-8 bytes
    with pytest.raises(grpc.RpcError) as info:
        raw_call(b"\x0a\x03\xff\xfe\xfd", timeout=10)
    assert info.value.code() in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNKNOWN,
    )
    with pytest.raises(grpc.RpcError) as garbage:
        raw_call(b"\xff\xff\xff\xff", timeout=10)
    assert garbage.value.code() != grpc.StatusCode.OK
    assert fuzz_daemon.client.version().runtime_name == "keygate"
