"""File paths and modes: the rules the driver enforces, checked early with clearer messages."""

from __future__ import annotations

import posixpath
from typing import Any

from provider.errors import InvalidSPC

MAX_PATH_BYTES = 4096


def clean_path(raw: str, where: str) -> str:
    """A relative, normalised path with no ``..`` element; raises InvalidSPC otherwise.

    ``where`` names the SPC entry so the user can find it (e.g. ``objects[2] 'db'``).
    """
    if not raw or not raw.strip():
        raise InvalidSPC(f"{where}: the file name is empty")
    if "\x00" in raw or "\\" in raw:
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} contains a NUL or backslash")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidSPC(f"{where}: file name is longer than {MAX_PATH_BYTES} bytes")
    if raw.startswith("/"):
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} is absolute; use a relative path")
    if ".." in raw.split("/"):
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} contains '..'; paths must stay inside the volume")
    path = posixpath.normpath(raw)
    if path in (".", "") or path.startswith("..") or path == "..data" or path.startswith("..data/"):
        raise InvalidSPC(f"{where}: file name {raw[:80]!r} does not name a file inside the volume")
    return path


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
