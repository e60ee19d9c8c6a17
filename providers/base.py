"""The backend interface: typed objects in, contents out; no gRPC, no files, no modes.

A backend is found by name through :mod:`providers.registry`. It receives every object of one
Mount that resolved to it, plus a :class:`~provider.domain.FetchContext` carrying the attested
pod identity and the pod's own service-account tokens, so backends that authenticate *as the
pod* never need the daemon's credentials. What an SPC may say to a backend is its ``schema``
(:mod:`providers.common.schema`); the daemon and ``keygate lint`` check SPCs against it before
``validate`` and ``fetch`` run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from provider.domain import FetchContext, Fetched, SecretObject
from providers.common.schema import Schema


@runtime_checkable
class Backend(Protocol):
    """A source of secrets. Implementations must be safe to call concurrently.

    ``schema`` is the backend's declared SPC vocabulary, or None for a plugin that checks
    everything itself in ``validate``.
    """

    name: ClassVar[str]
    schema: ClassVar[Schema | None]

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        """Checks the schema cannot express and that need this instance (raise InvalidSPC)."""

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        """Return at least one Fetched per object, or raise a KeygateError; never partial."""
        ...

    async def close(self) -> None:
        """Release clients and pools at shutdown."""
