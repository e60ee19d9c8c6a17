"""Legacy mode writes only into the requesting pod's own CSI volume, reached without links, on tmpfs.

The layout is a kubelet root in a temporary directory (``kubelet_root_dir`` points at it) with
real tmpfs mounts at the volume directories where a test needs them (root only; skipped
otherwise). Every refusal also checks that nothing anywhere under the temporary directory
changed, the refused target included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request
from provider import dirfd
from provider.config import load
from provider.errors import InvalidRequest, KeygateError
from provider.target import TargetRules
from provider.writer import OutFile, write_atomic
from tests.csi_volume import PLUGIN, make_volume, tmpfs, volume_path
from tests.kubeapi import driver_pod, make_pod

POD = Pod(namespace="shop")
UID = POD.uid
OTHER_UID = "11111111-2222-4333-8444-555555555555"
FILES = [OutFile("a", 0o400, b"A-secret"), OutFile("keys/k", 0o440, b"K-secret")]


@dataclass
class Layout:
    """``home``: the kubelet root ``root``, this pod's volume ``target``, another pod's
    ``other``, a lookalike root ``root``+"x" and an ``outside`` directory."""

    home: Path
    root: Path
    target: Path
    other: Path
    outside: Path

    def rules(self, allow_off_tmpfs: bool = False) -> TargetRules:
        return TargetRules(str(self.root), allow_off_tmpfs=allow_off_tmpfs)

    def snap(self) -> dict[str, tuple[object, ...]]:
        """Every entry under ``home`` (mounts included, links not followed)."""
        out: dict[str, tuple[object, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.home):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    out[str(p)] = ("file", p.read_bytes(), st.st_mode, st.st_ino, st.st_mtime_ns)
                else:
                    out[str(p)] = ("dir", st.st_mode, st.st_ino, st.st_mtime_ns)
        return out


def _layout(home: Path) -> Layout:
    root = home / "kubelet"
    lay = Layout(home, root, make_volume(root, UID), make_volume(root, OTHER_UID), home / "outside")
    make_volume(home / "kubeletx", UID)
    lay.outside.mkdir()
    (lay.outside / "a").write_bytes(b"theirs")
    return lay


@pytest.fixture
def layout() -> Iterator[Layout]:
    """Plain directories (no tmpfs): for refusals decided before the filesystem is looked at."""
    home = Path(tempfile.mkdtemp(prefix="kgc-"))
    try:
        yield _layout(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def node(layout: Layout) -> Iterator[Layout]:
    """The layout with a real tmpfs at both pods' volume directories, as the driver mounts them."""
    with tmpfs(layout.target), tmpfs(layout.other):
        yield layout


def _refused(lay: Layout, target: str, words: str, rules: TargetRules | None = None) -> str:
    before = lay.snap()
    with pytest.raises(InvalidRequest) as info:
        write_atomic(target, FILES, pod_uid=UID, rules=rules or lay.rules())
    assert words in info.value.message, info.value.message
    assert "A-secret" not in info.value.message
    assert lay.snap() == before
    return info.value.message


def _objects(node_key, namespace: str = "shop") -> dict[str, str]:
    objs = [
        {"objectName": "a", "sealed": node_key.seal(b"A-secret", namespace, "a"), "filePermission": "0400"},
        {"objectName": "k", "objectAlias": "keys/k", "sealed": node_key.seal(b"K-secret", namespace, "k")},
    ]
    return {"objects": json.dumps(objs)}


# --- the happy path ---------------------------------------------------------------------------


def test_a_real_mount_writes_into_the_pods_tmpfs_volume(start_daemon, node_key, node: Layout) -> None:
    d = start_daemon(write_files=True, kubelet_root_dir=str(node.root))
    before_other = node.snap()
    out = d.client.mount(mount_request("spc", _objects(node_key), POD, target_path=str(node.target)))
    assert sorted(f.path for f in out.files) == ["a", "keys/k"], "files are returned too"
    assert (node.target / "a").read_bytes() == b"A-secret"
    assert (node.target / "keys" / "k").read_bytes() == b"K-secret"
    assert os.readlink(node.target / "a") == "..data/a"
    fd = os.open(node.target, dirfd.DIR_FLAGS)
    try:
        assert dirfd.fs_type(fd) == "tmpfs"
    finally:
        os.close(fd)
    changed = {p for p, v in node.snap().items() if before_other.get(p) != v}
    assert changed and all(p.startswith(f"{node.target}/") or p == str(node.target) for p in changed)
    d.client.mount(mount_request("spc", _objects(node_key), POD, target_path=str(node.target)))
    assert (node.target / "a").read_bytes() == b"A-secret"


def test_a_kubelet_root_given_with_a_trailing_slash_is_the_same_root(node: Layout) -> None:
    rules = TargetRules(f"{node.root}/")
    write_atomic(str(node.target), FILES, pod_uid=UID, rules=rules)
    assert (node.target / "keys" / "k").read_bytes() == b"K-secret"


