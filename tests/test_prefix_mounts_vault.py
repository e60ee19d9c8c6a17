"""Prefix mounts against a real OpenBao: kv v1 and v2 selectors through real Mounts over the socket."""
# ruff: noqa: F811  (the session fixtures are imported from tests.vault_fixtures by name)

from __future__ import annotations

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from tests.vault_fixtures import Vault, vault  # noqa: F401

LIST_POLICY = """
path "secret/metadata/tree" { capabilities = ["list"] }
path "secret/metadata/tree/*" { capabilities = ["list"] }
path "secret/data/tree/*" { capabilities = ["read"] }
path "kv1/tree" { capabilities = ["list"] }
path "kv1/tree/*" { capabilities = ["read", "list"] }
path "secret/metadata/locked" { capabilities = ["list"] }
path "secret/metadata/odd*" { capabilities = ["list"] }
path "secret/data/odd*" { capabilities = ["read"] }
"""


@pytest.fixture(scope="module")
def tree(vault: Vault) -> Vault:
    """secret/tree (kv v2) and kv1/tree (kv v1): three levels, plus a role that may list them."""
    root = vault.root()
    root.sys.create_or_update_policy("tree-list", LIST_POLICY)
    role = root.read("auth/jwt/role/app")["data"]
    role["token_policies"] = ["app", "tree-list"]
    root.write("auth/jwt/role/lister", **role)
    for path, data in {
        "tree/a": {"password": "pa"},
        "tree/b": {"password": "pb"},
        "tree/sub/c": {"password": "pc"},
        "tree/sub/deeper/d": {"password": "pd"},
    }.items():
        root.secrets.kv.v2.create_or_update_secret(path, data, mount_point="secret")
        root.write(f"kv1/{path}", **data)
    return vault


def params(v: Vault, objects: str) -> dict[str, str]:
    return v.params(objects, roleName="lister")


def mount(d, v: Vault, objects: str, pod: Pod | None = None):
    pod = pod or v.issuer.pod()
    return d.client.mount(mount_request("app-secrets", params(v, objects), pod))


