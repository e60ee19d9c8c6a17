"""The checks every entry of the release policy's YAML gets (rules, signature requirements, their
keyless identities): a mapping of known keys only, and a usable ``name``. One wording for all, so
a typo in any of them reads the same and lists the keys that are allowed there."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from provider.errors import KeygateError


def known_mapping(
    value: object, where: str, shape: str, allowed: Set[str], error: type[KeygateError]
) -> dict[Any, Any]:
    """``value`` when it is a mapping with only ``allowed`` keys; else ``error`` saying which."""
    if not isinstance(value, dict):
        raise error(f"{where} must be {shape}")
    bad = sorted(set(map(str, value)) - allowed)
    if bad:
        raise error(f"{where}: unknown keys {', '.join(bad)} (allowed: {', '.join(sorted(allowed))})")
    return value


def entry_name(item: dict[Any, Any], where: str, default: str, error: type[KeygateError]) -> str:
    """The entry's ``name`` (``default`` when absent), a non-empty string."""
    name = item.get("name", default)
    if not isinstance(name, str) or not name:
        raise error(f"{where}: name must be a non-empty string")
    return name