def test_ramfs_counts_as_memory(layout: Layout) -> None:
    with tmpfs(layout.target, kind="ramfs"):
        write_atomic(str(layout.target), FILES, pod_uid=UID, rules=layout.rules())
        assert (layout.target / "a").read_bytes() == b"A-secret"


# --- the path must be this pod's CSI volume ---------------------------------------------------

VOL = "{root}/pods/{uid}/volumes/" + PLUGIN
BAD_SHAPES = [
    "/etc",
    "/",
    "/tmp",
    "{home}/outside",
    "{root}",
    "{root}/pods/{uid}",
    VOL + "/secrets",
    VOL + "/secrets/mount/",
    VOL + "/secrets/mount//",
    VOL + "/secrets/mount/x",
    VOL + "/secrets/mount/..",
    VOL + "/secrets/mount\n",
    "\n" + VOL + "/secrets/mount",
    VOL + "/secrets/mountx",
    VOL + "/secrets/mount.",
    VOL + "/secrets/mount\x00",
    VOL + "/./mount",
    VOL + "/../mount",
    VOL + "//mount",
    VOL + "/secrets/./mount",
    VOL + "/secrets/../secrets/mount",
    VOL + "/../" + PLUGIN + "/secrets/mount",
    "{root}/./pods/{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "{root}/../kubelet/pods/{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "{root}//pods/{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "{root}/pods//{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "{root}/pods/../pods/{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "{root}/pods/{uid}/volumes//" + PLUGIN + "/secrets/mount",
    "{root}x/pods/{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "{root}/pods/{uid}/volumes/kubernetes.io~empty-dir/secrets/mount",
    VOL + "/Secrets/mount",
    VOL + "/-secrets/mount",
    "{relroot}/pods/{uid}/volumes/" + PLUGIN + "/secrets/mount",
    "",
]


@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_a_path_of_another_shape_is_refused(layout: Layout, shape: str) -> None:
    path = shape.format(home=layout.home, root=layout.root, uid=UID, relroot=str(layout.root)[1:])
    message = _refused(layout, path, "is not of that shape")
    assert f"{layout.root}/pods/<pod UID>/volumes/kubernetes.io~csi/<volume name>/mount" in message
    assert "--kubelet-root-dir" in message


@pytest.mark.parametrize("uid", [OTHER_UID, UID.upper(), UID[:-1]])
def test_another_pods_volume_is_refused(layout: Layout, uid: str) -> None:
    if uid == UID[:-1]:
        make_volume(layout.root, uid)
    message = _refused(layout, str(volume_path(layout.root, uid)), "pod UID")
    assert uid in message and UID in message


def test_refusals_through_the_daemon(start_daemon, node_key, node: Layout) -> None:
    """The attested pod's UID decides; /etc and another pod's live volume are never written."""
    d = start_daemon(write_files=True, kubelet_root_dir=str(node.root))
    cases = {
        "/etc": "is not of that shape",
        str(node.other): "pod UID",
        f"{node.target}/../../secrets/mount": "is not of that shape",
        f"{node.target}\n": "is not of that shape",
        f"{node.root}/pods/{UID}/volumes/{PLUGIN}/other/mount": "not an existing directory",
    }
    before = node.snap()
    for path, words in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            d.client.mount(mount_request("spc", _objects(node_key), POD, target_path=path))
        details = info.value.details() or ""
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details.startswith("[InvalidRequest]") and words in details, details
        assert "A-secret" not in details
        assert node.snap() == before
    assert not os.path.lexists("/etc/..data") and not os.path.islink("/etc/a")


def test_with_attestation_the_verified_pods_volume_only(
    attest_daemon, kube, node_key, layout: Layout
) -> None:
    """Real token and Pod: the attested UID picks the volume; a request that claims another
    pod's UID is refused by attestation before anything is written."""
    pod = make_pod(kube)
    other = make_pod(kube, name="app-1", uid=OTHER_UID)
    mine = make_volume(layout.root, pod.uid)
    d = attest_daemon(write_files=True, kubelet_root_dir=str(layout.root))
    params = _objects(node_key, pod.namespace)
    with tmpfs(mine), tmpfs(layout.other):
        token = kube.mint(pod)
        d.client.mount(mount_request("spc", params, driver_pod(pod, token), target_path=str(mine)))
        assert (mine / "a").read_bytes() == b"A-secret"
        before = layout.snap()
        with pytest.raises(grpc.RpcError) as info:
            d.client.mount(
                mount_request("spc", params, driver_pod(pod, token), target_path=str(layout.other))
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pod UID" in (
            info.value.details() or ""
        )
        claims_other = dataclasses.replace(driver_pod(pod, token), uid=other.uid)
        with pytest.raises(grpc.RpcError) as info:
            d.client.mount(mount_request("spc", params, claims_other, target_path=str(layout.other)))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
        assert layout.snap() == before and os.listdir(layout.other) == []


# --- no link anywhere on the way --------------------------------------------------------------

LEVELS = ["kubelet", "pods", UID, "volumes", PLUGIN, "secrets", "mount"]


@pytest.mark.parametrize("level", range(len(LEVELS)), ids=LEVELS)
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_a_symlink_at_any_level_is_refused(level: int, relative: bool) -> None:
    """The link leads to a real copy of the rest of the path with a tmpfs at its end: only the
    link is wrong, and the tmpfs it leads to stays empty."""
    home = Path(tempfile.mkdtemp(prefix="kgl-"))
    try:
        parent = home.joinpath(*LEVELS[:level])
        parent.mkdir(parents=True, exist_ok=True)
        elsewhere = home / "elsewhere"
        dest = elsewhere.joinpath(*LEVELS[level:])
        dest.mkdir(parents=True)
        value = elsewhere / LEVELS[level]
        os.symlink(os.path.relpath(value, parent) if relative else value, parent / LEVELS[level])
        lay = Layout(home, home / "kubelet", home.joinpath(*LEVELS), dest, elsewhere)
        with tmpfs(dest):
            message = _refused(lay, str(lay.target), "symbolic link")
            assert str(parent / LEVELS[level]) in message
            assert ("--kubelet-root-dir" in message) == (level == 0)
            assert os.listdir(dest) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- the volume must be on tmpfs --------------------------------------------------------------


def _on_disk(layout: Layout) -> None:
    fd = os.open(layout.target, dirfd.DIR_FLAGS)
    try:
        if dirfd.fs_type(fd) in ("tmpfs", "ramfs"):
            pytest.skip("the temporary directory is itself on tmpfs")
    finally:
        os.close(fd)


def test_a_volume_not_on_tmpfs_is_refused(start_daemon, node_key, layout: Layout) -> None:
    _on_disk(layout)
    message = _refused(layout, str(layout.target), "not tmpfs")
    assert "--insecure-allow-write-files-off-tmpfs" in message and "node's disk" in message
    d = start_daemon(write_files=True, kubelet_root_dir=str(layout.root))
    before = layout.snap()
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("spc", _objects(node_key), POD, target_path=str(layout.target)))
    assert (info.value.details() or "").startswith("[InvalidRequest]")
    assert "not tmpfs" in (info.value.details() or "")
    assert layout.snap() == before and os.listdir(layout.target) == []


