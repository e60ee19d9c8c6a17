"""The daemon's domain types: who asks (pod identity), what is asked (secret objects), and what a
backend may use and return for one Mount (fetch context, fetched contents).

They belong to the daemon, not to any backend: the mount pipeline builds them, and backends see
them only through the :class:`providers.base.Backend` protocol.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provider.errors import DeadlineExceeded, Gone, InvalidSPC, KeygateError


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """Who is asking: verified by attestation before any backend runs.

    ``node_identity`` names the backends the release policy lets read as the node for this pod
    (its rule's ``nodeIdentity``); only the attestor sets it, so without attestation it is empty.
    """

    namespace: str
    name: str
    uid: str
    service_account: str
    node_identity: frozenset[str] = frozenset()


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
    """What a backend may use besides the objects: identity, pod tokens, SPC-level parameters.

    ``service_account_annotations`` (when the daemon can read the Kubernetes API) returns the
    annotations of the pod's service account; it sends a request only when awaited, so only a
    backend that needs them (AWS: ``eks.amazonaws.com/role-arn``) costs an API read.
    """

    pod: PodIdentity
    spc_name: str
    parameters: Mapping[str, str]
    tokens: Mapping[str, str]
    node_secrets: Mapping[str, str]
    deadline: float = field(default_factory=lambda: time.monotonic() + 30.0)
    service_account_annotations: Callable[[], Awaitable[Mapping[str, str]]] | None = None

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
    ``node_identity`` describes the node identity that read it, if not the pod's (audited).
    """

    obj: SecretObject
    object_id: str
    contents: bytes
    version: str = ""
    path: str | None = None
    node_identity: str = ""


@dataclass(frozen=True, slots=True)
class Revoked:
    """An object upstream says is gone for this identity, returned by a backend instead of files.

    A backend returns one per such object, next to the Fetched items of the others, so the
    mount pipeline (:mod:`provider.revocation`) can decide: on a rotation where the pod holds the
    object (``held`` fully matches an id of ``current_object_version``) the object is revoked;
    otherwise the Mount fails with ``error`` as before. ``held`` must match every id the object
    is served under (its own, ``unique_ids`` suffixes, derived files); None means the pipeline
    treats any rotation as holding it (used for release-policy refusals, where no backend ran).
    """

    obj: SecretObject
    reason: Gone
    error: KeygateError
    held: re.Pattern[str] | None = None

    @classmethod
    def of(cls, obj: SecretObject, error: KeygateError, held: str) -> Revoked:
        """From a gone-marked error; ``held`` is a regular expression for the object's ids."""
        if error.gone is None:
            raise ValueError("Revoked.of needs an error marked with provider.errors.gone()")
        return cls(obj, error.gone, error, re.compile(held))
