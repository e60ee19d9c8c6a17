"""The backend interface: typed objects in, contents out; no gRPC, no files, no modes.

A backend is found by name through :mod:`providers.registry`. It receives every object of one
Mount that resolved to it, plus a :class:`~provider.domain.FetchContext` carrying the attested
pod identity and the pod's own service-account tokens, so backends that authenticate *as the
pod* never need the daemon's credentials. What an SPC may say to a backend is its ``schema``
(:mod:`providers.common.schema`); the daemon and ``keygate lint`` check SPCs against it before
``validate`` and ``fetch`` run.

Revocation: when upstream gives a definite "gone for this identity" answer for one object (not
found, deleted or scheduled for deletion, disabled, 403 for the pod after a successful login),
the backend marks the error with :func:`provider.errors.gone` and returns a
:class:`~provider.domain.Revoked` for that object (:func:`providers.common.revoked.settle` turns
a read into either), still returning the other objects' files. Outages (timeouts, 5xx, 429,
TLS, DNS) are never marked: they raise and fail the whole fetch, as before. Whether a Revoked
object is taken away or fails the Mount is the pipeline's decision (:mod:`provider.revocation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from provider.domain import FetchContext, Fetched, Revoked, SecretObject
from providers.common.schema import Schema


@runtime_checkable
class Backend(Protocol):
    """A source of secrets. Implementations must be safe to call concurrently.

    ``schema`` is the backend's declared SPC vocabulary, or None for a plugin that checks
    everything itself in ``validate``.

    Optional: ``async def expand(objects, ctx) -> list[SecretObject]`` for backends that support
    prefix mounts (an object with a ``selector``, :mod:`providers.common.selectors`). The daemon
    calls it after attestation and before ``fetch`` with that backend's selector objects; it lists
    upstream with the pod's credentials and returns the concrete objects (built with
    :class:`providers.common.selectors.Expansion`, each keeping its selector's ``index``), which
    the daemon checks against the schema and the release policy before fetching them. It must
    not read secret values. A backend without it refuses selectors with a clear error.

    Optional: ``def held(obj, parameters) -> str | None``: a regular expression for the ids an
    object is served under (for a selector, the ids of anything it may list), without a read.
    On a rotation it tells whether the pod holds an expanded object the release policy now
    refuses (revoked, not a failed Mount) and which ids a selector no longer lists.
    """

    name: ClassVar[str]
    schema: ClassVar[Schema | None]

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        """Checks the schema cannot express and that need this instance (raise InvalidSPC).

        ``parameters`` are the SPC's, without the driver's per-pod ``csi.storage.k8s.io/...``
        attributes: the result is reused for every pod of the SPC (:mod:`provider.spc_memo`),
        so a check about the pod belongs in ``fetch``, against the attested ``ctx.pod``.
        """

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> Sequence[Fetched | Revoked]:
        """At least one Fetched, or one Revoked, per object; or raise a KeygateError.

        Never partial otherwise: an outage for any object fails the whole fetch.
        """
        ...

    async def close(self) -> None:
        """Release clients and pools at shutdown."""
