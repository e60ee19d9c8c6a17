"""File paths and modes: the rules the driver enforces, checked early with clearer messages."""

from __future__ import annotations

import posixpath
import unicodedata
from typing import Any

from provider.errors import InvalidSPC

MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
# Control, format (bidi overrides, zero-width), line and paragraph separator characters: a file
# name with one displays as something else in ``ls`` and in logs.
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def clean_path(raw: str, where: str) -> str:
    """A relative, normalised path the driver can write; raises InvalidSPC otherwise.

    The rules are the ones the driver's atomic writer and Linux enforce, checked on the whole
    string before anything is fetched: no ``..`` element, no leading ``..`` (the writer's own
    ``..data`` names), no absolute path, no NUL, backslash or unprintable character, at most
    4096 bytes in all and 255 bytes per component. ``where`` names the SPC entry so the user
    can find it (e.g. ``objects[2] 'db'``).
    """
    if not raw or not raw.strip():
        raise InvalidSPC(f"{where}: the file name is empty")
    if "\x00" in raw or "\\" in raw:
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} contains a NUL or backslash")
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} is not valid UTF-8") from None
    bad = next((ch for ch in raw if unicodedata.category(ch) in UNPRINTABLE_CATEGORIES), None)
    if bad is not None:
        raise InvalidSPC(
            f"{where}: file name {raw[:80]!r} contains the unprintable character U+{ord(bad):04X}"
        )
    if size > MAX_PATH_BYTES:
        raise InvalidSPC(f"{where}: file name is {size} bytes long; the limit is {MAX_PATH_BYTES}")
    if raw.startswith("/"):
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} is absolute; use a relative path")
    if ".." in raw.split("/"):
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} contains '..'; paths must stay inside the volume")
    path = posixpath.normpath(raw)
    if path in (".", "") or path.startswith(".."):
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} does not name a file inside the volume")
    for part in path.split("/"):
        length = len(part.encode("utf-8"))
        if length > MAX_COMPONENT_BYTES:
            raise InvalidSPC(
                f"{where}: file name component {part[:40]!r}... is {length} bytes long; "
                f"each part of a path may have at most {MAX_COMPONENT_BYTES} bytes"
            )
    return path


class PathClaims:
    """The files one mount writes: no file twice, and no file that is also another's directory.

    ``a`` and ``a/b`` cannot both be written (``a`` would have to be a file and a directory),
    in whichever order the objects list them; the driver would fail half-way through writing.
    """

    def __init__(self) -> None:
        self._files: dict[str, str] = {}
        self._dirs: dict[str, str] = {}

    def claim(self, path: str, where: str, hint: str = "") -> None:
        """Record that ``where`` writes ``path`` (a :func:`clean_path` result), or raise InvalidSPC."""
        suffix = f"; {hint}" if hint else ""
        if path in self._files:
            raise InvalidSPC(f"{where}: file {path!r} is also written by {self._files[path]}{suffix}")
        if path in self._dirs:
            raise InvalidSPC(
                f"{where}: file {path!r} is also a directory, because {self._dirs[path]} writes a file "
                f"under it{suffix}"
            )
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for prefix in prefixes:
            if prefix in self._files:
                raise InvalidSPC(
                    f"{where}: file {path!r} needs {prefix!r} to be a directory, but {self._files[prefix]} "
                    f"writes a file {prefix!r}{suffix}"
                )
        self._files[path] = where
        for prefix in prefixes:
            self._dirs.setdefault(prefix, where)


def parse_mode(raw: Any, where: str) -> int:
    """A file mode from the SPC: an octal string ("0400", "400") or an already-decoded integer.

    YAML 1.1 reads an unquoted ``0400`` as the integer 256, which is why integers are taken as
    decoded mode bits while strings are always octal.
    """
    if isinstance(raw, bool):
        raise InvalidSPC(f'{where}: file mode must be an octal string such as "0400", not a boolean')
    if isinstance(raw, int):
        if 0 <= raw <= 0o777:
            return raw
        raise InvalidSPC(f"{where}: file mode {raw} is out of range (0 to 0777)")
    if isinstance(raw, str):
        text = raw.strip()
        digits = text[2:] if text[:2] in ("0o", "0O") else text
        if 3 <= len(digits) <= 4 and all(c in "01234567" for c in digits):
            value = int(digits, 8)
            if value <= 0o777:
                return value
        raise InvalidSPC(
            f'{where}: file mode {raw[:20]!r} is not an octal permission such as "0400" or "0644"'
        )
    raise InvalidSPC(f'{where}: file mode must be an octal string such as "0400"')
