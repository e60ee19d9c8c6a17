"""One list of the HTTP answers worth retrying, for every backend that sees HTTP statuses.

Throttling (429), timeouts (408) and server faults (5xx) are retried within the mount deadline
(:func:`providers.common.runtime.with_retries`); every other answer is a refusal the backend maps
to its keygate error (not found, permission denied, ...) and is never retried.
"""

from __future__ import annotations

RETRYABLE_STATUS = frozenset({408, 429})


def is_retryable(status: int) -> bool:
    """Throttling, timeouts and server faults: worth another try within the deadline."""
    return status in RETRYABLE_STATUS or status >= 500
