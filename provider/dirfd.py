"""Filesystem steps relative to a directory descriptor that never follow a symbolic link.

Legacy mode writes into a directory whose content an attacker may have shaped. Resolving
paths there would let a planted link steer a write or a delete outside it, so every call here
takes an open directory descriptor and one name: directories are entered only with
``O_DIRECTORY | O_NOFOLLOW`` (a link there fails with ``ELOOP``/``ENOTDIR`` instead of being
followed), entries are inspected with ``lstat``, and links are only ever unlinked or renamed,
which act on the link itself. Every directory we enter was therefore reached from the root
descriptor through real directories, and is on the root's own mount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 100
_RETRIES = 3
# The entry changed type between our lstat and our call: look again.
_RACED = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST})


def mount_id(fd: int) -> int:
    """The id of the mount ``fd`` lives on, from ``/proc/self/fdinfo`` (Linux 3.15 and later).

    ``st_dev`` cannot tell a bind mount of another directory of the same filesystem from a
    plain directory; the mount id can.
    """
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    raise OSError(errno.ENOSYS, "cannot read mount ids from /proc/self/fdinfo (is /proc mounted?)")


def fs_type(fd: int) -> str:
    """The filesystem type (``tmpfs``, ``ext4``...) of the mount ``fd`` lives on.

    Looked up by mount id in ``/proc/self/mountinfo``, the same id :func:`mount_id` reads, so it
    names the mount the descriptor is on, not whatever a path resolves to now. Python has no
    ``fstatfs``, and calling it through ctypes would hard-code ``struct statfs``, whose layout
    differs between architectures.
    """
    wanted = str(mount_id(fd)).encode()
    try:
        with open("/proc/self/mountinfo", "rb") as info:
            for line in info:
                fields = line.split()
                if fields[:1] != [wanted]:
                    continue
                # id parent dev root point options [optional...] - fstype source super-options
                rest = fields[6:]
                if b"-" in rest and rest.index(b"-") + 1 < len(rest):
                    return rest[rest.index(b"-") + 1].decode("ascii", "replace")
                break
    except OSError as exc:
        raise OSError(exc.errno, "cannot read /proc/self/mountinfo (is /proc mounted?)") from None
    raise OSError(errno.ENOENT, "the mount of target_path is not in /proc/self/mountinfo")


def walk(parts: Sequence[str]) -> int:
    """Open the directory ``/`` + ``parts`` one level at a time, following no link on the way.

    Each level is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, so a link at
    any level fails with ``ELOOP`` (its path as the file name) instead of being followed.
    Mount points may be crossed: the ancestry of a kubelet volume spans several mounts.
    """
    if any(part in ("", ".", "..") or "/" in part or "\x00" in part for part in parts):
        raise ValueError("walk takes plain path components")
    fd = os.open("/", DIR_FLAGS)
    try:
        for depth, name in enumerate(parts):
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                where = "/" + "/".join(parts[: depth + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, name):
                    raise OSError(errno.ELOOP, "is a symbolic link", where) from None
                raise OSError(exc.errno, exc.strerror, where) from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(parent_fd: int, name: str) -> bool:
    try:
        st = lstat(parent_fd, name)
    except OSError:
        return False
    return st is not None and stat.S_ISLNK(st.st_mode)


def open_dir(parent_fd: int, name: str, mount: int) -> int:
    """Open the real directory ``name`` inside ``parent_fd``; a link or a mount point is refused."""
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        if mount_id(fd) != mount:
            raise OSError(errno.EXDEV, "a mount point sits inside target_path", name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat(parent_fd: int, name: str) -> os.stat_result | None:
    """The entry itself (a link is not followed), or None when there is none."""
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def read_link(parent_fd: int, name: str) -> str | None:
    """The value of the link ``name``, or None when it is not a link (or is gone)."""
    try:
        return os.readlink(name, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return None
        raise


def remove(parent_fd: int, name: str, mount: int) -> None:
    """Remove whatever is at ``name`` (a whole real directory tree included); nothing is followed.

    Missing is fine. An entry that changes type under us (a directory swapped for a link) is
    looked at again, a few times, then the error stands.
    """
    for attempt in range(_RETRIES):
        st = lstat(parent_fd, name)
        try:
            if st is None:
                return
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(parent_fd, name, mount, 0)
            else:
                os.unlink(name, dir_fd=parent_fd)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in _RACED or attempt == _RETRIES - 1:
                raise


def _remove_tree(parent_fd: int, name: str, mount: int, depth: int) -> None:
    """Empty and remove one real directory; each level holds one descriptor, hence the depth cap."""
    if depth >= MAX_DEPTH:
        raise OSError(errno.ELOOP, f"directories nested deeper than {MAX_DEPTH} levels", name)
    try:
        fd = open_dir(parent_fd, name, mount)
    except FileNotFoundError:
        return
    try:
        for entry in os.listdir(fd):
            st = lstat(fd, entry)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(fd, entry, mount, depth + 1)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)


def make_dir(parent_fd: int, name: str, mount: int) -> int:
    """Create the directory ``name`` (it must not exist yet) and return it opened, mode 0700."""
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    return open_dir(parent_fd, name, mount)


def write_file(parent_fd: int, name: str, contents: bytes, mode: int) -> None:
    """Create ``name`` (it must not exist yet), write ``contents``, then set ``mode`` exactly."""
    fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent_fd)
    try:
        view = memoryview(contents)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def place_link(parent_fd: int, name: str, value: str, tmp: str, mount: int) -> None:
    """Make ``name`` a link to ``value`` in one rename, whatever was there before.

    The link is made at the scratch name ``tmp`` and renamed over ``name``, so a reader sees the
    old entry or the new link. Only a directory at ``name`` has to be removed first (a link
    cannot be renamed over one).
    """
    for attempt in range(_RETRIES):
        remove(parent_fd, tmp, mount)
        try:
            os.symlink(value, tmp, dir_fd=parent_fd)
            break
        except FileExistsError:
            if attempt == _RETRIES - 1:
                raise
    try:
        for attempt in range(_RETRIES):
            st = lstat(parent_fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                remove(parent_fd, name, mount)
            try:
                os.rename(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
                return
            except OSError as exc:
                if exc.errno not in _RACED or attempt == _RETRIES - 1:
                    raise
    except BaseException:
        remove(parent_fd, tmp, mount)
        raise
