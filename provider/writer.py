"""Legacy mode: write the files into the target path ourselves, atomically and link-safe.

The scheme is the kubelet's atomic writer: the files go into a fresh timestamped directory,
``..data`` is switched to it with one rename, and each top-level name is a link through
``..data``, so readers see the old set or the new set, never a mix. Whatever already sits in
``target_path`` is treated as hostile: :mod:`provider.target` checks the path is the pod's own
volume and opens it without following links, then everything is done relative to that
descriptor with :mod:`provider.dirfd` (no link we did not create is ever followed),
foreign entries at the names we use are replaced, and only our own artefacts are removed.
See docs/write-files.md.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass

from provider import dirfd
from provider.errors import DeadlineExceeded, InvalidRequest, InvalidSPC, KeygateError, ResourceExhausted
from provider.target import TargetRules, open_target

log = logging.getLogger("keygate.writer")

DATA_DIR = "..data"
DATA_TMP = "..data_tmp"
LINK_TMP = "..link_tmp"
# Ours have 12 hex digits; the driver's own atomic writer (it also writes the files we return)
# uses the same layout with a decimal suffix, so its directories count as the same family.
STAMP_RE = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.[0-9a-f]{1,32}")
LOCK_WAIT = 10.0
DIR_MODE = 0o755  # the kubelet's; the files keep their own modes


@dataclass(frozen=True, slots=True)
class OutFile:
    """A file to hand back to the driver (and, in legacy mode, to write)."""

    path: str
    mode: int
    contents: bytes


def write_atomic(target: str, files: Sequence[OutFile], *, pod_uid: str, rules: TargetRules) -> None:
    """Replace the visible content of ``target`` with exactly ``files``; all or nothing.

    ``target`` must be a CSI volume directory of the pod ``pod_uid`` (the attested one) as
    ``rules`` define it; see :mod:`provider.target`. Raises :class:`InvalidRequest` for a bad
    ``target_path`` and a :class:`KeygateError` when writing fails; the previous complete set
    is then still in place.
    """
    tops = _plan(files)
    root = open_target(target, pod_uid, rules)
    shown = target[:300]
    try:
        mount = dirfd.mount_id(root)
        _lock(root, shown)
        _Swap(root, mount, files, tops).run()
    except OSError as exc:
        raise _error(shown, exc) from None
    finally:
        os.close(root)


def _plan(files: Sequence[OutFile]) -> set[str]:
    """Check every path and mode before touching the disk; return the top-level names."""
    paths: set[str] = set()
    parents: dict[str, str] = {}
    for f in files:
        parts = f.path.split("/")
        try:
            f.path.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"file name {f.path[:80]!r} is not valid UTF-8") from None
        if any(p in ("", ".", "..") or "\x00" in p for p in parts) or parts[0].startswith(".."):
            raise InvalidRequest(f"file name {f.path[:80]!r} does not name a file inside the volume")
        if len(parts) > dirfd.MAX_DEPTH:
            raise InvalidSPC(f"file {f.path[:80]!r} is nested deeper than {dirfd.MAX_DEPTH} directories")
        if isinstance(f.mode, bool) or not 0 <= f.mode <= 0o777:
            raise InvalidRequest(f"file {f.path[:80]!r} has mode {f.mode!r}, outside 0 to 0777")
        if f.path in paths:
            raise InvalidSPC(f"file {f.path[:80]!r} is written twice")
        paths.add(f.path)
        for i in range(1, len(parts)):
            parents.setdefault("/".join(parts[:i]), f.path)
    for path in paths & parents.keys():
        raise InvalidSPC(
            f"file {path[:80]!r} is also the directory of {parents[path][:80]!r}; rename one of them"
        )
    return {f.path.split("/", 1)[0] for f in files}


def _lock(root: int, target: str) -> None:
    """One writer per target_path at a time, across threads and processes (a daemon upgrade)."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(root, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise DeadlineExceeded(
                    f"another write into target_path {target} held its lock for over {LOCK_WAIT:g}s; "
                    "retry the mount"
                ) from None
            time.sleep(0.02)


def _error(target: str, exc: OSError) -> KeygateError:
    name = exc.filename2 if isinstance(exc.filename2, str) else exc.filename
    where = f" at {name!r}" if isinstance(name, str) else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ResourceExhausted(
            f"writing files into {target} failed{where}: {exc.strerror}; the volume is too small"
        )
    return KeygateError(f"writing files into {target} failed{where}: {exc.strerror}")


