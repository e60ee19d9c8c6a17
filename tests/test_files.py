from __future__ import annotations

import pytest

from provider.errors import InvalidSPC
from provider.files import clean_path, parse_mode


@pytest.mark.parametrize(("raw", "clean"), [("a", "a"), ("a/b", "a/b"), ("./a//b/", "a/b"), ("a/./b", "a/b")])
def test_clean_paths(raw, clean):
    assert clean_path(raw, "x") == clean


@pytest.mark.parametrize(
    "raw", ["", " ", "/abs", "..", "../a", "a/../b", "a/..", ".", "..data", "..data/x", "a\\b", "a\x00b"]
)
def test_rejected_paths(raw):
    with pytest.raises(InvalidSPC):
        clean_path(raw, "x")


@pytest.mark.parametrize(
    ("raw", "mode"),
    [("0400", 0o400), ("400", 0o400), ("0o644", 0o644), ("0777", 0o777), (256, 0o400), (0, 0)],
)
def test_modes(raw, mode):
    assert parse_mode(raw, "x") == mode


@pytest.mark.parametrize("raw", ["0999", "rw", "1777", "07777", "", 512, -1, True, 1.5, "4"])
def test_bad_modes(raw):
    with pytest.raises(InvalidSPC):
        parse_mode(raw, "x")
