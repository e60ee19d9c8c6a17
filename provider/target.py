"""Which ``target_path`` legacy mode writes into, opened without following any link.

An attacker may write the request, so its ``target_path`` alone decides nothing: in
``--write-files`` mode it must be exactly the kubelet's directory for a CSI volume of the
requesting pod, ``<kubelet root>/pods/<pod UID>/volumes/kubernetes.io~csi/<volume>/mount``.
Every directory from ``/`` down is entered with ``O_NOFOLLOW`` relative to its parent, so a
link anywhere in the ancestry is refused rather than followed, and the directory reached must
be on tmpfs (the driver mounts one there), so secrets never land on the node's disk.
"""

from __future__ import annotations

import errno
import os
import re

from provider import dirfd
from provider.config import describe
from provider.errors import InvalidRequest, KeygateError

DEFAULT_KUBELET_ROOT = "/var/lib/kubelet"
CSI_PLUGIN_DIR = "kubernetes.io~csi"  # the kubelet's escaped plugin name "kubernetes.io/csi"
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
# Pod UIDs as the request parser accepts them; volume names are DNS subdomains (a pod's volume
# name is a DNS label, a PersistentVolume's name a subdomain). Neither can be "." or "..".
_TAIL = (
    r"/pods/(?P<uid>[A-Za-z0-9-]{1,128})/volumes/"
    + re.escape(CSI_PLUGIN_DIR)
    + r"/(?P<volume>[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)/mount"
)
_ROOT = re.compile(r"(?:/[^/\x00]+)+")
MAX_ROOT = 1024


class TargetRules:
    """The daemon's settings for where legacy mode may write; checked once, at start-up."""

    __slots__ = ("allow_off_tmpfs", "kubelet_root", "shape")

    def __init__(self, kubelet_root: str = DEFAULT_KUBELET_ROOT, *, allow_off_tmpfs: bool = False) -> None:
        root = kubelet_root[:-1] if len(kubelet_root) > 1 and kubelet_root.endswith("/") else kubelet_root
        parts = root.split("/")[1:]
        if len(root) > MAX_ROOT or not _ROOT.fullmatch(root) or any(p in (".", "..") for p in parts):
            raise KeygateError(
                f"{describe('kubelet_root_dir')} must be a plain absolute directory such as "
                f"{DEFAULT_KUBELET_ROOT} (no '.', '..' or '//'), not {kubelet_root[:200]!r}"
            )
        self.kubelet_root = root
        self.allow_off_tmpfs = allow_off_tmpfs
        self.shape = re.compile(re.escape(root) + _TAIL)

    def expected(self) -> str:
        return f"{self.kubelet_root}/pods/<pod UID>/volumes/{CSI_PLUGIN_DIR}/<volume name>/mount"


def open_target(target: str, pod_uid: str, rules: TargetRules) -> int:
    """Check ``target`` against ``rules`` and the attested ``pod_uid``; return it opened.

    Raises :class:`InvalidRequest` naming what is wrong (the path, never content), or a
    :class:`KeygateError` when the check itself cannot be made; both fail closed.
    """
    shown = target[:300]
    match = rules.shape.fullmatch(target)
    if match is None:
        raise InvalidRequest(
            f"--write-files writes only into the kubelet's CSI volume directory of the requesting pod, "
            f"{rules.expected()}; target_path {target[:200]!r} is not of that shape (if this node's "
            f"kubelet uses another root directory, set {describe('kubelet_root_dir')})"
        )
    if match["uid"] != pod_uid:
        raise InvalidRequest(
            f"target_path {shown} is a volume of pod UID {match['uid']!r}, but this mount is for pod "
            f"UID {pod_uid[:128]!r}; --write-files writes only into the requesting pod's own volume"
        )
    fd = _walk(target, shown, rules)
    try:
        _check_memory_fs(fd, shown, rules)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(target: str, shown: str, rules: TargetRules) -> int:
    try:
        return dirfd.walk(target[1:].split("/"))
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else shown
        if exc.errno == errno.ELOOP:
            hint = (
                f"; if the kubelet root itself is reached through a link, set "
                f"{describe('kubelet_root_dir')} to the real directory"
                if len(where) <= len(rules.kubelet_root)
                else ""
            )
            raise InvalidRequest(
                f"{where} on the way to target_path {shown} is a symbolic link; keygate follows no "
                f"link to the volume and writes only into the real directory the driver created{hint}"
            ) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            what = "does not exist" if exc.errno == errno.ENOENT else "is not a directory"
            raise InvalidRequest(
                f"target_path {shown} is not an existing directory: {where} {what}"
            ) from None
        raise KeygateError(f"cannot open target_path {shown} at {where}: {exc.strerror}") from None


def _check_memory_fs(fd: int, shown: str, rules: TargetRules) -> None:
    try:
        kind = dirfd.fs_type(fd)
    except OSError as exc:
        raise KeygateError(
            f"cannot tell which filesystem target_path {shown} is on: {exc.strerror}"
        ) from None
    if kind in MEMORY_FILESYSTEMS or rules.allow_off_tmpfs:
        return
    raise InvalidRequest(
        f"target_path {shown} is on {kind[:40]}, not tmpfs: secrets written there would reach the "
        f"node's disk (the driver mounts a tmpfs at each volume before calling keygate); to write "
        f"anyway (INSECURE) set {describe('insecure_allow_write_files_off_tmpfs')}"
    )
