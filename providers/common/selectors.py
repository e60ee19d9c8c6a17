"""Prefix mounts: one SPC object with a ``selector`` that expands, at Mount time, to every upstream
object under a name prefix (or path), optionally filtered by tags or labels.

The naming field a backend already has carries the prefix (Vault ``secretPath``, AWS and Azure
``objectName``, GCP ``resourceName``); the ``selector`` mapping says how far to look (``depth``),
what to filter on (``tags``/``labels``) and how many objects it may become (``limit``). This
module holds what every backend shares: the schema declaration, the checks of the mapping, and
:class:`Expansion`, which turns upstream names into concrete objects with file names derived
safely (relative to the prefix, below the selector's own file path, by the same rules as every
other file, collisions refused) and stops at the limit. Listing is the backend's job
(``expand`` in :mod:`providers.base`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provider.domain import SecretObject
from provider.errors import InvalidSPC, ResourceExhausted
from provider.files import PathClaims, clean_path
from providers.common.schema import Rule, RuleInput, Spec

FIELD = "selector"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_DEPTH = 1
MAX_DEPTH = 10
MAX_FILTERS = 16
MAX_FILTER_CHARS = 256


@dataclass(frozen=True, slots=True)
class Selector:
    """A checked ``selector`` mapping; ``filters`` are tags (AWS, Azure) or labels (GCP)."""

    depth: int = DEFAULT_DEPTH
    limit: int = DEFAULT_LIMIT
    filters: tuple[tuple[str, str], ...] = ()


def spec(filters: str, doc: str) -> Spec:
    """The ``selector`` field as a backend's schema declares it (``filters``: tags, labels or '')."""
    keys = ("depth", "limit", filters) if filters else ("depth", "limit")
    return Spec(
        FIELD,
        f"expand to every object {doc}: {{depth (1-{MAX_DEPTH}, default {DEFAULT_DEPTH}), limit "
        f"(1-{MAX_LIMIT}, default {DEFAULT_LIMIT})"
        + (f", {filters} (all must match)" if filters else "")
        + "}; files go below this object's file name (see docs/prefix-mounts.md)",
        kind="mapping",
        invalid="{where} must be a mapping such as {{depth: 1}}",
        entries=keys,
    )


def is_selector(obj: SecretObject) -> bool:
    return obj.spec.get(FIELD) is not None


def where(obj: SecretObject) -> str:
    return f"objects[{obj.index}] {obj.name!r}"