def files(resp) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def refused(d, v: Vault, objects: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        mount(d, v, objects)
    return info.value.code(), info.value.details()


@pytest.mark.parametrize(
    "path", ["secret/data/tree/", "secret/tree", "secret/metadata/tree", "/v1/secret/data/tree"]
)
def test_kv2_one_level(start_daemon, tree: Vault, path: str):
    d = start_daemon()
    resp = mount(d, tree, f"- {{objectName: conf, secretPath: {path}, secretKey: password, selector: {{}}}}")
    assert files(resp) == {"conf/a": b"pa", "conf/b": b"pb"}
    assert {v.id for v in resp.object_version} == {
        "vault/secret/data/tree/a#password",
        "vault/secret/data/tree/b#password",
    }


def test_kv2_recursive_and_depth_limit(start_daemon, tree: Vault):
    d = start_daemon()
    two = mount(
        d, tree, "- {objectName: t, secretPath: secret/data/tree, secretKey: password, selector: {depth: 2}}"
    )
    assert files(two) == {"t/a": b"pa", "t/b": b"pb", "t/sub/c": b"pc"}
    deep = mount(
        d, tree, "- {objectName: t, secretPath: secret/data/tree, secretKey: password, selector: {depth: 10}}"
    )
    assert files(deep) == {"t/a": b"pa", "t/b": b"pb", "t/sub/c": b"pc", "t/sub/deeper/d": b"pd"}


def test_kv1_one_level_and_recursive(start_daemon, tree: Vault):
    d = start_daemon()
    one = mount(
        d, tree, "- {objectName: v1, secretPath: kv1/tree/, secretKey: password, selector: {depth: 1}}"
    )
    assert files(one) == {"v1/a": b"pa", "v1/b": b"pb"}
    assert {v.id for v in one.object_version} == {"vault/kv1/tree/a#password", "vault/kv1/tree/b#password"}
    all_ = mount(
        d, tree, "- {objectName: v1, secretPath: kv1/tree, secretKey: password, selector: {depth: 3}}"
    )
    assert set(files(all_)) == {"v1/a", "v1/b", "v1/sub/c", "v1/sub/deeper/d"}


def test_mode_and_encoding_inherited_and_written_objects_beside(start_daemon, tree: Vault):
    root = tree.root()
    root.secrets.kv.v2.create_or_update_secret("tree/enc/x", {"v": "aGk="}, mount_point="secret")
    try:
        d = start_daemon()
        objects = """
- {objectName: enc, secretPath: secret/data/tree/enc, secretKey: v, encoding: base64, filePermission: "0600", selector: {}}
- {objectName: single, secretPath: secret/data/tree/a, secretKey: password}
"""
        resp = mount(d, tree, objects)
        assert files(resp) == {"enc/x": b"hi", "single": b"pa"}
        assert {f.path: f.mode for f in resp.files} == {"enc/x": 0o600, "single": 0o644}
    finally:
        root.secrets.kv.v2.delete_metadata_and_all_versions("tree/enc/x", mount_point="secret")


def test_rotation_adds_and_removes(start_daemon, tree: Vault):
    root = tree.root()
    d = start_daemon()
    objects = "- {objectName: r, secretPath: secret/data/tree/rot, secretKey: password, selector: {}}"
    root.secrets.kv.v2.create_or_update_secret("tree/rot/one", {"password": "1"}, mount_point="secret")
    try:
        first = mount(d, tree, objects)
        assert files(first) == {"r/one": b"1"}
        root.secrets.kv.v2.create_or_update_secret("tree/rot/two", {"password": "2"}, mount_point="secret")
        second = mount(d, tree, objects)
        assert files(second) == {"r/one": b"1", "r/two": b"2"}
        root.secrets.kv.v2.delete_metadata_and_all_versions("tree/rot/one", mount_point="secret")
        third = mount(d, tree, objects)
        # The removed secret's file and version are simply not returned; the driver removes it.
        assert files(third) == {"r/two": b"2"}
        assert {v.id for v in third.object_version} == {"vault/secret/data/tree/rot/two#password"}
    finally:
        for name in ("one", "two"):
            root.secrets.kv.v2.delete_metadata_and_all_versions(f"tree/rot/{name}", mount_point="secret")


def test_empty_prefix_mounts_nothing_from_it(start_daemon, tree: Vault):
    d = start_daemon()
    objects = """
- {objectName: none, secretPath: secret/data/tree/nothing-here, selector: {}}
- {objectName: single, secretPath: secret/data/tree/a, secretKey: password}
"""
    assert files(mount(d, tree, objects)) == {"single": b"pa"}


def test_cap_exceeded(start_daemon, tree: Vault):
    d = start_daemon()
    code, details = refused(d, tree, "- {objectName: t, secretPath: secret/tree, selector: {limit: 1}}")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 1 objects (its limit)" in details and "objects[0] 't'" in details


def test_daemon_maximum(start_daemon, tree: Vault):
    d = start_daemon(selector_max_objects=1)
    code, details = refused(d, tree, "- {objectName: t, secretPath: secret/tree, selector: {limit: 5}}")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "above this daemon's maximum 1 (selector_max_objects)" in details
    code, details = refused(d, tree, "- {objectName: t, secretPath: secret/tree, selector: {}}")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "maximum 1" in details


def test_collision_with_written_object(start_daemon, tree: Vault):
    d = start_daemon()
    objects = """
- {objectName: t, secretPath: secret/tree, secretKey: password, selector: {}}
- {objectName: t/a, secretPath: secret/data/tree/a, secretKey: password}
"""
    code, details = refused(d, tree, objects)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'t'" in details


def test_collision_between_selectors(start_daemon, tree: Vault):
    d = start_daemon()
    objects = """
- {objectName: t, secretPath: secret/tree, secretKey: password, selector: {}}
- {objectName: t, objectAlias: t, secretPath: kv1/tree, secretKey: password, selector: {}}
"""
    code, details = refused(d, tree, objects)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "also written by" in details


def test_list_forbidden_is_clear(start_daemon, tree: Vault):
    d = start_daemon()
    code, details = refused(d, tree, "- {objectName: o, secretPath: secret/data/other, selector: {}}")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "may not list 'secret/metadata/other'" in details and 'capabilities = ["list"]' in details


def test_listed_but_unreadable_refuses_the_mount(start_daemon, tree: Vault):
    """Listing needs only 'list'; each expanded secret is then read with the pod's token."""
    tree.root().secrets.kv.v2.create_or_update_secret("locked/x", {"password": "x"}, mount_point="secret")
    d = start_daemon()
    code, details = refused(d, tree, "- {objectName: l, secretPath: secret/locked, selector: {}}")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'secret/data/locked/x'" in details


@pytest.mark.parametrize(
    "obj, fragment",
    [
        (
            "{objectName: t, secretPath: secret/tree, selector: {depth: 11}}",
            "depth is 11; it must be from 1 to 10",
        ),
        ("{objectName: t, secretPath: secret/tree, selector: {limit: 0}}", "limit is 0"),
        ("{objectName: t, secretPath: secret/tree, selector: {tags: {a: b}}}", "unknown key 'tags'"),
        ("{objectName: t, secretPath: secret/tree, selector: [1]}", "must be a mapping"),
        ("{objectName: t, secretPath: secret/tree, method: POST, selector: {}}", "lists with GET"),
        (
            "{objectName: t, secretPath: secret/tree, secretArgs: {a: 1}, selector: {}}",
            "'secretArgs' cannot be combined",
        ),
    ],
)
def test_bad_selectors(start_daemon, tree: Vault, obj: str, fragment: str):
    d = start_daemon()
    code, details = refused(d, tree, f"- {obj}")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in details


def odd_mount(d, v: Vault, prefix: str):
    return mount(
        d, v, f"- {{objectName: o, secretPath: secret/{prefix}, secretKey: password, selector: {{depth: 2}}}}"
    )


def test_listed_names_with_hash_and_percent_are_read_literally(start_daemon, tree: Vault):
    """``#`` and ``%`` in listed keys and folders are part of the name: each is listed and read
    escaped on the wire (``enc%41`` is not ``encA``) and becomes a file of that name."""
    names = ["h#1", "pct%2e%2e", "enc%41", "encA", "d#%/leaf"]
    for name in names:  # hvac escapes the names it writes
        tree.root().secrets.kv.v2.create_or_update_secret(
            f"odd/{name}", {"password": f"p {name}"}, mount_point="secret"
        )
    resp = odd_mount(start_daemon(), tree, "odd")
    assert files(resp) == {f"o/{name}": f"p {name}".encode() for name in names}


@pytest.mark.parametrize("name", ["q?x", "d?/leaf"])
def test_listed_name_with_a_question_mark_is_refused(start_daemon, tree: Vault, name: str):
    """``?`` starts a secretPath's query (vault-csi-provider's rule), so a listed name holding
    one would read another secret: refused with the name, nothing mounted."""
    prefix = f"oddq{len(name)}"
    tree.root().secrets.kv.v2.create_or_update_secret(
        f"{prefix}/ok", {"password": "ok"}, mount_point="secret"
    )
    tree.root().secrets.kv.v2.create_or_update_secret(
        f"{prefix}/{name}", {"password": "x"}, mount_point="secret"
    )
    with pytest.raises(grpc.RpcError) as info:
        odd_mount(start_daemon(), tree, prefix)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"Vault key {name.split('/')[0] + ('/' if '/' in name else '')!r}" in info.value.details()
    assert "where a secretPath's query begins; rename it in Vault" in info.value.details()
