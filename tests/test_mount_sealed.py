"""End-to-end Mounts of sealed secrets through a real daemon on a real Unix socket."""

from __future__ import annotations

import json

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from provider.wire import service_pb2 as pb
from providers.sealed.envelope import generate_key, seal

POD = Pod(namespace="shop", name="cart-0", service_account="cart")


def objects_yaml(*entries: dict[str, str]) -> str:
    return json.dumps(list(entries))


def error_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_several_objects_modes_alias_and_default_permission(start_daemon, node_key):
    d = start_daemon()
    objects = objects_yaml(
        {
            "objectName": "db-password",
            "sealed": node_key.seal(b"pw-1", "shop", "db-password"),
            "filePermission": "0400",
        },
        {
            "objectName": "api-key",
            "objectAlias": "keys/api",
            "sealed": node_key.seal(b"k-2", "shop", "api-key"),
        },
        {
            "objectName": "tls",
            "sealed": node_key.seal(b"\x00\xffbinary", "shop", "tls"),
            "filePermission": "0640",
        },
    )
    resp = d.client.mount(mount_request("shop-secrets", {"objects": objects}, POD, permission=420))
    assert [(f.path, f.mode, f.contents) for f in resp.files] == [
        ("db-password", 0o400, b"pw-1"),
        ("keys/api", 0o644, b"k-2"),
        ("tls", 0o640, b"\x00\xffbinary"),
    ]
    assert [v.id for v in resp.object_version] == ["sealed/db-password", "sealed/api-key", "sealed/tls"]
    for v in resp.object_version:
        assert len(v.version) == 32 and v.version not in ("pw-1", "k-2")


def test_yaml_objects_and_default_mode_from_request(start_daemon, node_key):
    d = start_daemon()
    objects = f"""
- objectName: token
  sealed: {node_key.seal(b"t0k3n", "shop", "token")}
"""
    resp = d.client.mount(mount_request("spc", {"objects": objects}, POD, permission=0o600))
    assert resp.files[0].mode == 0o600


def test_versions_stable_and_change_when_resealed(start_daemon, node_key):
    d = start_daemon()

    def mount(sealed: str, current=()):
        objects = objects_yaml({"objectName": "pw", "sealed": sealed})
        return d.client.mount(mount_request("spc", {"objects": objects}, POD, current=current))

    first_sealed = node_key.seal(b"v1", "shop", "pw")
    a, b = mount(first_sealed), mount(first_sealed)
    assert a.object_version == b.object_version
    rotated = mount(node_key.seal(b"v2", "shop", "pw"), current=[(v.id, v.version) for v in a.object_version])
    assert rotated.object_version[0].id == a.object_version[0].id
    assert rotated.object_version[0].version != a.object_version[0].version
    assert [f.contents for f in rotated.files] == [b"v2"]
    same_value_resealed = mount(node_key.seal(b"v1", "shop", "pw"))
    assert same_value_resealed.object_version[0].version != a.object_version[0].version


def test_rotation_call_returns_the_complete_file_set(start_daemon, node_key):
    d = start_daemon()
    objects = objects_yaml(
        {"objectName": "a", "sealed": node_key.seal(b"1", "shop", "a")},
        {"objectName": "b", "sealed": node_key.seal(b"2", "shop", "b")},
    )
    first = d.client.mount(mount_request("spc", {"objects": objects}, POD))
    again = d.client.mount(
        mount_request(
            "spc", {"objects": objects}, POD, current=[(v.id, v.version) for v in first.object_version]
        )
    )
    assert [f.path for f in again.files] == ["a", "b"]
    assert again.object_version == first.object_version


