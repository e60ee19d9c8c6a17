"""One list of the HTTP answers worth retrying, for every backend that sees HTTP statuses.

Timeouts (408), throttling (429) and transient server faults (500, 502, 503, 504) are retried
within the mount deadline (:func:`providers.common.runtime.with_retries`). Other 5xx (501 Not
Implemented, 505, ...) are definite answers, and so is every other status: the backend maps it
to its keygate error (not found, permission denied, ...) and never retries it, since retrying
only burns the deadline.
"""

from __future__ import annotations

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_retryable(status: int) -> bool:
    """Timeouts, throttling and transient server faults: worth another try within the deadline."""
    return status in RETRYABLE_STATUSES
