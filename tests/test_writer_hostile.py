"""Legacy writer against a hostile target_path: nothing outside it is ever read, written or removed.

Each case plants something in target_path (links out of it, foreign files and directories at
our names, FIFOs, sockets, impostor data directories), runs the real writer twice, and checks
that the directories around target_path are byte-for-byte as before and that target_path ends
with exactly our files. The race tests swap links in while the writer runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provider import dirfd, writer
from provider.errors import (
    DeadlineExceeded,
    InvalidRequest,
    InvalidSPC,
    KeygateError,
    ResourceExhausted,
)
from provider.target import TargetRules
from provider.writer import STAMP_RE, OutFile, write_atomic
from tests.csi_volume import make_volume, tmpfs

FIRST = [
    OutFile("db-password", 0o400, b"pw-1"),
    OutFile("keys/k1", 0o440, b"k1-1"),
    OutFile("keys/sub/k2", 0o644, b"k2-1"),
    OutFile("a", 0o600, b"a-1"),
]
SECOND = [
    OutFile("db-password", 0o444, b"pw-2"),
    OutFile("keys/k1", 0o400, b"k1-2"),
    OutFile("b/c", 0o640, b"c-2"),
]
STAMP = "..2020_01_01_00_00_00.aaaaaaaaaaaa"
OTHER_STAMP = "..2020_01_01_00_00_01.bbbbbbbbbbbb"


UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@dataclass
class World:
    """A kubelet root under ``home``; the volume directory ``base`` holds ``target`` (the
    volume's ``mount`` directory) plus two directories that must never change."""

    home: Path
    base: Path
    target: Path
    outside: Path
    x: Path
    rules: TargetRules

    def write(self, files: list[OutFile], target: str | None = None) -> None:
        """The real writer, on a plain directory (tmpfs is waived; the confinement tests check it)."""
        write_atomic(str(self.target) if target is None else target, files, pod_uid=UID, rules=self.rules)

    def snap(self) -> dict[str, tuple[object, ...]]:
        """Everything under ``home`` but ``target``: types, contents, link values, modes, inodes."""
        out: dict[str, tuple[object, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.home):
            if Path(dirpath) == self.base and "mount" in dirnames:
                dirnames.remove("mount")
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = os.lstat(p)
                rel = str(p.relative_to(self.home))
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    out[rel] = ("file", p.read_bytes(), st.st_mode, st.st_ino, st.st_mtime_ns)
                else:
                    out[rel] = ("other", st.st_mode, st.st_ino, st.st_mtime_ns)
        return out


@pytest.fixture
def world() -> Iterator[World]:
    home = Path(tempfile.mkdtemp(prefix="kgw-"))
    target = make_volume(home / "kubelet", UID)
    base = target.parent
    rules = TargetRules(str(home / "kubelet"), allow_off_tmpfs=True)
    w = World(home, base, target, base / "outside", base / "x", rules)
    for root in (w.outside, w.x):
        (root / "keys" / "sub").mkdir(parents=True)
        (root / "secret.txt").write_bytes(b"OUTSIDE")
        (root / "db-password").write_bytes(b"someone else's")
        (root / "keys" / "k1").write_bytes(b"theirs")
        (root / "keys" / "sub" / "k2").write_bytes(b"theirs too")
        (root / STAMP).mkdir()
        (root / STAMP / "db-password").write_bytes(b"theirs, in a stamp dir")
        (root / "a").mkdir()
        (root / "a" / "file").write_bytes(b"theirs")
    yield w
    shutil.rmtree(home, ignore_errors=True)


def expected(files: list[OutFile]) -> dict[str, tuple[bytes, int]]:
    return {f.path: (f.contents, f.mode) for f in files}


def assert_ours(target: Path, files: list[OutFile], also: frozenset[str] = frozenset()) -> None:
    """target holds exactly ``files`` (plus the foreign names in ``also``), laid out as ours."""
    data = os.readlink(target / "..data")
    assert STAMP_RE.fullmatch(data), data
    tops = {f.path.split("/")[0] for f in files}
    assert set(os.listdir(target)) == tops | {"..data", data} | also
    for top in tops:
        assert os.readlink(target / top) == f"..data/{top}"
    root = target / data
    assert stat.S_ISDIR(os.lstat(root).st_mode)
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o755
    found: dict[str, tuple[bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            st = os.lstat(Path(dirpath) / name)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        for name in filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            assert stat.S_ISREG(st.st_mode), p
            found[str(p.relative_to(root))] = (p.read_bytes(), stat.S_IMODE(st.st_mode))
    assert found == expected(files)
    for f in files:
        assert (target / f.path).read_bytes() == f.contents


def mkfifo(p: Path) -> None:
    os.mkfifo(p)


def mksock(p: Path) -> None:
    """Bound by a relative name: the volume path is longer than a socket address may be."""
    here = os.getcwd()
    s = socket.socket(socket.AF_UNIX)
    try:
        os.chdir(p.parent)
        s.bind(p.name)
    finally:
        os.chdir(here)
        s.close()


def mknod(p: Path) -> None:
    """A character device (the one /dev/null is) at ``p``; skips where that needs privilege."""
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")


def nested_tree(root: Path, depth: int) -> None:
    p = root
    for _ in range(depth):
        p = p / "d"
    p.mkdir(parents=True)
    (p / "f").write_bytes(b"deep")


Setup = Callable[[World], None]


def _link(name: str, value: Callable[[World], str]) -> Setup:
    return lambda w: os.symlink(value(w), w.target / name)


def _dir_with_links(name: str) -> Setup:
    def setup(w: World) -> None:
        d = w.target / name
        (d / "inner").mkdir(parents=True)
        (d / "plain").write_bytes(b"foreign")
        os.symlink(w.outside / "secret.txt", d / "to-file")
        os.symlink(w.outside, d / "to-dir")
        os.symlink("../../x", d / "inner" / "up")
        os.symlink(w.outside / "keys", d / "keys")

    return setup


def _stamp_link_to(value: Callable[[World], str]) -> Setup:
    def setup(w: World) -> None:
        os.symlink(value(w), w.target / STAMP)
        os.symlink(STAMP, w.target / "..data")

    return setup


def _many(*steps: Setup) -> Setup:
    def setup(w: World) -> None:
        for step in steps:
            step(w)

    return setup


CASES: dict[str, Setup] = {
    "data-abs-outside": _link("..data", lambda w: str(w.outside)),
    "data-abs-outside-slash": _link("..data", lambda w: f"{w.outside}/"),
    "data-relative-up": _link("..data", lambda w: "../x"),
    "data-relative-up-missing": _link("..data", lambda w: "../nothing-here"),
    "data-to-outside-stamp": _link("..data", lambda w: f"../outside/{STAMP}"),
    "data-to-stamp-name-that-links-out": _stamp_link_to(lambda w: str(w.outside)),
    "data-to-stamp-name-that-links-up": _stamp_link_to(lambda w: f"../x/{STAMP}"),
    "data-is-real-dir": _dir_with_links("..data"),
    "data-is-file": lambda w: (w.target / "..data").write_bytes(b"junk"),
    "data-is-fifo": lambda w: mkfifo(w.target / "..data"),
    "data-is-socket": lambda w: mksock(w.target / "..data"),
    "top-links-to-files": _many(
        _link("db-password", lambda w: str(w.outside / "db-password")),
        _link("a", lambda w: "../x/secret.txt"),
    ),
    "top-links-to-dirs": _many(
        _link("keys", lambda w: f"{w.outside}/keys/"),
        _link("a", lambda w: str(w.x / "a")),
        _link("b", lambda w: "../outside"),
    ),
    "top-links-through-data-dotdot": _link("db-password", lambda w: "..data/../../outside/db-password"),
    "nested-parent-keys-links-out": _link("keys", lambda w: str(w.outside)),
    "foreign-files-at-our-names": _many(
        lambda w: (w.target / "db-password").write_bytes(b"planted"),
        lambda w: (w.target / "keys").write_bytes(b"file where a dir goes"),
    ),
    "foreign-dirs-at-our-names": _many(_dir_with_links("a"), _dir_with_links("db-password")),
    "dir-where-file-goes-and-file-where-dir-goes": _many(
        _dir_with_links("a"), lambda w: (w.target / "b").write_bytes(b"file where b/c goes")
    ),
    "fifo-and-socket-at-our-names": _many(
        lambda w: mkfifo(w.target / "db-password"), lambda w: mksock(w.target / "a")
    ),
    "hard-link-to-outside-file": lambda w: os.link(w.outside / "db-password", w.target / "db-password"),
    "device-node-at-our-name": lambda w: mknod(w.target / "a"),
    "scratch-names-taken": _many(
        _link("..data_tmp", lambda w: str(w.outside)),
        lambda w: mkfifo(w.target / "..link_tmp"),
    ),
    "scratch-name-is-dir": _dir_with_links("..data_tmp"),
    "impostor-stamp-dirs": _many(
        _dir_with_links(STAMP),
        _link(OTHER_STAMP, lambda w: str(w.outside / STAMP)),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_content_is_replaced_and_outside_untouched(world: World, case: str) -> None:
    CASES[case](world)
    before = world.snap()
    world.write(FIRST)
    assert world.snap() == before
    not_yet_ours = frozenset({"b"} & set(os.listdir(world.target)))  # a SECOND name, left alone
    assert_ours(world.target, FIRST, also=not_yet_ours)
    world.write(SECOND)
    assert world.snap() == before
    assert_ours(world.target, SECOND)


def test_our_dir_renamed_and_its_name_linked_out(world: World) -> None:
    world.write(FIRST)
    mine = os.readlink(world.target / "..data")
    os.rename(world.target / mine, world.target / OTHER_STAMP)
    os.symlink(world.outside, world.target / mine)
    before = world.snap()
    world.write(SECOND)
    assert world.snap() == before
    assert_ours(world.target, SECOND)


def test_our_dir_renamed_to_a_foreign_name_is_left_alone(world: World) -> None:
    world.write(FIRST)
    mine = os.readlink(world.target / "..data")
    os.rename(world.target / mine, world.target / "mine")
    (world.target / "..data").unlink()
    os.symlink("mine", world.target / "..data")
    before = world.snap()
    world.write(SECOND)
    assert world.snap() == before
    assert_ours(world.target, SECOND, also=frozenset({"mine"}))
    assert (world.target / "mine" / "db-password").read_bytes() == b"pw-1"


def test_links_planted_inside_our_previous_data_dir_are_not_followed(world: World) -> None:
    world.write(FIRST)
    old = world.target / os.readlink(world.target / "..data")
    shutil.rmtree(old / "keys")
    os.symlink(world.outside / "keys", old / "keys")
    os.symlink(world.outside, old / "to-outside")
    os.symlink("../../x", old / "up")
    before = world.snap()
    world.write(SECOND)
    assert world.snap() == before
    assert_ours(world.target, SECOND)
    assert not old.exists()


def test_the_drivers_own_layout_is_taken_over(world: World) -> None:
    """The driver's atomic writer (decimal suffix) writes the files we return: same family."""
    theirs = "..2024_01_01_00_00_00.1234567890"
    (world.target / theirs / "keys").mkdir(parents=True)
    (world.target / theirs / "db-password").write_bytes(b"pw-0")
    (world.target / theirs / "gone").write_bytes(b"old")
    os.symlink(theirs, world.target / "..data")
    for name in ("db-password", "keys", "gone"):
        os.symlink(f"..data/{name}", world.target / name)
    (world.target / "..2024_01_01_00_00_00.987").mkdir()  # one the driver left behind
    world.write(FIRST)
    assert_ours(world.target, FIRST)


def test_foreign_entries_at_names_we_do_not_use_are_left_alone(world: World) -> None:
    """Only names we write or created are ours; anything else belongs to whoever put it there."""
    os.symlink(world.outside, world.target / "unrelated")
    (world.target / "notes.txt").write_bytes(b"foreign")
    os.symlink(world.outside, world.target / "..foreign")
    before = world.snap()
    world.write(FIRST)
    world.write(SECOND)
    assert world.snap() == before
    assert_ours(world.target, SECOND, also=frozenset({"unrelated", "notes.txt", "..foreign"}))
    assert os.readlink(world.target / "unrelated") == str(world.outside)


def test_a_set_that_turns_files_into_dirs_and_back(world: World) -> None:
    sets = [
        [OutFile("a", 0o644, b"file")],
        [OutFile("a/b", 0o644, b"nested"), OutFile("c", 0o644, b"c")],
        [OutFile("a", 0o600, b"file again"), OutFile("c/d", 0o600, b"dir now")],
        [],
    ]
    for files in sets:
        world.write(files)
        assert_ours(world.target, files)
    assert len([n for n in os.listdir(world.target) if STAMP_RE.fullmatch(n)]) == 1


def test_modes_are_exactly_as_requested(world: World) -> None:
    files = [OutFile(f"m{m:o}", m, b"v") for m in (0o000, 0o400, 0o644, 0o666, 0o777)]
    old = os.umask(0o077)
    try:
        world.write(files)
    finally:
        os.umask(old)
    assert_ours(world.target, files)


def test_target_itself_a_symlink_is_refused(world: World) -> None:
    link = world.base.parent / "linked" / "mount"
    link.parent.mkdir()
    os.symlink(world.outside, link)
    before = world.snap()
    for path in (str(link), f"{link}/", f"{link}//"):
        with pytest.raises(InvalidRequest) as info:
            world.write(FIRST, target=path)
        assert "symbolic link" in info.value.message or "not of that shape" in info.value.message
    assert world.snap() == before


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("{vols}/missing/mount", "not an existing directory"),
        ("{vols}/file-volume/mount", "not an existing directory"),
        ("{vols}/file-mount/mount", "not an existing directory"),
        ("relative/target", "not of that shape"),
        ("", "not of that shape"),
        ("{base}/outside/secret.txt", "not of that shape"),
        ("{base}/mount/../outside", "not of that shape"),
        ("{base}/./mount", "not of that shape"),
        ("{vols}//secrets/mount", "not of that shape"),
        ("{base}/mount\x00", "not of that shape"),
        ("{base}/mount/", "not of that shape"),
    ],
)
def test_bad_target_path_is_a_clear_error(world: World, path: str, words: str) -> None:
    """A trailing slash is refused too now: the kubelet never sends one (the path is matched whole)."""
    vols = world.base.parent
    (vols / "file-volume").write_bytes(b"a file where a volume directory goes")
    (vols / "file-mount").mkdir()
    (vols / "file-mount" / "mount").write_bytes(b"a file where the mount directory goes")
    before = world.snap()
    with pytest.raises(InvalidRequest) as info:
        world.write(FIRST, target=path.format(base=world.base, vols=vols))
    assert words in info.value.message
    assert world.snap() == before
    assert os.listdir(world.target) == []


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([OutFile("a", 0o644, b"1"), OutFile("a/b", 0o644, b"2")], "also the directory of 'a/b'"),
        ([OutFile("a/b", 0o644, b"1"), OutFile("a", 0o644, b"2")], "also the directory of 'a/b'"),
        ([OutFile("a", 0o644, b"1"), OutFile("a", 0o644, b"2")], "written twice"),
        ([OutFile("/".join(["d"] * 101), 0o644, b"1")], "deeper than 100"),
    ],
)
def test_conflicting_paths_are_refused_before_writing(world: World, files: list[OutFile], words: str) -> None:
    with pytest.raises(InvalidSPC) as info:
        world.write(files)
    assert words in info.value.message
    assert os.listdir(world.target) == []


@pytest.mark.parametrize(
    "bad",
    [
        OutFile("..data/x", 0o644, b""),
        OutFile("..2020_01_01_00_00_00.aaaaaaaaaaaa", 0o644, b""),
        OutFile("..data_tmp", 0o644, b""),
        OutFile("a/../b", 0o644, b""),
        OutFile("a//b", 0o644, b""),
        OutFile("/abs", 0o644, b""),
        OutFile("a\x00b", 0o644, b""),
        OutFile("bad-\ud800", 0o644, b""),
        OutFile("a", 0o4755, b""),
        OutFile("a", -1, b""),
    ],
)
def test_paths_and_modes_are_checked_again(world: World, bad: OutFile) -> None:
    with pytest.raises(InvalidRequest):
        world.write([bad])
    assert os.listdir(world.target) == []


def test_a_foreign_tree_too_deep_to_remove_is_a_clear_error(world: World) -> None:
    world.write(FIRST)
    (world.target / "db-password").unlink()
    nested_tree(world.target / "db-password", dirfd.MAX_DEPTH + 5)
    before = world.snap()
    with pytest.raises(KeygateError) as info:
        world.write(FIRST)
    assert "deeper than 100" in info.value.message and "pw-1" not in info.value.message
    assert world.snap() == before


def test_a_failure_while_linking_takes_back_the_new_links(world: World) -> None:
    """``a-new`` is linked before ``z`` fails (a tree too deep to remove): a-new goes again."""
    old = [OutFile("db-password", 0o400, b"pw-1")]
    world.write(old)
    nested_tree(world.target / "z", dirfd.MAX_DEPTH + 5)
    new = [OutFile("a-new", 0o644, b"n"), OutFile("db-password", 0o400, b"pw-2"), OutFile("z", 0o644, b"z")]
    with pytest.raises(KeygateError):
        world.write(new)
    assert_ours(world.target, old, also=frozenset({"z"}))
    shutil.rmtree(world.target / "z")
    world.write(new)
    assert_ours(world.target, new)


def test_a_write_that_fails_half_way_keeps_the_previous_set(world: World) -> None:
    """A file over RLIMIT_FSIZE fails the write after other files went in (EFBIG, no mocking)."""
    world.write(FIRST)
    data = os.readlink(world.target / "..data")
    big = [OutFile("new-small", 0o400, b"new"), OutFile("zz-big", 0o400, b"x" * 200_000)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(ResourceExhausted) as info:
            world.write(SECOND + big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "zz-big" in info.value.message and "x" * 10 not in info.value.message
    assert os.readlink(world.target / "..data") == data
    assert_ours(world.target, FIRST)


def test_full_tmpfs_fails_cleanly_and_keeps_the_previous_set(world: World) -> None:
    """The driver mounts a tmpfs at target_path: a set that does not fit leaves the old one."""
    with tmpfs(world.target, "256k"):
        world.write(FIRST)
        data = os.readlink(world.target / "..data")
        with pytest.raises(ResourceExhausted) as info:
            world.write([*SECOND, OutFile("huge", 0o400, b"y" * 1_000_000)])
        assert "too small" in info.value.message
        assert os.readlink(world.target / "..data") == data
        assert_ours(world.target, FIRST)
        world.write(SECOND)
        assert_ours(world.target, SECOND)


def test_a_mount_point_inside_target_is_not_entered(world: World) -> None:
    """A bind mount of the outside at one of our names: refused, never emptied."""
    (world.target / "a").mkdir()
    done = subprocess.run(["mount", "--bind", str(world.x), str(world.target / "a")], check=False)
    if os.geteuid() != 0 or done.returncode != 0:
        pytest.skip("needs root and mount(8)")
    try:
        before = world.snap()
        with pytest.raises(KeygateError) as info:
            world.write(FIRST)
        assert "mount point" in info.value.message
        assert world.snap() == before
        assert (world.target / "a" / "secret.txt").read_bytes() == b"OUTSIDE"
    finally:
        subprocess.run(["umount", "-l", str(world.target / "a")], check=False)


def test_no_descriptor_leaks(world: World) -> None:
    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    world.write(FIRST)
    start = count()
    for i in range(30):
        world.write(FIRST if i % 2 else SECOND)
        with pytest.raises(InvalidSPC):
            world.write([OutFile("a", 0o644, b""), OutFile("a/b", 0o644, b"")])
        with pytest.raises(InvalidRequest):
            world.write(FIRST, target=str(world.base.parent / "missing" / "mount"))
        with pytest.raises(InvalidRequest):
            world.write(FIRST, target=str(world.base / "outside"))
    assert count() == start


def test_concurrent_writers_serialise(world: World) -> None:
    sets = [[OutFile("v", 0o644, str(i).encode()), OutFile(f"only-{i}/f", 0o644, b"x")] for i in range(6)]
    errors: list[BaseException] = []

    def run(files: list[OutFile]) -> None:
        try:
            for _ in range(10):
                world.write(files)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    value = (world.target / "v").read_bytes()
    assert_ours(world.target, sets[int(value)])


def test_a_held_lock_times_out_cleanly(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "LOCK_WAIT", 0.2)
    world.write(FIRST)
    fd = os.open(world.target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(DeadlineExceeded) as info:
            world.write(SECOND)
        assert "retry" in info.value.message
    finally:
        os.close(fd)
    assert_ours(world.target, FIRST)


# --- races: a thread keeps swapping links to the outside in while the writer runs ------------


def _swap_in_link(target: Path, name: str, value: str) -> None:
    tmp = target / f"evil-{threading.get_ident()}"
    with contextlib.suppress(OSError):
        os.symlink(value, tmp)
        os.rename(tmp, target / name)
    with contextlib.suppress(OSError):
        tmp.unlink()


def _stamps(target: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return [n for n in os.listdir(target) if STAMP_RE.fullmatch(n)]
    return []


def attack_data_link(w: World, i: int) -> None:
    _swap_in_link(w.target, "..data", str(w.outside) if i % 2 else "../x")


def attack_stamp_dirs(w: World, i: int) -> None:
    for name in _stamps(w.target):
        with contextlib.suppress(OSError):
            os.rename(w.target / name, w.target / f"{OTHER_STAMP[:-4]}{i % 10000:04d}")
            os.symlink(w.outside, w.target / name)


def attack_top_names(w: World, i: int) -> None:
    for name in ("db-password", "keys", "a", "b", "..data_tmp", "..link_tmp"):
        _swap_in_link(w.target, name, str(w.outside / name) if i % 2 else f"../x/{name}")


def attack_inside_data_dirs(w: World, i: int) -> None:
    for name in _stamps(w.target):
        for inner in ("keys", "b", "sub", "db-password"):
            with contextlib.suppress(OSError):
                os.symlink(w.outside if i % 2 else w.x, w.target / name / inner)
        with contextlib.suppress(OSError):
            os.rename(w.target / name / "keys", w.target / name / "moved")
            os.symlink(w.outside / "keys", w.target / name / "keys")


ATTACKS = {
    "data-link": attack_data_link,
    "stamp-dirs": attack_stamp_dirs,
    "top-names": attack_top_names,
    "inside-data-dirs": attack_inside_data_dirs,
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_racing_link_swaps_never_reach_outside(world: World, attack: str) -> None:
    before = world.snap()
    stop = threading.Event()

    def attacker() -> None:
        i = 0
        while not stop.is_set():
            ATTACKS[attack](world, i)
            i += 1

    thread = threading.Thread(target=attacker, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the two threads finely
    thread.start()
    failures = 0
    reasons: set[str] = set()
    try:
        for i in range(100):
            try:
                world.write(FIRST if i % 2 else SECOND)
            except KeygateError as exc:
                failures += 1
                reasons.add(exc.message.split("failed", 1)[-1])
                assert "pw-" not in exc.message and "k1-" not in exc.message
            assert world.snap() == before, f"outside changed in iteration {i}"
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert world.snap() == before
    for files in (FIRST, SECOND):
        world.write(files)
    assert world.snap() == before
    stray = {n for n in os.listdir(world.target) if not STAMP_RE.fullmatch(n)} - {
        "..data",
        "db-password",
        "keys",
        "b",
    }
    assert_ours(world.target, SECOND, also=frozenset(stray))
    assert failures < 100, f"the writer never succeeded: {sorted(reasons)}"


def test_errno_of_a_link_where_a_dir_is_opened() -> None:
    """The kernel refuses O_NOFOLLOW|O_DIRECTORY on a link with ELOOP or ENOTDIR (both handled)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(tmp, Path(tmp) / "l")
        with pytest.raises(OSError) as info:
            os.open(Path(tmp) / "l", dirfd.DIR_FLAGS)
        assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)
