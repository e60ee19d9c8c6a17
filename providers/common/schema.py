"""One declaration per backend of what an SPC may say to it, and the one walk that checks it.

A :class:`Schema` lists a backend's SPC parameters and per-object fields (:class:`Spec`: type,
default, allowed values, other spellings, the daemon setting that can fill it, a one-line doc),
the markers that tell its objects and SPCs apart from other backends', and the cross-field
rules that no single value can express. The daemon's parsing (:meth:`Schema.read_parameters`,
:meth:`Schema.read_fields`), the registry's inference (:meth:`Schema.marks_object`), ``keygate
lint`` and the docs' parameter tables all come from it, so they cannot drift apart.

Field names: each schema says how its peer provider matches the names in an object
(:attr:`Schema.field_case`, see :func:`go_json_fold`); :meth:`Schema.canonical_fields` rewrites
an object to the canonical spellings once, before anything reads it, so the daemon, lint and
the backend code only ever see ``path``, never ``Path``.

The walk reports into a :class:`Sink`: :class:`FirstError` raises on the first error (the
daemon), :class:`Collect` keeps every finding (lint). Without daemon settings (lint), a required
value that a setting could fill is a warning naming that setting instead of an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from provider.errors import InvalidSPC, KeygateError
from providers.common import readers
from providers.common.sinks import Collect, Finding, FirstError, Sink

if TYPE_CHECKING:
    from provider.domain import SecretObject

Kind = Literal["string", "bool", "int", "choice", "list", "mapping", "text"]
FieldCase = Literal["exact", "go-json"]


def go_json_fold(name: str) -> str:
    """A field name folded the way Go's ``encoding/json`` matches keys to struct fields.

    Go's decoder takes an exact match first, else a key whose fold equals the field's fold
    (``fold.go``: ASCII ``a``-``z`` upper-cased; any other rune replaced by the smallest rune of
    its ``unicode.SimpleFold`` orbit). For keygate's field names, which are ASCII, that accepts
    exactly: ASCII letters in any case, the Kelvin sign U+212A for ``k``/``K`` and the long s
    U+017F for ``s``/``S`` (the only non-ASCII runes whose orbits hold ASCII letters); every
    other character must be the same. Nothing else is accepted: no Unicode normalisation, no
    dotless or dotted i (U+0131/U+0130 have no simple fold to ``i``), no ``_`` or ``-`` dropped.
    """
    out = []
    for ch in name:
        if "a" <= ch <= "z":
            out.append(ch.upper())
        elif ch == "\u212a":
            out.append("K")
        elif ch == "\u017f":
            out.append("S")
        else:
            out.append(ch)
    return "".join(out)


def _fold_keys(raw: Mapping[Any, Any], names: tuple[str, ...], where: str, strict: bool) -> dict[Any, Any]:
    """``raw`` with each key that folds to one of ``names`` renamed to it (others kept as written).

    Two keys for one field (``path`` and ``Path``) are refused when ``strict``: Go keeps the last
    one silently, which hides a typo or a second author's intent; keygate names both instead.
    """
    exact = frozenset(names)
    folded = {go_json_fold(n): n for n in names}
    out: dict[Any, Any] = {}
    spelled: dict[str, Any] = {}
    for key, value in raw.items():
        canonical = (key if key in exact else folded.get(go_json_fold(key))) if isinstance(key, str) else None
        if canonical is None:
            out[key] = value
            continue
        if canonical in spelled:
            if strict:
                raise InvalidSPC(
                    f"{where}: {spelled[canonical]!r} and {key!r} both set the field {canonical!r} "
                    "(field names are matched ignoring case, as the peer provider does); keep one"
                )
            continue
        spelled[canonical] = key
        out[canonical] = value
    return out


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


def _first(raw: Mapping[str, Any], spec: Spec) -> tuple[str | None, Any]:
    for key in spec.spellings:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        return key, value
    return None, None


def _convert(spec: Spec, value: Any, label: str, strip: bool, obj: str = "") -> Any:
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


def _store(
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
        value = _convert(spec, raw, label, strip=not obj, obj=obj)
    except InvalidSPC as exc:
        sink.report(Finding("error", exc.message, index, used))
        return
    if spec.refused and used is not None and value not in (False, ""):
        sink.report(Finding("error", f"{label} is not supported by keygate: {spec.refused}", index, used))
        return
    values[spec.name] = value
    if used is not None:
        given.add(spec.name)


@dataclass(frozen=True, slots=True)
class Schema:
    """A backend's whole SPC vocabulary; see the module docstring."""

    backend: str
    summary: str
    parameters: tuple[Spec, ...] = ()
    fields: tuple[Spec, ...] = ()
    object_markers: tuple[Marker, ...] = ()
    spc_rules: tuple[Rule, ...] = ()
    object_rules: tuple[Rule, ...] = ()
    default_path: PathRule | None = None
    field_case: FieldCase = "exact"
    """How the peer provider matches object field names: ``exact`` (YAML decoded straight into
    tagged structs, as gopkg.in/yaml.v3 does) or ``go-json`` (YAML turned into JSON and decoded by
    Go's encoding/json, as sigs.k8s.io/yaml does; see :func:`go_json_fold`)."""
    peer_fields: tuple[str, ...] = ()
    """Common object fields (``objectName``...) the peer's struct also has, so folded too."""
    derived_paths: DerivedRule | None = None
    """Files an object writes besides its own; lint checks ``secretObjects`` against them too."""

    def extra_paths(self, obj: SecretObject, parameters: Mapping[str, str]) -> tuple[str, ...]:
        """:attr:`derived_paths` of a valid object; () when it has none or is invalid (reported elsewhere)."""
        if self.derived_paths is None:
            return ()
        try:
            return self.derived_paths(obj, parameters)
        except (KeygateError, ImportError):
            return ()

    def canonical_fields(self, item: Mapping[str, Any], where: str, strict: bool = True) -> dict[str, Any]:
        """``item`` with field names rewritten to their canonical spelling per :attr:`field_case`.

        Only names the peer itself decodes are folded (the object's fields and the nested
        ``entries``); keys it does not know are kept as written, for lint to report.
        """
        if self.field_case == "exact":
            return dict(item)
        names = tuple(dict.fromkeys((*self.peer_fields, *(f.name for f in self.fields))))
        out = _fold_keys(item, names, where, strict)
        for spec in self.fields:
            value = out.get(spec.name)
            if not spec.entries:
                continue
            if isinstance(value, Mapping):
                out[spec.name] = _fold_keys(value, spec.entries, f"{where} {spec.name}", strict)
            elif isinstance(value, list):
                out[spec.name] = [
                    _fold_keys(entry, spec.entries, f"{where} {spec.name}[{i}]", strict)
                    if isinstance(entry, Mapping)
                    else entry
                    for i, entry in enumerate(value)
                ]
        return out

    @property
    def spc_markers(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parameters if p.marker)

    def parameter_names(self) -> frozenset[str]:
        return frozenset(name for p in self.parameters for name in p.spellings)

    def field_names(self) -> frozenset[str]:
        return frozenset(name for f in self.fields for name in f.spellings)

    def marks_object(self, item: Mapping[str, Any], by_presence: bool) -> bool:
        if self.field_case != "exact":
            item = self.canonical_fields(item, "", strict=False)
        return any(m.matches(item) for m in self.object_markers if m.by_presence == by_presence)

    def marks_spc(self, parameters: Mapping[str, str]) -> bool:
        return bool(self.spc_markers & parameters.keys())

    def read_parameters(
        self,
        parameters: Mapping[str, str],
        settings: Mapping[str, Any] | None,
        sink: Sink | None = None,
    ) -> Values:
        """The SPC-level values: spelling resolved, setting or default filled, type checked."""
        sink = sink or FirstError()
        values: dict[str, Any] = {}
        given: set[str] = set()
        for spec in self.parameters:
            label = f"parameter {spec.name!r}"
            used, raw = _first(parameters, spec)
            if used is not None and used in spec.deprecated:
                sink.report(
                    Finding(
                        "warning", f"parameter {used!r} is an old spelling; write {spec.name!r}", key=used
                    )
                )
            if used is None and spec.setting and settings is not None:
                filled = settings.get(spec.setting)
                raw = None if filled in (None, "") else filled
            if raw is None and used is None and spec.required:
                if spec.setting and settings is None:
                    sink.report(
                        Finding(
                            "warning",
                            f"parameter {spec.name!r} is not set, so the daemon setting "
                            f"backends.{self.backend}.{spec.setting} must provide it",
                            key=spec.name,
                        )
                    )
                    continue
                also = (
                    f" (or backends.{self.backend}.{spec.setting} in the daemon config)"
                    if spec.setting
                    else ""
                )
                sink.report(Finding("error", f"{label} is required{also}: {spec.doc}", key=spec.name))
                continue
            _store(spec, used, raw, label, "", None, sink, values, given)
        return Values(values, frozenset(given))

    def read_fields(self, obj: SecretObject, sink: Sink | None = None) -> Values:
        """One object's backend fields, type checked; defaults filled."""
        sink = sink or FirstError()
        where = f"objects[{obj.index}] {obj.name!r}"
        values: dict[str, Any] = {}
        given: set[str] = set()
        for spec in self.fields:
            used, raw = _first(obj.spec, spec)
            if raw is None and spec.required:
                sink.report(
                    Finding("error", f"{where}: {spec.name!r} is required ({spec.doc})", obj.index, spec.name)
                )
                continue
            _store(spec, used, raw, f"{where}: {spec.name!r}", where, obj.index, sink, values, given)
        return Values(values, frozenset(given))

    def check_parameters(
        self, parameters: Mapping[str, str], settings: Mapping[str, Any] | None, sink: Sink
    ) -> Values:
        """Read the parameters, then run the SPC-level rules; every finding goes to ``sink``."""
        before = _errors(sink)
        values = self.read_parameters(parameters, settings, sink)
        if _errors(sink) == before:
            for rule in self.spc_rules:
                _run(rule, RuleInput(values, settings), sink, None)
        return values

    def check_object(
        self, obj: SecretObject, parameters: Values, settings: Mapping[str, Any] | None, sink: Sink
    ) -> None:
        """Read one object's fields, then run the object rules."""
        before = _errors(sink)
        fields = self.read_fields(obj, sink)
        if _errors(sink) == before:
            for rule in self.object_rules:
                _run(rule, RuleInput(parameters, settings, obj, fields), sink, obj.index)


def _errors(sink: Sink) -> int:
    return sum(f.severity == "error" for f in sink.findings) if isinstance(sink, Collect) else 0


class Advisory(KeygateError):
    """Raised by a rule to warn (lint) rather than refuse: the SPC is valid, but needs something
    outside it (e.g. a release policy grant) that only the daemon can check. ``key`` is the
    parameter the warning is about, so lint points at its line."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _run(rule: Rule, given: RuleInput, sink: Sink, index: int | None) -> None:
    try:
        rule(given)
    except Advisory as exc:
        sink.report(Finding("warning", exc.message, index, exc.key))
    except KeygateError as exc:
        sink.report(Finding("error", exc.message, index, error=type(exc)))
    except ImportError as exc:
        # A rule that compiles with the backend's SDK (e.g. jmespath) where it is not installed.
        sink.report(Finding("skipped", exc.name or "", index))


__all__ = [
    "Advisory",
    "Collect",
    "Finding",
    "FirstError",
    "Marker",
    "RuleInput",
    "Schema",
    "Sink",
    "Spec",
    "Values",
]
