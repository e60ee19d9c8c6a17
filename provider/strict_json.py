"""JSON read strictly: an object naming one member twice is refused.

Parsers disagree on which of two equal members wins, so a document that a signature, a token
check or a second reader could see differently is never accepted.
"""

from __future__ import annotations

import json
from typing import Any


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` raising ValueError (naming the member, cut short) on a duplicate."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key[:80]!r}")
        out[key] = value
    return out


def loads(data: bytes | str) -> Any:
    """``json.loads`` with duplicate members refused."""
    return json.loads(data, object_pairs_hook=unique_members)
