"""Why attestation refused a Mount, as one of a few fixed categories.

The error message says what to change and names pods and images; the category is what a metric
label, an alert and the audit record can carry: a small fixed set, never free text. A raise site
tags its error with :func:`tag`; :func:`reason_of` falls back on the error code, so every refusal
gets a category even from a site nobody tagged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from provider.errors import Code, KeygateError

FIELD = "denial_reason"
E = TypeVar("E", bound=KeygateError)


class Denial(StrEnum):
    TOKEN_MISSING = "token_missing"  # noqa: S105 - a category name
    TOKEN_EXPIRED = "token_expired"  # noqa: S105
    TOKEN_INVALID = "token_invalid"  # noqa: S105
    TOKEN_POD_MISMATCH = "token_pod_mismatch"  # noqa: S105
    POD_NOT_FOUND = "pod_not_found"
    POD_MISMATCH = "pod_mismatch"
    IMAGE_UNPINNED = "image_unpinned"
    IMAGE_NOT_ALLOWED = "image_not_allowed"
    POLICY_DENIED = "policy_denied"
    API_UNAVAILABLE = "api_unavailable"
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    SIGNATURE_DIGEST_MISMATCH = "signature_digest_mismatch"
    SIGNATURE_IDENTITY_MISMATCH = "signature_identity_mismatch"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    REGISTRY_UNREACHABLE = "registry_unreachable"


_BY_CODE = {
    Code.UNAUTHENTICATED: Denial.TOKEN_INVALID,
    Code.PERMISSION_DENIED: Denial.POLICY_DENIED,
    Code.BACKEND_UNAVAILABLE: Denial.API_UNAVAILABLE,
    Code.DEADLINE_EXCEEDED: Denial.API_UNAVAILABLE,
}


def tag(exc: E, reason: Denial) -> E:
    """Attach ``reason`` to ``exc`` (it also appears in the Mount's log line); returns ``exc``."""
    exc.log_fields[FIELD] = reason.value
    return exc


def reason_of(exc: KeygateError) -> Denial:
    """The category of an attestation failure: its tag, else one derived from its code."""
    tagged = exc.log_fields.get(FIELD)
    if isinstance(tagged, str) and tagged in set(Denial):
        return Denial(tagged)
    return _BY_CODE.get(exc.code, Denial.POLICY_DENIED)
