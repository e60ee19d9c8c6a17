"""Legacy mode: the daemon writes the files itself with an atomic ..data swap."""

from __future__ import annotations

import json
import os
import stat

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request

POD = Pod(namespace="shop")


def test_atomic_write_and_swap(start_daemon, node_key, short_tmp):
    target = short_tmp / "target"
    target.mkdir()
    d = start_daemon(write_files=True)

    def mount(objs):
        return d.client.mount(
            mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(target))
        )

    first = mount(
        [
            {"objectName": "a", "sealed": node_key.seal(b"A1", "shop", "a"), "filePermission": "0400"},
            {"objectName": "b", "objectAlias": "dir/b", "sealed": node_key.seal(b"B1", "shop", "b")},
        ]
    )
    assert len(first.files) == 2, "files are returned too in legacy mode"
    assert (target / "a").read_bytes() == b"A1" and (target / "dir" / "b").read_bytes() == b"B1"
    assert os.path.islink(target / "..data") and os.path.islink(target / "a")
    data_dir = target / os.readlink(target / "..data")
    assert stat.S_IMODE((data_dir / "a").stat().st_mode) == 0o400
    mount([{"objectName": "a", "sealed": node_key.seal(b"A2", "shop", "a")}])
    assert (target / "a").read_bytes() == b"A2"
    assert not (target / "dir").exists(), "files no longer listed must disappear"
    assert not data_dir.exists(), "the previous data directory is removed"
    assert sorted(p.name for p in target.iterdir() if p.name.startswith("..") and not p.is_symlink()) == [
        os.readlink(target / "..data")
    ]


def test_failed_mount_leaves_previous_files(start_daemon, node_key, short_tmp):
    target = short_tmp / "target"
    target.mkdir()
    d = start_daemon(write_files=True)
    objs = [{"objectName": "a", "sealed": node_key.seal(b"keep", "shop", "a")}]
    d.client.mount(mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(target)))
    bad = [{"objectName": "a", "sealed": node_key.seal(b"x", "other", "a")}]
    with pytest.raises(grpc.RpcError):
        d.client.mount(mount_request("spc", {"objects": json.dumps(bad)}, POD, target_path=str(target)))
    assert (target / "a").read_bytes() == b"keep"


def test_missing_target_is_a_clear_error(start_daemon, node_key, short_tmp):
    d = start_daemon(write_files=True)
    objs = [{"objectName": "a", "sealed": node_key.seal(b"v", "shop", "a")}]
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(
            mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(short_tmp / "nope"))
        )
    assert (
        info.value.details().startswith("[InvalidRequest]")
        and "not an existing directory" in info.value.details()
    )
