"""Google OAuth plumbing shared by every identity: what a token builder is, short error reasons
from token endpoints (never the raw body), which refusals are worth retrying, and an HTTP
transport that never outlives the mount deadline."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.auth.transport.requests import Request

CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass(frozen=True, slots=True)
class TokenSource:
    """How one Mount authenticates: a cache key, a description for messages, a token builder."""

    kind: str
    key: tuple[str, ...]
    describe: str
    build: Callable[[Request], tuple[str, datetime | None]]


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    describe: str


def oauth_reason(exc: BaseException) -> str:
    """A short reason from a google-auth error body (OAuth ``error`` or Google ``error.status``).

    The raw body is not passed on: only the documented error fields, truncated.
    """
    for arg in exc.args[1:]:
        body: Any = arg
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except ValueError:
                continue
        if not isinstance(body, dict):
            continue
        error = body.get("error")
        if isinstance(error, dict):
            parts = [str(error.get("status", "")), str(error.get("message", ""))]
        else:
            parts = [str(error or ""), str(body.get("error_description", ""))]
        reason = ": ".join(p for p in parts if p)
        if reason:
            return reason[:300]
    return type(exc).__name__


def retryable(exc: BaseException) -> bool:
    """Throttling or a server fault at a token endpoint (worth another try), not a refusal."""
    if getattr(exc, "retryable", False):
        return True
    reason = oauth_reason(exc)
    return reason.startswith(
        ("temporarily_unavailable", "server_error", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL")
    )


def bounded_request(session: Any, timeout: float) -> Request:
    """A google-auth HTTP transport on the backend's shared session, never outliving the deadline."""
    from google.auth.transport.requests import Request

    class _Bounded(Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = min(float(kwargs.get("timeout") or timeout), timeout)
            return Request.__call__(self, *args, **kwargs)

    return _Bounded(session=session)
