"""Where the schema walk reports: raise at the first error (daemon) or keep all (lint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from provider.errors import InvalidSPC, KeygateError

Severity = Literal["error", "warning", "skipped"]
"""``skipped``: a rule could not run because an SDK module it needs is missing (the message is
that module's name); lint reports the backend's missing extra, the daemon ignores it (the backend
itself then fails to load with the same advice)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem the walk found; ``index`` is the object (None for a parameter)."""

    severity: Severity
    message: str
    index: int | None = None
    key: str | None = None
    error: type[KeygateError] = InvalidSPC


class Sink(Protocol):
    """Where the walk reports: raise at once, or collect."""

    def report(self, finding: Finding) -> None: ...


class FirstError:
    """The daemon's sink: the first error is raised (InvalidSPC unless a rule chose another
    code, e.g. PermissionDenied for a refused insecure mode); warnings and skips are dropped."""

    def report(self, finding: Finding) -> None:
        if finding.severity == "error":
            raise finding.error(finding.message)


@dataclass(slots=True)
class Collect:
    """Lint's sink: every finding, in order."""

    findings: list[Finding] = field(default_factory=list)

    def report(self, finding: Finding) -> None:
        self.findings.append(finding)
