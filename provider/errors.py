"""Errors that end a Mount, each with a short machine code and a message a user can act on.

Every failure path raises :class:`KeygateError` (or a subclass) so the server can turn it into
one gRPC status without a traceback. Messages name paths, objects and reasons; never content.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class Code(StrEnum):
    """Machine codes; the driver records them as a metrics label, so the set is small and fixed."""

    INVALID_REQUEST = "InvalidRequest"
    INVALID_SPC = "InvalidSecretProviderClass"
    UNAUTHENTICATED = "Unauthenticated"
    PERMISSION_DENIED = "PermissionDenied"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - an error code
    BACKEND_UNAVAILABLE = "BackendUnavailable"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    RESOURCE_EXHAUSTED = "ResourceExhausted"
    UNAVAILABLE = "Unavailable"  # keygate itself (shutting down), not a backend
    INTERNAL = "Internal"


class Gone(StrEnum):
    """Why an object is no longer there for this pod: the revocation categories (a metric label).

    Set on an error (:func:`gone`) only where the answer is definite: upstream says the object is
    not found, deleted or scheduled for deletion, disabled, or forbidden to the pod's own identity
    after a successful login; or the release policy now refuses it. Outages never carry one.
    """

    NOT_FOUND = "not_found"
    DELETED = "deleted"
    DISABLED = "disabled"
    FORBIDDEN = "forbidden"
    POLICY = "policy"


class KeygateError(Exception):
    """A failure with a code and an actionable, secret-free message.

    ``gone`` is set when the error means "this object is gone for this identity" rather than an
    outage; on a rotation that takes the object away instead of failing the Mount.
    """

    code: Code = Code.INTERNAL

    def __init__(self, message: str, *, code: Code | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.log_fields: dict[str, object] = {}
        self.gone: Gone | None = None

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidRequest(KeygateError):
    code = Code.INVALID_REQUEST


class InvalidSPC(KeygateError):
    code = Code.INVALID_SPC


class Unauthenticated(KeygateError):
    code = Code.UNAUTHENTICATED


class PermissionDenied(KeygateError):
    code = Code.PERMISSION_DENIED


class SecretNotFound(KeygateError):
    code = Code.SECRET_NOT_FOUND


class BackendUnavailable(KeygateError):
    code = Code.BACKEND_UNAVAILABLE


class DeadlineExceeded(KeygateError):
    code = Code.DEADLINE_EXCEEDED


class ResourceExhausted(KeygateError):
    code = Code.RESOURCE_EXHAUSTED


E = TypeVar("E", bound=KeygateError)


def gone(exc: E, reason: Gone) -> E:
    """Mark ``exc`` as a definite "gone for this identity" answer; returns ``exc``."""
    exc.gone = reason
    return exc
