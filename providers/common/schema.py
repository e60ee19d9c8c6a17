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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provider.errors import KeygateError
from providers.common.field_names import fold_keys, go_json_fold
from providers.common.sinks import Collect, Finding, FirstError, Sink
from providers.common.specs import FieldCase, Kind, Marker, Spec
from providers.common.values import (
    DerivedRule,
    PathRule,
    Rule,
    RuleInput,
    Values,
    first_given,
    store,
)

if TYPE_CHECKING:
    from provider.domain import SecretObject

__all__ = [
    "Advisory",
    "Collect",
    "DerivedRule",
    "FieldCase",
    "Finding",
    "FirstError",
    "Kind",
    "Marker",
    "PathRule",
    "Rule",
    "RuleInput",
    "Schema",
    "Sink",
    "Spec",
    "Values",
    "go_json_fold",
]


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
        out = fold_keys(item, names, where, strict)
        for spec in self.fields:
            value = out.get(spec.name)
            if not spec.entries:
                continue
            if isinstance(value, Mapping):
                out[spec.name] = fold_keys(value, spec.entries, f"{where} {spec.name}", strict)
            elif isinstance(value, list):
                out[spec.name] = [
                    fold_keys(entry, spec.entries, f"{where} {spec.name}[{i}]", strict)
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
            used, raw = first_given(parameters, spec)
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
            store(spec, used, raw, label, "", None, sink, values, given)
        return Values(values, frozenset(given))

    def read_fields(self, obj: SecretObject, sink: Sink | None = None) -> Values:
        """One object's backend fields, type checked; defaults filled."""
        sink = sink or FirstError()
        where = f"objects[{obj.index}] {obj.name!r}"
        values: dict[str, Any] = {}
        given: set[str] = set()
        for spec in self.fields:
            used, raw = first_given(obj.spec, spec)
            if raw is None and spec.required:
                sink.report(
                    Finding("error", f"{where}: {spec.name!r} is required ({spec.doc})", obj.index, spec.name)
                )
                continue
            store(spec, used, raw, f"{where}: {spec.name!r}", where, obj.index, sink, values, given)
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
