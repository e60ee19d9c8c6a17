"""Which Vault read failures mean "gone for this pod" (revocation) rather than an outage.

What it needs from the client (:mod:`providers.vault.client`): ``VaultHTTP.read`` raises
``SecretNotFound`` for a 404 (deleted, destroyed or never written; kv-v2 answers 404 for a
soft-deleted version too) and ``Forbidden`` for a 403, which the backend retries once after a
fresh login and then raises as ``PermissionDenied``. Everything else (5xx, 429, sealed,
timeouts, TLS) stays an outage.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TypeVar

from provider.domain import SecretObject
from provider.errors import Gone, PermissionDenied, SecretNotFound, gone
from providers.common.revoked import id_pattern
from providers.vault import objects

T = TypeVar("T")


async def classified(read: Awaitable[T]) -> T:
    """The read's result; a 404, or a 403 that stayed after a fresh login, marked gone."""
    try:
        return await read
    except SecretNotFound as exc:
        raise gone(exc, Gone.NOT_FOUND) from None
    except PermissionDenied as exc:
        raise gone(exc, Gone.FORBIDDEN) from None


def held(obj: SecretObject) -> str:
    """The ids the object is served under: ``vault/<path>[#key]``, plus ``~<objectName>`` when
    one secret is read into several files."""
    return id_pattern(objects.object_id(obj), re.escape(f"~{obj.name}"))
