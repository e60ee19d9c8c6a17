"""The declaration types of a backend schema: one parameter or field (:class:`Spec`) and one
object marker (:class:`Marker`). Kept apart from the walk so that the value readers and the
walk can both use them without importing each other."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["string", "bool", "int", "choice", "list", "mapping", "text"]
FieldCase = Literal["exact", "go-json"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One SPC parameter or object field, as users write it."""

    name: str
    doc: str
    kind: Kind = "string"
    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    deprecated: tuple[str, ...] = ()
    setting: str = ""
    marker: bool = False
    refused: str = ""
    invalid: str = ""
    bounds: tuple[int, int] = (0, 2**31)
    entries: tuple[str, ...] = ()
    """Field names inside this field's mapping (or each list entry's mapping), matched like the
    object's own fields under a ``go-json`` schema (AWS ``jmesPath`` entries, ``failoverObject``)."""

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases, *self.deprecated)


@dataclass(frozen=True, slots=True)
class Marker:
    """An object field that names a backend: by its presence, or by one of ``values``/``pattern``."""

    field: str
    values: tuple[str, ...] = ()
    pattern: str = ""

    @property
    def by_presence(self) -> bool:
        return not self.values and not self.pattern

    def matches(self, item: Mapping[str, Any]) -> bool:
        if self.field not in item:
            return False
        if self.by_presence:
            return True
        text = str(item.get(self.field, ""))
        return text.lower() in self.values or bool(self.pattern and re.match(self.pattern, text))