def test_rotation_of_keys_old_and_new_node_keys(start_daemon, node_key, short_tmp):
    from providers.sealed.envelope import private_pem

    new_key = generate_key()
    new_path = short_tmp / "keys"
    new_path.mkdir()
    (new_path / "new.pem").write_bytes(private_pem(new_key))
    d = start_daemon(sealed_key=(str(node_key.path), str(new_path)))
    both = seal(b"either", "shop", "x", [node_key.key.public_key(), new_key.public_key()])
    only_new = seal(b"new-only", "shop", "y", [new_key.public_key()])
    only_old = node_key.seal(b"old-only", "shop", "z")
    objects = objects_yaml(
        {"objectName": "x", "sealed": both},
        {"objectName": "y", "sealed": only_new},
        {"objectName": "z", "sealed": only_old},
    )
    resp = d.client.mount(mount_request("spc", {"objects": objects}, POD))
    assert [f.contents for f in resp.files] == [b"either", b"new-only", b"old-only"]
    d2 = start_daemon(sealed_key=(str(new_path),))
    code, message = error_of(
        lambda: d2.client.mount(
            mount_request("spc", {"objects": objects_yaml({"objectName": "z", "sealed": only_old})}, POD)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "no node key can open this value" in message


def _raw(attributes: str, permission: str = "420", secrets: str = "{}") -> pb.MountRequest:
    return pb.MountRequest(attributes=attributes, secrets=secrets, target_path="/t", permission=permission)


def _good_attrs(**extra: str) -> dict[str, str]:
    attrs = json.loads(mount_request("spc", {}, POD).attributes)
    attrs.update(extra)
    return attrs


MALFORMED = [
    ("attributes not JSON", lambda k: _raw("{not json"), "InvalidRequest", "attributes is not valid JSON"),
    ("attributes a list", lambda k: _raw("[]"), "InvalidRequest", "must be a JSON object"),
    (
        "attribute value not string",
        lambda k: _raw(json.dumps({"a": 1})),
        "InvalidRequest",
        "must be a string",
    ),
    (
        "missing pod attributes",
        lambda k: _raw(json.dumps({"objects": "[]", "secretProviderClass": "x"})),
        "InvalidRequest",
        "csi.storage.k8s.io/pod.name",
    ),
    (
        "secrets not JSON",
        lambda k: _raw(json.dumps(_good_attrs()), secrets="nope"),
        "InvalidRequest",
        "secrets is not valid JSON",
    ),
    (
        "permission not a number",
        lambda k: _raw(json.dumps(_good_attrs()), permission="rw"),
        "InvalidRequest",
        "permission",
    ),
    (
        "permission too large",
        lambda k: _raw(json.dumps(_good_attrs()), permission="4096"),
        "InvalidRequest",
        "between 0 and 511",
    ),
    (
        "tokens not JSON",
        lambda k: _raw(json.dumps(_good_attrs(**{"csi.storage.k8s.io/serviceAccount.tokens": "x"}))),
        "InvalidRequest",
        "serviceAccount.tokens",
    ),
    (
        "no objects",
        lambda k: _raw(json.dumps(_good_attrs())),
        "InvalidSecretProviderClass",
        "lists no objects",
    ),
    (
        "bad YAML",
        lambda k: _raw(json.dumps(_good_attrs(objects="- objectName: [unclosed"))),
        "InvalidSecretProviderClass",
        "not valid YAML/JSON at line 1",
    ),
    (
        "objects not a list",
        lambda k: _raw(json.dumps(_good_attrs(objects="objectName: x"))),
        "InvalidSecretProviderClass",
        "must be a list",
    ),
    (
        "duplicate key",
        lambda k: _raw(json.dumps(_good_attrs(objects="- objectName: a\n  objectName: b\n  sealed: x"))),
        "InvalidSecretProviderClass",
        "duplicate key",
    ),
    (
        "no objectName",
        lambda k: _raw(json.dumps(_good_attrs(objects='[{"sealed": "x"}]'))),
        "InvalidSecretProviderClass",
        "'objectName' is required",
    ),
    (
        "traversal path",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {
                            "objectName": "a",
                            "objectAlias": "../../etc/passwd",
                            "sealed": k.seal(b"v", "shop", "a"),
                        }
                    )
                )
            )
        ),
        "InvalidSecretProviderClass",
        "contains '..'",
    ),
    (
        "absolute path",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {"objectName": "a", "objectAlias": "/etc/passwd", "sealed": k.seal(b"v", "shop", "a")}
                    )
                )
            )
        ),
        "InvalidSecretProviderClass",
        "is absolute",
    ),
    (
        "duplicate paths",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {"objectName": "a", "objectAlias": "same", "sealed": k.seal(b"v", "shop", "a")},
                        {"objectName": "b", "objectAlias": "./same", "sealed": k.seal(b"v", "shop", "b")},
                    )
                )
            )
        ),
        "InvalidSecretProviderClass",
        "is also written by objects[0]",
    ),
    (
        "bad mode digits",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {"objectName": "a", "filePermission": "0999", "sealed": k.seal(b"v", "shop", "a")}
                    )
                )
            )
        ),
        "InvalidSecretProviderClass",
        "is not an octal permission",
    ),
    (
        "bad mode word",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {
                            "objectName": "a",
                            "filePermission": "rw-r--r--",
                            "sealed": k.seal(b"v", "shop", "a"),
                        }
                    )
                )
            )
        ),
        "InvalidSecretProviderClass",
        "is not an octal permission",
    ),
    (
        "wrong namespace ciphertext",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml({"objectName": "a", "sealed": k.seal(b"v", "elsewhere", "a")})
                )
            )
        ),
        "PermissionDenied",
        "sealed for elsewhere/a, not shop/a",
    ),
    (
        "wrong object name ciphertext",
        lambda k: _raw(
            json.dumps(
                _good_attrs(objects=objects_yaml({"objectName": "a", "sealed": k.seal(b"v", "shop", "b")}))
            )
        ),
        "PermissionDenied",
        "sealed for shop/b, not shop/a",
    ),
    (
        "tampered ciphertext",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {"objectName": "a", "sealed": _flip_last(k.seal(b"value", "shop", "a"))}
                    )
                )
            )
        ),
        "PermissionDenied",
        "altered or corrupted",
    ),
    (
        "truncated sealed value",
        lambda k: _raw(
            json.dumps(
                _good_attrs(
                    objects=objects_yaml(
                        {"objectName": "a", "sealed": k.seal(b"v", "shop", "a").split(".")[0]}
                    )
                )
            )
        ),
        "InvalidSecretProviderClass",
        "truncated",
    ),
    (
        "unknown backend",
        lambda k: _raw(
            json.dumps(_good_attrs(objects=objects_yaml({"objectName": "a", "backend": "keepass"})))
        ),
        "InvalidSecretProviderClass",
        "unknown backend 'keepass'",
    ),
    (
        "no backend inferable",
        lambda k: _raw(json.dumps(_good_attrs(objects=objects_yaml({"objectName": "a"})))),
        "InvalidSecretProviderClass",
        "cannot tell which backend",
    ),
]


