"""Typed values read through a schema, what a cross-field rule sees, and the per-value steps of
the walk (first spelling given, default, conversion, the "not supported" refusal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provider.errors import InvalidSPC
from providers.common import readers
from providers.common.sinks import Finding, Sink
from providers.common.specs import Spec

if TYPE_CHECKING:
    from provider.domain import SecretObject


class Values:
    """Typed values read through a schema, keyed by canonical name."""

    def __init__(self, values: Mapping[str, Any], given: frozenset[str]) -> None:
        self._values = dict(values)
        self.given = given

    def get(self, name: str) -> Any:
        return self._values.get(name)

    def text(self, name: str) -> str:
        value = self._values.get(name)
        return "" if value is None else str(value)

    def flag(self, name: str) -> bool:
        return bool(self._values.get(name))

    def number(self, name: str) -> int:
        value = self._values.get(name)
        return int(value) if value is not None else 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)


@dataclass(frozen=True, slots=True)
class RuleInput:
    """What a cross-field rule sees; ``settings`` is None when the daemon's config is unknown."""

    parameters: Values
    settings: Mapping[str, Any] | None
    obj: SecretObject | None = None
    fields: Values | None = None

    @property
    def where(self) -> str:
        return "" if self.obj is None else f"objects[{self.obj.index}] {self.obj.name!r}"


Rule = Callable[[RuleInput], None]
"""A check across values; raises InvalidSPC (or a more precise KeygateError) naming what to change."""
PathRule = Callable[[Mapping[str, Any], Mapping[str, str]], str]
DerivedRule = Callable[["SecretObject", Mapping[str, str]], tuple[str, ...]]
"""The extra files an object writes besides its own (AWS ``jmesPath`` aliases), as relative paths."""


def first_given(raw: Mapping[str, Any], spec: Spec) -> tuple[str | None, Any]:
    for key in spec.spellings:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        return key, value
    return None, None


def convert(spec: Spec, value: Any, label: str, strip: bool, obj: str = "") -> Any:
    if spec.kind == "bool":
        return readers.truthy(value, label)
    if spec.kind == "int":
        return readers.whole(value, label, *spec.bounds)
    if spec.kind == "list":
        if not isinstance(value, list):
            raise InvalidSPC(spec.invalid.format(where=label) if spec.invalid else f"{label} must be a list")
        return value
    if spec.kind == "mapping":
        if not isinstance(value, dict):
            raise InvalidSPC(
                spec.invalid.format(where=label) if spec.invalid else f"{label} must be a mapping"
            )
        return value
    text = readers.string(value, label)
    if strip:
        text = text.strip()
    if spec.kind == "choice":
        folded = text.lower()
        if folded not in spec.choices:
            raise InvalidSPC(
                spec.invalid.format(where=label, obj=obj, value=text[:40])
                if spec.invalid
                else f"{label} must be one of {', '.join(spec.choices)}"
            )
        return folded
    return text


def store(
    spec: Spec,
    used: str | None,
    raw: Any,
    label: str,
    obj: str,
    index: int | None,
    sink: Sink,
    values: dict[str, Any],
    given: set[str],
) -> None:
    """Default, convert and keep one value (``obj`` is set for object fields, which keep spaces)."""
    if raw is None:
        raw = spec.default
    if raw is None:
        return
    try:
        value = convert(spec, raw, label, strip=not obj, obj=obj)
    except InvalidSPC as exc:
        sink.report(Finding("error", exc.message, index, used))
        return
    if spec.refused and used is not None and value not in (False, ""):
        sink.report(Finding("error", f"{label} is not supported by keygate: {spec.refused}", index, used))
        return
    values[spec.name] = value
    if used is not None:
        given.add(spec.name)