class _Swap:
    """One write: build the new data directory, link it in, then tidy up what was ours."""

    def __init__(self, root: int, mount: int, files: Sequence[OutFile], tops: set[str]) -> None:
        self.root = root
        self.mount = mount
        self.files = files
        self.tops = tops

    def run(self) -> None:
        old_tops = self._current()
        name, fd = self._new_dir()
        placed: list[str] = []
        try:
            try:
                self._fill(fd)
                self._link_tops(placed)
                _same_dir(self.root, name, fd)
            finally:
                os.close(fd)
            dirfd.place_link(self.root, DATA_DIR, name, DATA_TMP, self.mount)
        except BaseException:
            self._undo(name, placed, old_tops)
            raise
        try:
            self._tidy(name)
        except OSError as exc:
            log.warning("could not tidy target_path after a write", extra={"error": exc.strerror})

    def _current(self) -> set[str]:
        """The top-level names of the set in place, or, if ``..data`` is not ours, remove it.

        Ours means a link whose value is one of our directory names, at which sits a real
        directory. Anything else (a link elsewhere, a file, a directory) is removed now, so no
        link we place below can resolve through it before the switch.
        """
        value = dirfd.read_link(self.root, DATA_DIR)
        if value is not None and STAMP_RE.fullmatch(value):
            try:
                fd = dirfd.open_dir(self.root, value, self.mount)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    raise
            else:
                try:
                    return set(os.listdir(fd))
                finally:
                    os.close(fd)
        dirfd.remove(self.root, DATA_DIR, self.mount)
        return set()

    def _new_dir(self) -> tuple[str, int]:
        for _ in range(3):
            name = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + secrets.token_hex(6)
            try:
                return name, dirfd.make_dir(self.root, name, self.mount)
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, "could not pick a fresh data directory name")

    def _fill(self, data: int) -> None:
        """Write every file under the new directory, one directory descriptor at a time."""
        made: set[str] = set()
        for f in self.files:
            *dirs, leaf = f.path.split("/")
            here = data
            try:
                for i, part in enumerate(dirs):
                    prefix = "/".join(dirs[: i + 1])
                    fresh = prefix not in made
                    if fresh:
                        nxt = dirfd.make_dir(here, part, self.mount)
                        made.add(prefix)
                    else:
                        nxt = dirfd.open_dir(here, part, self.mount)
                    if here != data:
                        os.close(here)
                    here = nxt
                    if fresh:
                        os.fchmod(here, DIR_MODE)
                dirfd.write_file(here, leaf, f.contents, f.mode)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, f.path) from None
            finally:
                if here != data:
                    os.close(here)
        os.fchmod(data, DIR_MODE)

    def _link_tops(self, placed: list[str]) -> None:
        """Point each top-level name through ``..data``, replacing anything foreign there.

        Done before the switch: a new name resolves through the old ``..data`` (where it does
        not exist yet) until the rename, so readers still see only the old set.
        """
        for top in sorted(self.tops):
            value = f"{DATA_DIR}/{top}"
            if dirfd.read_link(self.root, top) == value:
                continue
            placed.append(top)
            dirfd.place_link(self.root, top, value, LINK_TMP, self.mount)

    def _undo(self, name: str, placed: list[str], old_tops: set[str]) -> None:
        """After a failure: drop our new directory and the links the old set does not have."""
        for top in placed:
            if top not in old_tops:
                _quietly(self.root, top, self.mount, only_link=f"{DATA_DIR}/{top}")
        _quietly(self.root, name, self.mount)

    def _tidy(self, name: str) -> None:
        """Remove what is ours and no longer used; foreign entries at other names are left alone.

        Ours: entries named like our data directories (real ones are removed as trees, impostor
        links or files just unlinked), our scratch links, and top-level links through
        ``..data`` that the new set does not list.
        """
        for entry in os.listdir(self.root):
            if entry in (DATA_DIR, name) or entry in self.tops:
                continue
            ours = STAMP_RE.fullmatch(entry) is not None or entry in (DATA_TMP, LINK_TMP)
            if ours or dirfd.read_link(self.root, entry) == f"{DATA_DIR}/{entry}":
                _quietly(self.root, entry, self.mount)


def _same_dir(root: int, name: str, fd: int) -> None:
    """Refuse to switch to ``name`` if it no longer is the directory we wrote into."""
    st, ours = dirfd.lstat(root, name), os.fstat(fd)
    if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino):
        raise OSError(errno.ESTALE, "the new data directory was replaced while being written", name)


def _quietly(root: int, entry: str, mount: int, only_link: str | None = None) -> None:
    """Best-effort removal once the outcome is settled: a failure is logged, not raised.

    With ``only_link``, the entry is removed only while it is still that link of ours.
    """
    try:
        if only_link is None or dirfd.read_link(root, entry) == only_link:
            dirfd.remove(root, entry, mount)
    except OSError as exc:
        log.warning(
            "could not remove a stale entry in target_path",
            extra={"entry": entry[:200], "error": exc.strerror},
        )