def _flip_last(sealed: str) -> str:
    last = sealed[-2]
    return sealed[:-2] + ("A" if last != "A" else "B") + sealed[-1]


@pytest.mark.parametrize(("case", "build", "code", "fragment"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_gets_code_and_message_and_daemon_keeps_serving(
    start_daemon, node_key, case, build, code, fragment
):
    d = start_daemon()
    status, message = error_of(lambda: d.client.mount(build(node_key)))
    assert message.startswith(f"[{code}] "), message
    assert fragment in message, message
    assert "Traceback" not in message
    assert status != grpc.StatusCode.UNKNOWN
    ok = d.client.mount(
        mount_request(
            "spc",
            {"objects": objects_yaml({"objectName": "a", "sealed": node_key.seal(b"v", "shop", "a")})},
            POD,
        )
    )
    assert ok.files[0].contents == b"v"


def test_error_code_in_trailing_metadata(start_daemon):
    d = start_daemon()
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(_raw("{"))
    assert ("keygate-error-code", "InvalidRequest") in tuple(info.value.trailing_metadata())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_all_or_nothing_when_one_object_fails(start_daemon, node_key):
    d = start_daemon()
    objects = objects_yaml(
        {"objectName": "good", "sealed": node_key.seal(b"fine", "shop", "good")},
        {"objectName": "bad", "sealed": node_key.seal(b"nope", "elsewhere", "bad")},
    )
    code, message = error_of(lambda: d.client.mount(mount_request("spc", {"objects": objects}, POD)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'bad'" in message


def test_mixed_backends_in_one_spc_fetch_concurrently(start_daemon, node_key):
    d = start_daemon(backends={"slow": {"class": "tests.slow_backend:SlowBackend", "delay": 0.3}})
    objects = objects_yaml(
        {"objectName": "s", "sealed": node_key.seal(b"sealed-v", "shop", "s")},
        *({"objectName": f"n{i}", "backend": "slow", "value": f"v{i}"} for i in range(5)),
    )
    import time

    start = time.perf_counter()
    resp = d.client.mount(mount_request("spc", {"objects": objects}, POD))
    elapsed = time.perf_counter() - start
    assert {f.path: f.contents for f in resp.files} == {
        "s": b"sealed-v",
        **{f"n{i}": f"v{i}".encode() for i in range(5)},
    }
    assert elapsed < 1.0, "objects were fetched one after another"


def test_backend_failure_in_a_mixed_mount_is_all_or_nothing(start_daemon, node_key):
    d = start_daemon(backends={"slow": {"class": "tests.slow_backend:SlowBackend", "delay": 0.01}})
    objects = objects_yaml(
        {"objectName": "s", "sealed": node_key.seal(b"v", "shop", "s")},
        {"objectName": "x", "backend": "slow", "fail": True},
    )
    code, message = error_of(lambda: d.client.mount(mount_request("spc", {"objects": objects}, POD)))
    assert code == grpc.StatusCode.UNAVAILABLE and message.startswith("[BackendUnavailable]")


def test_mount_deadline(start_daemon):
    d = start_daemon(
        mount_timeout=0.3, backends={"slow": {"class": "tests.slow_backend:SlowBackend", "delay": 5}}
    )
    objects = objects_yaml({"objectName": "x", "backend": "slow"})
    code, message = error_of(lambda: d.client.mount(mount_request("spc", {"objects": objects}, POD)))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "0.3s" in message


def test_secret_value_never_in_logs_or_errors(start_daemon, node_key):
    value = "Zq8-unique-secret-value-4711"
    d = start_daemon()
    objects = objects_yaml({"objectName": "pw", "sealed": node_key.seal(value.encode(), "shop", "pw")})
    resp = d.client.mount(mount_request("spc", {"objects": objects}, POD))
    assert resp.files[0].contents == value.encode()
    messages = []
    for pod in (Pod(namespace="other"), POD):
        bad = objects_yaml(
            {"objectName": "pw", "sealed": node_key.seal(value.encode(), "shop", "pw"), "filePermission": "9"}
        )
        for spc in (objects, bad):
            try:
                d.client.mount(mount_request("spc", {"objects": spc}, pod))
            except grpc.RpcError as err:
                messages.append(err.details())
    assert len(messages) == 3
    log = d.log_text()
    assert '"msg":"mount"' in log and '"outcome":"ok"' in log and '"outcome":"error"' in log
    for text in [*messages, log]:
        assert value not in text
    for line in log.splitlines():
        record = json.loads(line)
        if record["msg"] == "mount":
            assert {"request_id", "outcome", "duration_ms"} <= record.keys()


def test_mount_log_line_fields(start_daemon, node_key):
    d = start_daemon()
    objects = objects_yaml({"objectName": "pw", "sealed": node_key.seal(b"x", "shop", "pw")})
    d.client.mount(mount_request("shop-secrets", {"objects": objects}, POD))
    lines = [json.loads(line) for line in d.log_text().splitlines()]
    mount_lines = [r for r in lines if r["msg"] == "mount"]
    assert len(mount_lines) == 1
    assert mount_lines[0]["pod"] == "shop/cart-0" and mount_lines[0]["spc"] == "shop-secrets"
    assert mount_lines[0]["objects"] == 1 and mount_lines[0]["outcome"] == "ok"
