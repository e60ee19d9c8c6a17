"""Reads that may come back as "gone": the one helper backends use to report revocations."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TypeVar

from provider.errors import KeygateError

T = TypeVar("T")


async def settle(read: Awaitable[T]) -> T | KeygateError:
    """The read's value, or its error when the error is marked gone; anything else raises.

    Run inside ``gather_all`` so one gone object does not cancel the others' reads, while an
    outage still fails the group.
    """
    try:
        return await read
    except KeygateError as exc:
        if exc.gone is None:
            raise
        return exc


def id_pattern(object_id: str, suffix: str = "") -> str:
    """A regular expression for the ids an object is served under: ``object_id`` itself, or
    followed by ``suffix`` (a regular expression for what ``unique_ids`` or derived files add)."""
    return re.escape(object_id) + (f"(?:{suffix})?" if suffix else "")