def _whole(raw: Any, label: str, low: int, high: int, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidSPC(f"{label} must be a whole number from {low} to {high}")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise InvalidSPC(f"{label} must be a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise InvalidSPC(f"{label} is {value}; it must be from {low} to {high}")
    return value


def _filters(raw: Any, label: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise InvalidSPC(f"{label} must be a mapping of name: value")
    if len(raw) > MAX_FILTERS:
        raise InvalidSPC(f"{label} has {len(raw)} entries; at most {MAX_FILTERS} are allowed")
    out: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key or isinstance(value, bool | Mapping | list) or value is None:
            raise InvalidSPC(f"{label} entries must be non-empty names with string values")
        text = str(value)
        if len(key) > MAX_FILTER_CHARS or len(text) > MAX_FILTER_CHARS:
            raise InvalidSPC(f"{label}: names and values may have at most {MAX_FILTER_CHARS} characters")
        out.append((key, text))
    return tuple(sorted(out))


def read(obj: SecretObject, filters: str = "") -> Selector:
    """The object's selector, checked; ``filters`` names the one filter key the backend has."""
    raw = obj.spec.get(FIELD)
    label = f"{where(obj)}: selector"
    if not isinstance(raw, Mapping):
        raise InvalidSPC(f"{label} must be a mapping such as {{depth: 1}}")
    allowed = ("depth", "limit", filters) if filters else ("depth", "limit")
    unknown = [str(k) for k in raw if k not in allowed]
    if unknown:
        raise InvalidSPC(
            f"{label}: unknown key {unknown[0][:40]!r} for this backend (allowed: {', '.join(allowed)})"
        )
    return Selector(
        depth=_whole(raw.get("depth"), f"{label}: depth", 1, MAX_DEPTH, DEFAULT_DEPTH),
        limit=_whole(raw.get("limit"), f"{label}: limit", 1, MAX_LIMIT, DEFAULT_LIMIT),
        filters=_filters(raw.get(filters), f"{label}: {filters}") if filters else (),
    )


def rule(filters: str, refused: Sequence[str], extra: Rule | None = None) -> Rule:
    """An object rule: the selector is well formed and not combined with ``refused`` fields
    (those that name one particular version or file of one object); ``extra`` adds a backend's
    own check of a selector object."""

    def check(given: RuleInput) -> None:
        obj = given.obj
        if obj is None or not is_selector(obj):
            return
        read(obj, filters)
        for name in refused:
            if obj.spec.get(name) not in (None, ""):
                raise InvalidSPC(
                    f"{where(obj)}: {name!r} cannot be combined with selector (it names one "
                    "object's version or file); list those objects on their own"
                )
        if extra is not None:
            extra(given)

    return check


class Expansion:
    """The objects one selector expands to, built one upstream name at a time.

    ``add`` takes the name relative to the prefix: names deeper than the selector's ``depth``
    are skipped; a name that is not already a clean relative path (``..``, empty parts, a
    leading ``/``, unprintable characters...) or that collides with another is refused, naming
    the upstream object, since quietly renaming it would let two names share one file; more
    than ``limit`` names is refused before anything is read.
    """

    def __init__(self, obj: SecretObject, selector: Selector, what: str) -> None:
        self.obj = obj
        self.selector = selector
        self.what = what
        self.objects: list[SecretObject] = []
        self._claims = PathClaims()

    def within_depth(self, relative: str) -> bool:
        return relative.count("/") + 1 <= self.selector.depth

    def check_name(self, relative: str, upstream: str) -> None:
        """Refuse an upstream name (or folder) that is not already a clean relative path."""
        at = f"{where(self.obj)}: {self.what} {upstream[:120]!r}"
        if not relative:
            raise InvalidSPC(f"{at} has no name below the selector's prefix, so it cannot be a file name")
        cleaned = clean_path(relative, at)
        if cleaned != relative:
            raise InvalidSPC(
                f"{at} cannot be a file name as it stands (it would be written as {cleaned!r}); "
                "rename it upstream or list the objects on their own"
            )

    def add(self, relative: str, name: str, fields: Mapping[str, Any], upstream: str = "") -> bool:
        """Add one upstream object (``name`` as the SecretObject's name, ``fields`` replacing the
        selector's own); False when it lies deeper than ``depth``."""
        at = f"{where(self.obj)}: {self.what} {(upstream or name)[:120]!r}"
        if relative and not self.within_depth(relative):
            return False
        self.check_name(relative, upstream or name)
        if len(self.objects) >= self.selector.limit:
            raise ResourceExhausted(
                f"{where(self.obj)}: the selector matches more than {self.selector.limit} objects "
                "(its limit); narrow the prefix or filters, or raise selector.limit"
            )
        path = clean_path(posixpath.join(self.obj.path, relative), at)
        self._claims.claim(path, at, "rename one upstream")
        spec = {k: v for k, v in self.obj.spec.items() if k != FIELD}
        spec.update(fields)
        self.objects.append(
            SecretObject(
                backend=self.obj.backend,
                name=name,
                path=path,
                mode=self.obj.mode,
                spec=spec,
                index=self.obj.index,
            )
        )
        return True


def check_cap(objects: Sequence[SecretObject], maximum: int) -> None:
    """Refuse a selector whose ``limit`` is above the daemon's maximum, before any listing (a
    selector without ``limit`` is held to the maximum after listing, see :func:`check_counts`)."""
    for obj in objects:
        raw = obj.spec.get(FIELD)
        if not isinstance(raw, Mapping) or raw.get("limit") is None:
            continue
        limit = _whole(raw.get("limit"), f"{where(obj)}: selector: limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
        if limit > maximum:
            raise InvalidSPC(
                f"{where(obj)}: selector limit {limit} is above this daemon's maximum {maximum} "
                "(selector_max_objects); lower it"
            )


def check_counts(selector: SecretObject, expanded: Sequence[SecretObject], maximum: int) -> None:
    if len(expanded) > maximum:
        raise ResourceExhausted(
            f"{where(selector)}: the selector matches {len(expanded)} objects, more than this "
            f"daemon's maximum {maximum} (selector_max_objects); narrow the prefix or filters"
        )


def lint_note(obj: SecretObject) -> str | None:
    """What ``keygate lint`` says about a selector offline: its limits and file names (listing
    needs a pod's token: ``lint --list``, :mod:`provider.selector_preview`)."""
    raw = obj.spec.get(FIELD)
    if not isinstance(raw, Mapping):
        return None
    prefix = next(
        (obj.spec[k] for k in ("secretPath", "resourceName") if isinstance(obj.spec.get(k), str)), obj.name
    )
    try:
        depth = _whole(raw.get("depth"), "depth", 1, MAX_DEPTH, DEFAULT_DEPTH)
        limit = _whole(raw.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    except InvalidSPC:
        return None
    levels = "one level" if depth == 1 else f"up to {depth} levels"
    return (
        f"selector: expands at Mount time, with the pod's credentials, to the objects below {prefix!r} "
        f"({levels}, at most {limit}; the daemon's selector_max_objects caps it); files: "
        f"{obj.path}/<name below the prefix>; "
        "'keygate lint --list --token FILE' lists them with a pod's token"
    )
