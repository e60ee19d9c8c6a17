"""Legacy mode: write the files into the target path ourselves, atomically.

Same scheme as the kubelet's atomic writer: write everything into a fresh timestamped directory,
point a temporary symlink at it, rename it over ``..data`` (rename is atomic), and make each
top-level name a symlink through ``..data``. Readers see either the old set or the new set,
never a mix; the previous data directory is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provider.errors import InvalidRequest, KeygateError

DATA_DIR = "..data"


@dataclass(frozen=True, slots=True)
class OutFile:
    """A file to hand back to the driver (and, in legacy mode, to write)."""

    path: str
    mode: int
    contents: bytes


def write_atomic(target: str, files: Sequence[OutFile]) -> None:
    """Replace the visible content of ``target`` with exactly ``files``."""
    if not target or not os.path.isabs(target):
        raise InvalidRequest("--write-files needs an absolute target_path in the request")
    root = Path(target)
    if not root.is_dir():
        raise InvalidRequest(f"target_path {target} is not an existing directory")
    try:
        _swap(root, files)
    except OSError as exc:
        raise KeygateError(f"writing files into {target} failed: {exc.strerror}") from None


def _swap(root: Path, files: Sequence[OutFile]) -> None:
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=root))
    try:
        for f in files:
            dest = new_dir / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(f.contents)
            os.chmod(dest, f.mode)
        os.chmod(new_dir, 0o755)  # noqa: S103 - same as the kubelet; files keep their own modes
        data_link = root / DATA_DIR
        old_dir = os.readlink(data_link) if data_link.is_symlink() else None
        tmp_link = root / f"..data_tmp{os.getpid()}"
        tmp_link.unlink(missing_ok=True)
        os.symlink(new_dir.name, tmp_link)
        os.rename(tmp_link, data_link)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    wanted = {f.path.split("/", 1)[0] for f in files}
    for top in wanted:
        link = root / top
        if not link.is_symlink():
            if link.exists():
                if link.is_dir():
                    shutil.rmtree(link)
                else:
                    link.unlink()
            os.symlink(f"{DATA_DIR}/{top}", link)
    for entry in root.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in wanted:
            entry.unlink()
    if old_dir and old_dir != new_dir.name:
        shutil.rmtree(root / old_dir, ignore_errors=True)
