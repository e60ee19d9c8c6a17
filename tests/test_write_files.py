"""Legacy mode: the daemon writes the files itself with an atomic ..data swap."""

from __future__ import annotations

import json
import os
import stat

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from tests.csi_volume import make_volume, off_tmpfs, volume_path

POD = Pod(namespace="shop")


def kubelet(short_tmp):
    """The kubelet root these tests use: a plain directory, so tmpfs is waived (see the
    confinement tests for the tmpfs rule itself)."""
    return short_tmp / "kubelet"


def test_atomic_write_and_swap(start_daemon, node_key, short_tmp):
    target = make_volume(kubelet(short_tmp), POD.uid)
    d = start_daemon(write_files=True, **off_tmpfs(kubelet(short_tmp)))

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
    target = make_volume(kubelet(short_tmp), POD.uid)
    d = start_daemon(write_files=True, **off_tmpfs(kubelet(short_tmp)))
    objs = [{"objectName": "a", "sealed": node_key.seal(b"keep", "shop", "a")}]
    d.client.mount(mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(target)))
    bad = [{"objectName": "a", "sealed": node_key.seal(b"x", "other", "a")}]
    with pytest.raises(grpc.RpcError):
        d.client.mount(mount_request("spc", {"objects": json.dumps(bad)}, POD, target_path=str(target)))
    assert (target / "a").read_bytes() == b"keep"


def test_missing_target_is_a_clear_error(start_daemon, node_key, short_tmp):
    d = start_daemon(write_files=True, **off_tmpfs(kubelet(short_tmp)))
    objs = [{"objectName": "a", "sealed": node_key.seal(b"v", "shop", "a")}]
    missing = volume_path(kubelet(short_tmp), POD.uid, "nope")
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(missing)))
    assert (
        info.value.details().startswith("[InvalidRequest]")
        and "not an existing directory" in info.value.details()
    )


def _tree(root):
    """Every entry under root without following links: what must not change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[p] = ("file", open(p, "rb").read(), st.st_ino)  # noqa: SIM115 - tiny test files
            else:
                out[p] = ("dir", st.st_ino)
    return out


def test_hostile_target_content_never_reaches_outside(start_daemon, node_key, short_tmp):
    """The reported attack, end to end: a planted ..data and foreign links at our names."""
    outside = short_tmp / "outside"
    (outside / "keys").mkdir(parents=True)
    (outside / "a").write_bytes(b"someone else's")
    (outside / "keys" / "k").write_bytes(b"theirs")
    target = make_volume(kubelet(short_tmp), POD.uid)
    os.symlink(os.path.relpath(outside, target), target / "..data")
    os.symlink(outside / "a", target / "a")
    os.symlink(f"{outside}/keys/", target / "keys")
    before = _tree(outside)
    d = start_daemon(write_files=True, **off_tmpfs(kubelet(short_tmp)))
    objs = [
        {"objectName": "a", "sealed": node_key.seal(b"A1", "shop", "a"), "filePermission": "0400"},
        {"objectName": "k", "objectAlias": "keys/k", "sealed": node_key.seal(b"K1", "shop", "k")},
    ]
    for _ in range(2):
        d.client.mount(mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(target)))
        assert _tree(outside) == before
    data = os.readlink(target / "..data")
    assert sorted(os.listdir(target)) == sorted(["..data", data, "a", "keys"])
    assert os.readlink(target / "a") == "..data/a" and os.readlink(target / "keys") == "..data/keys"
    assert (target / "a").read_bytes() == b"A1" and (target / "keys" / "k").read_bytes() == b"K1"


def test_symlinked_target_is_refused(start_daemon, node_key, short_tmp):
    outside = short_tmp / "outside"
    outside.mkdir()
    link = volume_path(kubelet(short_tmp), POD.uid)
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    d = start_daemon(write_files=True, **off_tmpfs(kubelet(short_tmp)))
    objs = [{"objectName": "a", "sealed": node_key.seal(b"v", "shop", "a")}]
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("spc", {"objects": json.dumps(objs)}, POD, target_path=str(link)))
    assert info.value.details().startswith("[InvalidRequest]") and "symbolic link" in info.value.details()
    assert os.listdir(outside) == []
