"""The backend interface: typed objects in, contents out; no gRPC, no files, no modes.

A backend is found by name through :mod:`providers.registry`. It receives every object of one
Mount that resolved to it, plus a :class:`FetchContext` carrying the attested pod identity and the
pod's own service-account tokens, so backends that authenticate *as the pod* never need the
daemon's credentials.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from provider.errors import DeadlineExceeded, InvalidSPC


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """Who is asking: verified by attestation before any backend runs."""

    namespace: str
    name: str
    uid: str
    service_account: str


@dataclass(frozen=True, slots=True)
class SecretObject:
    """One entry of the SPC's object list, resolved to a backend.

    ``spec`` is the item exactly as written in the SPC (backend-specific fields such as
    ``secretPath`` or ``objectType``); ``path`` and ``mode`` are already validated by the mount
    pipeline and only passed through so derived files (e.g. AWS ``jmesPath``) can be named.
    """

    backend: str
    name: str
    path: str
    mode: int | None
    spec: Mapping[str, Any]
    index: int

    def field(self, key: str, default: Any = None) -> Any:
        return self.spec.get(key, default)

    def str_field(self, key: str, default: str = "") -> str:
        """A string field, with a clear error when the SPC gave another type."""
        value = self.spec.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidSPC(f"object {self.name!r} (objects[{self.index}]): field {key!r} must be a string")
        return str(value)


@dataclass(frozen=True, slots=True)
class FetchContext:
    """What a backend may use besides the objects: identity, pod tokens, SPC-level parameters."""

    pod: PodIdentity
    spc_name: str
    parameters: Mapping[str, str]
    tokens: Mapping[str, str]
    node_secrets: Mapping[str, str]
    deadline: float = field(default_factory=lambda: time.monotonic() + 30.0)

    def remaining(self) -> float:
        """Seconds left before the mount's deadline; raises once it has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the mount deadline passed before the backend answered")
        return left

    def token_for(self, audience: str) -> str | None:
        return self.tokens.get(audience)


@dataclass(frozen=True, slots=True)
class Fetched:
    """One file's worth of content from a backend.

    ``object_id`` must be unique within a Mount and stable across calls (e.g. ``sealed/<name>``,
    an ARN); ``version`` is the backend's own version id when it has one (it is mixed into the
    HMAC the driver sees, never shown raw). ``path`` is None for the object's own file, or a
    relative path the backend derived (e.g. a ``jmesPath`` alias), validated like any other.
    """

    obj: SecretObject
    object_id: str
    contents: bytes
    version: str = ""
    path: str | None = None


@runtime_checkable
class Backend(Protocol):
    """A source of secrets. Implementations must be safe to call concurrently."""

    name: ClassVar[str]

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        """Reject a malformed object before anything is fetched (raise InvalidSPC)."""

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        """Return at least one Fetched per object, or raise a KeygateError; never partial."""
        ...

    async def close(self) -> None:
        """Release clients and pools at shutdown."""
