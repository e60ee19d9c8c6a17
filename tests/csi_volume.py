"""A kubelet root laid out in a temporary directory, for legacy write mode (--write-files) tests.

In write-files mode keygate writes only into ``<kubelet_root_dir>/pods/<pod UID>/volumes/
kubernetes.io~csi/<volume>/mount`` and only when it is on tmpfs; tests build that layout under
a temporary root and point the daemon at it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PLUGIN = "kubernetes.io~csi"


def volume_path(root: Path, pod_uid: str, name: str = "secrets") -> Path:
    """Where the kubelet puts the CSI volume ``name`` of pod ``pod_uid``."""
    return root / "pods" / pod_uid / "volumes" / PLUGIN / name / "mount"


def make_volume(root: Path, pod_uid: str, name: str = "secrets") -> Path:
    path = volume_path(root, pod_uid, name)
    path.mkdir(parents=True)
    return path


def off_tmpfs(root: Path) -> dict[str, Any]:
    """Daemon settings for tests about something else, run on a plain (non-tmpfs) directory."""
    return {"kubelet_root_dir": str(root), "insecure_allow_write_files_off_tmpfs": True}


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", kind: str = "tmpfs") -> Iterator[None]:
    """Mount a real tmpfs (or ramfs) at ``path``; skips the test without root or mount(8)."""
    options = ["-o", f"size={size}"] if kind == "tmpfs" else []
    if os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a real tmpfs")
    done = subprocess.run(["mount", "-t", kind, *options, kind, str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"mount -t {kind} failed: {done.stderr.decode(errors='replace')[:200]}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
