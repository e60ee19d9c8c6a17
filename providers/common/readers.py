"""Typed readers for SPC values: the one truthy parser, strings, whole numbers.

SPC parameters are strings (the CRD types them ``map[string]string``) and object fields are
whatever YAML made of them, so each reader accepts exactly the spellings users write and names
the value at fault otherwise (never echoing more than a short prefix).
"""

from __future__ import annotations

from typing import Any

from provider.errors import InvalidSPC

TRUE = frozenset({"true", "t", "1", "yes", "on"})
FALSE = frozenset({"", "false", "f", "0", "no", "off"})


def truthy(value: Any, label: str) -> bool:
    """``true``/``t``/``yes``/``on``/``1`` or ``false``/``f``/``no``/``off``/``0``/empty, any case
    (the peers' Go ``strconv.ParseBool`` spellings included)."""
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise InvalidSPC(f"{label} must be true or false")


def string(value: Any, label: str) -> str:
    """A scalar as text; a mapping, list or boolean is refused (it was surely a YAML slip)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidSPC(f"{label} must be a string")
    return str(value)


def whole(value: Any, label: str, low: int, high: int) -> int:
    """A whole number within [low, high], written as a number or a string."""
    if isinstance(value, bool):
        raise InvalidSPC(f"{label} must be a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidSPC(f"{label} must be a whole number") from None
    if not low <= number <= high:
        raise InvalidSPC(f"{label} must be between {low} and {high}")
    return number
