"""Shared listings: the selector listings of concurrent Mounts of one identity go out once.

A mass rollout of 100 replicas with a selector would otherwise send 100 identical listings. A
listing is keyed like a read of its backend (endpoint and the identity the backend sees, see
:mod:`providers.common.shared_reads`) plus the selector: its place and name in the SPC, its
prefix, depth, filters and limit. The leader lists into an :class:`Expansion` of its own object
(every check applies there); what it added is kept as plain entries, and each Mount replays them
into an Expansion of its own object, so file paths, modes and fields are always the Mount's own.

Errors are shared by single flight but never kept; neither is an empty listing (the prefix may be
filled again at any moment), so only a listing that found something is reused under
``shared_read_ttl``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from provider.domain import FetchContext, SecretObject
from providers.common.selectors import Expansion, Selector
from providers.common.shared_reads import SharedReads

Entry = tuple[str, str, tuple[tuple[str, Any], ...], str]
Entries = tuple[Entry, ...]
Lister = Callable[[Expansion], Awaitable[None]]


class Recording(Expansion):
    """An Expansion that also keeps what was added, for the other Mounts to replay."""

    def __init__(self, obj: SecretObject, selector: Selector, what: str) -> None:
        super().__init__(obj, selector, what)
        self.entries: list[Entry] = []

    def add(self, relative: str, name: str, fields: Mapping[str, Any], upstream: str = "") -> bool:
        added = super().add(relative, name, fields, upstream)
        if added:
            self.entries.append((relative, name, tuple(fields.items()), upstream))
        return added


def selector_key(obj: SecretObject, selector: Selector) -> tuple[Hashable, ...]:
    """The selector's part of a listing key; its place, name and file path are in it, since
    errors and some backends' expanded names mention them."""
    return ("selector", obj.index, obj.name, obj.path, selector.depth, selector.limit, selector.filters)


async def expand(
    shared: SharedReads[Entries],
    key: tuple[Hashable, ...],
    obj: SecretObject,
    selector: Selector,
    what: str,
    lister: Lister,
    ctx: FetchContext,
) -> list[SecretObject]:
    """``obj``'s expansion from a listing shared under ``key`` (backend, endpoint, identity and
    prefix), made by ``lister`` into a fresh Expansion when no equal one is in flight or kept."""

    async def lead() -> Entries:
        recording = Recording(obj, selector, what)
        await lister(recording)
        return tuple(recording.entries)

    entries = await shared.read(
        (*key, *selector_key(obj, selector)), lead, ctx, private=lambda found: not found
    )
    mine = Expansion(obj, selector, what)
    for relative, name, fields, upstream in entries:
        mine.add(relative, name, dict(fields), upstream)
    return mine.objects
