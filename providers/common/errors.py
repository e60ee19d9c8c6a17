"""One classification of backend answers: HTTP status -> keygate error class, retryable or not.

Every backend maps its SDK's failures through :func:`classify`, so 429 and 5xx are retried the
same way everywhere and a refusal is never retried.
"""

from __future__ import annotations

from provider.errors import (
    BackendUnavailable,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
)
from providers.common.runtime import Retryable

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
BY_STATUS: dict[int, type[KeygateError]] = {
    400: InvalidSPC,
    401: Unauthenticated,
    403: PermissionDenied,
    404: SecretNotFound,
}


def is_retryable(status: int) -> bool:
    """Throttling, timeouts and server faults: worth another try within the deadline."""
    return status in RETRYABLE_STATUS or status >= 500


def classify(status: int, message: str) -> KeygateError:
    """The keygate error for an HTTP status; Retryable for throttling and server faults."""
    if is_retryable(status):
        return Retryable(message)
    return BY_STATUS.get(status, BackendUnavailable)(message)