def test_the_insecure_setting_allows_a_volume_off_tmpfs(start_daemon, node_key, layout: Layout) -> None:
    _on_disk(layout)
    d = start_daemon(
        write_files=True, kubelet_root_dir=str(layout.root), insecure_allow_write_files_off_tmpfs=True
    )
    d.client.mount(mount_request("spc", _objects(node_key), POD, target_path=str(layout.target)))
    assert (layout.target / "a").read_bytes() == b"A-secret"
    assert "INSECURE: --write-files may write secrets into a target_path that is not on tmpfs" in d.log_text()


def test_the_insecure_setting_still_confines_the_path(layout: Layout) -> None:
    rules = layout.rules(allow_off_tmpfs=True)
    _refused(layout, "/etc", "is not of that shape", rules)
    _refused(layout, str(layout.other), "pod UID", rules)


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "root",
    ["", "/", "relative/kubelet", "/var/../kubelet", "/var/./kubelet", "//var/lib", "/var//lib", "/a\x00"],
)
def test_a_bad_kubelet_root_is_refused_at_start(root: str) -> None:
    with pytest.raises(KeygateError) as info:
        TargetRules(root)
    assert "--kubelet-root-dir" in info.value.message and "plain absolute" in info.value.message


def test_settings_load_from_the_environment() -> None:
    config = load(
        None,
        environ={
            "KEYGATE_KUBELET_ROOT_DIR": "/srv/kubelet",
            "KEYGATE_INSECURE_ALLOW_WRITE_FILES_OFF_TMPFS": "1",
        },
    )
    assert config.kubelet_root_dir == "/srv/kubelet" and config.insecure_allow_write_files_off_tmpfs
    defaults = load(None, environ={})
    assert defaults.kubelet_root_dir == "/var/lib/kubelet"
    assert defaults.insecure_allow_write_files_off_tmpfs is False


def test_refusals_leak_no_descriptors(layout: Layout) -> None:
    linked = layout.target.parent.parent / "linked"
    (layout.outside / "mount").mkdir()
    os.symlink(layout.outside, linked)

    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    start = count()
    for _ in range(20):
        for target, rules in (
            (str(layout.target), layout.rules()),  # not tmpfs (or, on a tmpfs /tmp, written)
            (str(volume_path(layout.root, UID, "missing")), layout.rules()),
            (str(linked / "mount"), layout.rules()),
            ("/etc", layout.rules()),
        ):
            with contextlib.suppress(KeygateError):
                write_atomic(target, FILES, pod_uid=UID, rules=rules)
    assert count() == start
