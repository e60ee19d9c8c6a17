"""``keygate lint``: check a SecretProviderClass (and optionally its pod) offline, before deploying.

A mistake in an SPC otherwise shows up only as a failed pod start, with the message buried in
the kubelet's events. Lint reads the SPC exactly as the daemon does (the same
:mod:`provider.spc` parsing, path and mode rules, backend inference and backend ``validate``),
then adds what only a tool with the whole manifest can say: the file and line of each problem,
"did you mean" for misspelt parameter and field names, sealed values bound to the wrong
namespace or object name, images not pinned by digest, and pod volumes that do not reach the
SPC. It reports every problem at once, never a secret value, and exits non-zero on an error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from provider import revocation
from provider import spc as spc_mod
from provider.attest.images import parse_image, pin_hint, reference_problem
from provider.domain import SecretObject
from provider.errors import BackendUnavailable, InvalidSPC, KeygateError
from provider.exit_codes import ExitCode
from provider.files import PathClaims, parse_mode
from providers.common import selectors
from providers.common.schema import Collect, Schema
from providers.registry import MissingExtra, Registry, builtin_schemas, check_extra, extra_for_module

if TYPE_CHECKING:
    from provider.attest.policy import Policy
    from provider.selector_preview import SelectorPreview

API_GROUP = "secrets-store.csi.x-k8s.io"
API_VERSION = f"{API_GROUP}/v1"
DRIVER = "secrets-store.csi.k8s.io"
PROVIDER = "keygate"

COMMON_PARAMETERS = frozenset({"objects", "backend", revocation.PARAMETER})
COMMON_FIELDS = frozenset(
    {"objectName", "objectAlias", "fileName", "path", "filePermission", "mode", "backend"}
)
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where it is and what to do about it. Never contains a secret value."""

    severity: str  # "error" or "warning"
    file: str
    line: int | None
    context: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        context = f"{self.context}: " if self.context else ""
        return f"{where}: {self.severity}: {context}{self.message}"


@dataclass(slots=True)
class Doc:
    """One YAML document with its node tree, for locations."""

    file: str
    data: Any
    node: yaml.Node | None

    def line(self, *path: str | int) -> int | None:
        node = _node_at(self.node, path)
        while node is None and path:
            path = path[:-1]
            node = _node_at(self.node, path)
        return None if node is None else node.start_mark.line + 1

    def key_line(self, *path: str | int) -> int | None:
        """The line of a mapping key itself (for 'unknown parameter' style findings)."""
        parent = _node_at(self.node, path[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key, _ in parent.value:
                if isinstance(key, yaml.ScalarNode) and key.value == path[-1]:
                    return key.start_mark.line + 1
        return self.line(*path)


def _node_at(node: yaml.Node | None, path: Sequence[str | int]) -> yaml.Node | None:
    for step in path:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step),
                None,
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return None
    return node


@dataclass(slots=True)
class Report:
    problems: list[Problem] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == "warning" for p in self.problems)

    def render(self) -> str:
        ordered = sorted(self.problems, key=lambda p: (p.file, p.line or 0))
        lines = [p.render() for p in ordered] + self.summaries
        lines.append(
            f"keygate lint: {self.errors} error{'s' * (self.errors != 1)}, "
            f"{self.warnings} warning{'s' * (self.warnings != 1)}"
        )
        return "\n".join(lines)


def load_docs(path: str) -> list[Doc]:
    """Every document of a YAML file with its node tree; duplicate keys are refused."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KeygateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        nodes = list(yaml.compose_all(text, Loader=spc_mod._StrictLoader))
        datas = list(yaml.load_all(text, Loader=spc_mod._StrictLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        raise KeygateError(f"{path}{line}: not valid YAML: {exc.problem or 'syntax error'}") from None
    except yaml.YAMLError:
        raise KeygateError(f"{path}: not valid YAML") from None
    return [Doc(path, data, node) for data, node in zip(datas, nodes, strict=True) if data is not None]


def suggest(name: str, known: Sequence[str]) -> str | None:
    """The closest known name, case-insensitively, when one is close enough to be a typo."""
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[match[0]] if match else None


class _LintRegistry(Registry):
    """The daemon's registry without the daemon's settings; built-in backends are never loaded
    (their schemas are enough, and need no SDK).

    ``missing`` notes, per backend, why lint could not check all of it: a built-in backend whose
    extra is not installed (:class:`MissingExtra`, looked up without importing anything), or a
    plugin that fails to load. Lint reports it once per SPC that uses the backend.
    """

    def __init__(self) -> None:
        super().__init__({}, known_settings=False)
        self.missing: dict[str, KeygateError] = {}
        self._extras_checked: set[str] = set()

    def schema(self, name: str) -> Schema | None:
        if self.is_builtin(name):
            return super().schema(name)
        try:
            return self.get(name).schema
        except BackendUnavailable as exc:
            self.missing.setdefault(name, exc)
        except KeygateError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin's own dependency not installed
            self.missing.setdefault(
                name, BackendUnavailable(f"backend {name!r} could not be loaded here ({type(exc).__name__})")
            )
        return None

    def note_extra(self, name: str) -> None:
        """Note a built-in backend whose SDK modules are not installed (find_spec, no import)."""
        if name in self._extras_checked or not self.is_builtin(name):
            return
        self._extras_checked.add(name)
        try:
            check_extra(name)
        except MissingExtra as exc:
            self.missing.setdefault(name, exc)

    def note_skipped(self, module: str, backend: str | None) -> None:
        """A schema rule needed an SDK module that is not installed (e.g. jmespath)."""
        owner = extra_for_module(module) or backend
        if owner:
            self.missing.setdefault(owner, MissingExtra(owner, module or "its SDK"))

    def fields_for(self, backend: str) -> frozenset[str] | None:
        """Field names a backend's objects may use; None when it declares no schema."""
        schema = self.schema(backend)
        return None if schema is None else COMMON_FIELDS | schema.field_names()

    def parameters_for(self, backend: str) -> frozenset[str]:
        schema = self.schema(backend)
        return frozenset() if schema is None else schema.parameter_names()

    def owners_of_field(self, name: str) -> list[str]:
        return [s.backend for s in builtin_schemas() if name in s.field_names()]

    def all_fields(self) -> list[str]:
        return sorted(COMMON_FIELDS.union(*(s.field_names() for s in builtin_schemas())))


@dataclass(slots=True)
class _ItemLoc:
    parameter: str
    node: yaml.Node | None
    base: int | None  # outer line of the inner text's first line, when lines map one to one
    fallback: int | None

    def line(self, field_name: str | None = None) -> int | None:
        node = self.node
        if field_name is not None and isinstance(node, yaml.MappingNode):
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == field_name:
                    node = key
                    break
        if node is None or self.base is None:
            return self.fallback
        return self.base + node.start_mark.line

    def raw_scalar(self, field_name: str) -> str | None:
        if isinstance(self.node, yaml.MappingNode):
            for key, val in self.node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == field_name:
                    return val.value if isinstance(val, yaml.ScalarNode) and val.style is None else None
        return None


def _inner_base(doc: Doc, parameter: str) -> tuple[int | None, int | None]:
    """(outer line of inner line 0 if they map one to one, the parameter's own line)."""
    node = _node_at(doc.node, ("spec", "parameters", parameter))
    if not isinstance(node, yaml.ScalarNode):
        return None, doc.line("spec", "parameters", parameter)
    line = node.start_mark.line + 1
    if node.style == "|":
        return line + 1, line
    if node.style is None and "\n" not in node.value:
        return line, line
    return None, line


def _item_locations(doc: Doc, parameters: Mapping[str, str]) -> list[_ItemLoc]:
    locs: list[_ItemLoc] = []
    for parameter in ("objects", "secrets"):
        text = parameters.get(parameter)
        if not text or not text.strip():
            continue
        base, fallback = _inner_base(doc, parameter)
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            root = None
        if isinstance(root, yaml.MappingNode) and [k.value for k, _ in root.value] == ["array"]:
            array = root.value[0][1]
            for entry in array.value if isinstance(array, yaml.SequenceNode) else []:
                if not isinstance(entry, yaml.ScalarNode):
                    locs.append(_ItemLoc(parameter, entry, base, fallback))
                    continue
                line = None if base is None else base + entry.start_mark.line + (entry.style == "|")
                try:
                    inner = yaml.compose(entry.value, Loader=yaml.SafeLoader)
                except yaml.YAMLError:
                    inner = None
                locs.append(_ArrayLoc(parameter, inner, line, line or fallback))
            continue
        if isinstance(root, yaml.SequenceNode):
            locs.extend(_ItemLoc(parameter, item, base, fallback) for item in root.value)
    return locs


class _ArrayLoc(_ItemLoc):
    """An item of Azure's ``array:`` form: a YAML document inside a string inside the parameter."""

    def line(self, field_name: str | None = None) -> int | None:
        node = self.node
        if field_name is not None and isinstance(node, yaml.MappingNode) and self.base is not None:
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == field_name:
                    return self.base + key.start_mark.line
        return self.base if self.base is not None else self.fallback


@dataclass(slots=True)
class Linter:
    """Collects problems across the given SPC and pod files."""

    namespace: str | None = None
    recipients: Sequence[str] = ()
    report: Report = field(default_factory=Report)
    registry: _LintRegistry = field(default_factory=_LintRegistry)
    missing_extras: set[str] = field(default_factory=set)  # backends used whose SDK is absent
    missing_warnings: int = 0  # exit 3, not 1, even with --strict
    policy: str | None = None  # release policy file (--policy): rule coverage, allowlists, signatures
    listing: SelectorPreview | None = None  # --list: selectors listed with a pod's token
    _total: int = 0
    _policy: tuple[Policy | None] | None = None  # --policy parsed, once

    def release_policy(self) -> Policy | None:
        """The ``--policy`` file, parsed once for every check that uses it (its errors reported
        once); None without one or when it has errors."""
        if self._policy is None:
            from provider.attest.policy_lint import load

            self._policy = (load(self, self.policy) if self.policy else None,)
        return self._policy[0]

    def add(self, severity: str, doc: Doc, line: int | None, context: str, message: str) -> None:
        self.report.problems.append(Problem(severity, doc.file, line, context, message))

    def run(self, spc_path: str, pod_path: str | None = None) -> Report:
        spc_docs, pods = [], []
        for doc in load_docs(spc_path) + (load_docs(pod_path) if pod_path else []):
            kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
            if kind == "SecretProviderClass":
                spc_docs.append(doc)
            elif kind in WORKLOAD_KINDS or kind in ("Pod", "CronJob"):
                pods.append(doc)
            elif doc.file == spc_path:
                self.add(
                    "warning", doc, doc.line("kind"), "", f"ignoring a {kind or 'document without kind'}"
                )
        if not spc_docs:
            raise KeygateError(f"{spc_path}: no SecretProviderClass found (kind: SecretProviderClass)")
        pod_specs = [spec for doc in pods for spec in self._pod_specs(doc)]
        for doc in spc_docs:
            self.lint_spc(doc, pod_specs)
        if self.listing is not None:
            self.listing.run(self)
        for pod_doc, spec_path, spec in pod_specs:
            self.lint_pod(pod_doc, spec_path, spec, spc_docs)
        if self.policy:
            from provider.attest.policy_lint import lint_policy

            lint_policy(self, pod_specs, self.namespace)
        return self.report

    # --- SecretProviderClass ---

    def lint_spc(self, doc: Doc, pods: list[tuple[Doc, tuple[str | int, ...], dict[str, Any]]]) -> None:
        data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
        meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
        name = meta.get("name") if isinstance(meta.get("name"), str) else None
        ctx = f"SecretProviderClass {name}" if name else "SecretProviderClass"
        api = data.get("apiVersion")
        if api == f"{API_GROUP}/v1alpha1":
            self.add(
                "warning",
                doc,
                doc.line("apiVersion"),
                ctx,
                f"apiVersion {api} is deprecated; use {API_VERSION}",
            )
        elif api != API_VERSION:
            self.add(
                "error", doc, doc.line("apiVersion"), ctx, f"apiVersion must be {API_VERSION}, not {api!r}"
            )
        if not name:
            self.add("error", doc, doc.line("metadata"), ctx, "metadata.name is required (pods refer to it)")
        spec = data.get("spec")
        if not isinstance(spec, dict):
            self.add("error", doc, doc.line("spec"), ctx, "spec is missing or not a mapping")
            return
        provider = spec.get("provider")
        if provider != PROVIDER:
            hint = (
                f"the driver sends this SPC to the {provider!r} provider, not to keygate"
                if isinstance(provider, str) and provider
                else "without it the driver does not know which provider to call"
            )
            self.add(
                "error", doc, doc.line("spec", "provider"), ctx, f"spec.provider must be 'keygate'; {hint}"
            )
        raw_params = spec.get("parameters")
        if raw_params is None:
            raw_params = {}
        if not isinstance(raw_params, dict):
            self.add("error", doc, doc.line("spec", "parameters"), ctx, "spec.parameters must be a mapping")
            return
        params: dict[str, str] = {}
        for key, val in raw_params.items():
            if isinstance(val, str):
                params[str(key)] = val
            else:
                shown = yaml.safe_dump(val, default_flow_style=True).strip().removesuffix("...").strip()
                self.add(
                    "error",
                    doc,
                    doc.line("spec", "parameters", str(key)),
                    ctx,
                    f"parameters.{key} must be a string (the CRD types parameters as map[string]string); "
                    f"quote it ({key}: {shown!r}) or write lists as a '|' block",
                )
        namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
        pod_namespaces = {self._pod_namespace(p) for p in pods} - {None}
        if namespace is None and len(pod_namespaces) == 1:
            namespace = next(iter(pod_namespaces))
        namespace = namespace or self.namespace
        errors = self.report.errors
        objects = self._lint_objects(doc, ctx, params)
        self._lint_parameters(doc, ctx, params, objects)
        self._lint_sealed(doc, ctx, objects, namespace)
        self._lint_secret_objects(doc, ctx, spec, objects)
        if self.listing is not None and objects is not None and self.report.errors == errors:
            self.listing.queue(doc, ctx, params, objects, namespace)
        if objects is not None and name:
            counts: dict[str, int] = {}
            for obj, _ in objects:
                counts[obj.backend] = counts.get(obj.backend, 0) + 1
            backends = ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
            self.report.summaries.append(
                f"{doc.file}: SecretProviderClass {name}: {len(objects)} of {self._total} object(s) "
                f"resolved ({backends or 'none'})"
            )

    def _lint_parameters(
        self,
        doc: Doc,
        ctx: str,
        params: Mapping[str, str],
        objects: list[tuple[SecretObject, _ItemLoc]] | None,
    ) -> None:
        owners: dict[str, list[str]] = {}
        for backend in self.registry.names():
            for p in self.registry.parameters_for(backend):
                owners.setdefault(p, []).append(backend)
        known = sorted(COMMON_PARAMETERS | set(owners))
        used = {obj.backend for obj, _ in objects or []}
        for key in params:
            line = doc.key_line("spec", "parameters", key)
            if key == revocation.PARAMETER:
                try:
                    revocation.spc_mode(params)
                except InvalidSPC as exc:
                    self.add("error", doc, line, ctx, exc.message)
            if key in COMMON_PARAMETERS:
                continue
            if key not in owners:
                guess = suggest(key, known)
                if guess:
                    self.add("error", doc, line, ctx, f"unknown parameter {key!r}; did you mean {guess!r}?")
                else:
                    self.add("warning", doc, line, ctx, f"unknown parameter {key!r}; keygate ignores it")
                continue
            if objects is not None and not used & set(owners[key]) and key != "secrets":
                self.add(
                    "warning",
                    doc,
                    line,
                    ctx,
                    f"parameter {key!r} configures the {'/'.join(owners[key])} backend, "
                    f"but no object uses it (backends used: {', '.join(sorted(used)) or 'none'})",
                )
        backend_param = params.get("backend")
        if backend_param and not self.registry.known(backend_param):
            backend = backend_param
            guess = suggest(backend, self.registry.names())
            hint = f"did you mean {guess!r}?" if guess else f"known: {', '.join(self.registry.names())}"
            self.add(
                "error",
                doc,
                doc.line("spec", "parameters", "backend"),
                ctx,
                f"unknown backend {backend!r}; {hint}",
            )

    def _lint_objects(
        self, doc: Doc, ctx: str, params: Mapping[str, str]
    ) -> list[tuple[SecretObject, _ItemLoc]] | None:
        try:
            raw = spc_mod.raw_items(params)
        except InvalidSPC as exc:
            self.add("error", doc, self._inner_error_line(doc, exc.message), ctx, exc.message)
            return None
        if not raw:
            self.add(
                "error",
                doc,
                doc.line("spec", "parameters"),
                ctx,
                "no objects: set parameters.objects to a YAML list such as '- objectName: db-password' "
                "(or parameters.secrets for GCP-style entries)",
            )
            return None
        if len(raw) > spc_mod.MAX_OBJECTS:
            self.add(
                "error",
                doc,
                doc.line("spec", "parameters", "objects"),
                ctx,
                f"more than {spc_mod.MAX_OBJECTS} objects",
            )
        self._total = len(raw)
        locs = _item_locations(doc, params)
        default_backend = params.get("backend") or self.registry.infer_for_spc(params)
        all_fields = self.registry.all_fields()
        resolved: list[tuple[SecretObject, _ItemLoc]] = []
        paths: dict[str, tuple[SecretObject, _ItemLoc]] = {}
        layout = PathClaims()
        ids: dict[tuple[str, str], SecretObject] = {}
        for index, (implied, item) in enumerate(raw):
            loc = locs[index] if index < len(locs) else _ItemLoc("objects", None, None, None)
            label = item.get("objectName") or item.get("resourceName")
            where = f"{ctx}, objects[{index}]" + (f" {label!r}" if isinstance(label, str) else "")
            try:
                obj = spc_mod.resolve_object(index, implied, item, params, self.registry, default_backend)
            except InvalidSPC as exc:
                self._unknown_fields(doc, where, loc, item, None, all_fields)
                message, line = _strip_where(exc.message), loc.line()
                if "out of range" in message:
                    for mode_key in spc_mod.MODE_FIELDS:
                        raw_mode = loc.raw_scalar(mode_key)
                        if raw_mode and raw_mode.isdigit():
                            line = loc.line(mode_key)
                            message += (
                                f"; an unquoted {raw_mode} is a decimal number in YAML: "
                                f'write "0{raw_mode}" for an octal mode'
                            )
                self.add("error", doc, line, where, message)
                continue
            self._unknown_fields(doc, where, loc, obj.spec, obj.backend, all_fields)
            self._mode_notes(doc, where, loc, obj)
            note = selectors.lint_note(obj)
            if note is not None:
                self.add("info", doc, loc.line(), where, note)
            if obj.path in paths:
                first, first_loc = paths[obj.path]
                at = f" (line {first_loc.line()})" if first_loc.line() else ""
                self.add(
                    "error",
                    doc,
                    loc.line(),
                    where,
                    f"file {obj.path!r} is also written by objects[{first.index}] {first.name!r}{at}; "
                    "give one of them an objectAlias",
                )
            else:
                paths[obj.path] = (obj, loc)
                try:
                    layout.claim(obj.path, f"objects[{obj.index}] {obj.name!r}")
                except InvalidSPC as exc:
                    self.add("error", doc, loc.line(), where, _strip_where(exc.message))
            key = (obj.backend, obj.name)
            if obj.backend == "sealed" and key in ids:
                self.add(
                    "error",
                    doc,
                    loc.line(),
                    where,
                    f"objectName {obj.name!r} is used twice for sealed values "
                    f"(objects[{ids[key].index}] too); "
                    "sealed objects are identified by objectName, so each needs its own",
                )
            ids.setdefault(key, obj)
            resolved.append((obj, loc))
        self._check_backends(doc, ctx, params, resolved)
        used = {obj.backend for obj, _ in resolved}
        for backend in sorted(used):
            self.registry.note_extra(backend)
        for backend in sorted(used & self.registry.missing.keys()):
            if isinstance(self.registry.missing[backend], MissingExtra):
                self.missing_extras.add(backend)
                self.missing_warnings += 1
            self.add(
                "warning",
                doc,
                None,
                ctx,
                f"{self.registry.missing[backend].message}; lint skipped the {backend} checks that need it",
            )
        return resolved

    def _check_backends(
        self, doc: Doc, ctx: str, params: Mapping[str, str], resolved: list[tuple[SecretObject, _ItemLoc]]
    ) -> None:
        """The daemon's own walk of the backend parts (schema, rules), with every finding kept."""
        sink = Collect()
        spc_mod.check_objects([obj for obj, _ in resolved], params, self.registry, sink)
        by_index = {obj.index: (obj, loc) for obj, loc in resolved}
        for finding in sink.findings:
            if finding.severity == "skipped":
                owner = by_index[finding.index][0].backend if finding.index is not None else None
                self.registry.note_skipped(finding.message, owner)
                continue
            if finding.index is None:
                key = finding.key
                line = doc.key_line("spec", "parameters", key) if key else doc.line("spec", "parameters")
                self.add(finding.severity, doc, line, ctx, finding.message)
                continue
            obj, loc = by_index[finding.index]
            where = f"{ctx}, objects[{obj.index}] {obj.name!r}"
            line = loc.line(finding.key) if finding.key else loc.line()
            self.add(finding.severity, doc, line, where, _strip_where(finding.message))

    def _unknown_fields(
        self,
        doc: Doc,
        where: str,
        loc: _ItemLoc,
        item: Mapping[str, Any],
        backend: str | None,
        all_fields: Sequence[str],
    ) -> None:
        allowed = self.registry.fields_for(backend) if backend else frozenset(all_fields)
        if allowed is None:
            return
        for key in item:
            if key in allowed:
                continue
            guess = suggest(key, sorted(allowed)) or suggest(key, all_fields)
            if guess and guess in allowed:
                self.add(
                    "error", doc, loc.line(key), where, f"unknown field {key!r}; did you mean {guess!r}?"
                )
            elif guess or key in all_fields:
                owner = self.registry.owners_of_field(guess or key)
                self.add(
                    "error",
                    doc,
                    loc.line(key),
                    where,
                    f"field {key!r} is not used by {backend} objects"
                    + (f"; {guess!r} belongs to the {'/'.join(owner)} backend" if guess else "")
                    + " (set 'backend:' on the object if it is meant for another backend)",
                )
            else:
                self.add(
                    "warning",
                    doc,
                    loc.line(key),
                    where,
                    f"unknown field {key!r} for a {backend} object; it is ignored",
                )

    def _mode_notes(self, doc: Doc, where: str, loc: _ItemLoc, obj: SecretObject) -> None:
        for key in spc_mod.MODE_FIELDS:
            raw = loc.raw_scalar(key)
            if raw and raw.isdigit() and not raw.startswith("0") and int(raw) > 7:
                mode = parse_mode(int(raw), where) if int(raw) <= 0o777 else None
                shown = f"mode {mode:04o}" if mode is not None else "an invalid mode"
                self.add(
                    "warning",
                    doc,
                    loc.line(key),
                    where,
                    f"{key}: {raw} is read as the decimal number {raw}, which is {shown}; "
                    f'write an octal string such as "0{raw}" if that is what you meant',
                )
        if obj.mode is not None and obj.mode & 0o002:
            self.add(
                "warning", doc, loc.line(), where, f"file mode {obj.mode:04o} lets any user write the file"
            )

    def _lint_sealed(
        self, doc: Doc, ctx: str, objects: list[tuple[SecretObject, _ItemLoc]] | None, namespace: str | None
    ) -> None:
        from providers.sealed.envelope import SealError, key_id, load_public, parse

        kids: dict[str, str] = {}
        for path in self.recipients:
            try:
                kids[key_id(load_public(Path(path).read_bytes(), path))] = path
            except (OSError, SealError) as exc:
                raise KeygateError(f"--recipient {path}: {exc}") from None
        unchecked = 0
        for obj, loc in objects or []:
            if obj.backend != "sealed" or not isinstance(obj.field("sealed"), str):
                continue
            where = f"{ctx}, objects[{obj.index}] {obj.name!r}"
            try:
                env = parse(str(obj.field("sealed")))
            except SealError:
                continue  # already reported by the backend's validate
            line = loc.line("sealed")
            reseal = f"re-seal it: keygate seal --namespace {namespace or '<namespace>'} --name {obj.name}"
            if env.name != obj.name:
                self.add(
                    "error",
                    doc,
                    line,
                    where,
                    f"the sealed value was sealed for object name {env.name!r}, not {obj.name!r}; "
                    f"the daemon will refuse it ({reseal})",
                )
            if namespace is None:
                unchecked += 1
            elif env.namespace != namespace:
                self.add(
                    "error",
                    doc,
                    line,
                    where,
                    f"the sealed value was sealed for namespace {env.namespace!r}, "
                    "but this SPC serves pods in "
                    f"{namespace!r}; the daemon will refuse it ({reseal})",
                )
            if kids and not {kid for kid, _, _ in env.recipients} & set(kids):
                sealed_for = ", ".join(kid for kid, _, _ in env.recipients) or "no key"
                self.add(
                    "error",
                    doc,
                    line,
                    where,
                    f"the sealed value is for key id(s) {sealed_for}, none of the given node keys "
                    f"({', '.join(f'{k} ({p})' for k, p in kids.items())}); {reseal} --recipient <node.pub>",
                )
        if unchecked:
            self.add(
                "warning",
                doc,
                doc.line("metadata"),
                ctx,
                f"cannot check which namespace {unchecked} sealed value(s) are bound to: "
                "set metadata.namespace, "
                "pass the pod manifest, or use --namespace",
            )

    def _derived_files(
        self, objects: list[tuple[SecretObject, _ItemLoc]], parameters: Mapping[str, Any]
    ) -> set[str]:
        """Files objects write besides their own (AWS ``jmesPath`` aliases), by their schema."""
        text = {k: v for k, v in parameters.items() if isinstance(v, str)}
        out: set[str] = set()
        for obj, _ in objects:
            schema = self.registry.schema(obj.backend)
            if schema is not None:
                out.update(schema.extra_paths(obj, text))
        return out

    def _lint_secret_objects(
        self, doc: Doc, ctx: str, spec: Mapping[str, Any], objects: list[tuple[SecretObject, _ItemLoc]] | None
    ) -> None:
        sync = spec.get("secretObjects")
        if not sync:
            return
        self.add(
            "warning",
            doc,
            doc.line("spec", "secretObjects"),
            ctx,
            "secretObjects copies the values into Kubernetes Secrets (etcd, backups); "
            "keygate's guarantees stop there. Mount the files instead where you can",
        )
        if objects is None or not isinstance(sync, list):
            return
        raw = spec.get("parameters")
        parameters: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        files = sorted({obj.path for obj, _ in objects} | self._derived_files(objects, parameters))
        for i, entry in enumerate(sync):
            data = entry.get("data") if isinstance(entry, dict) else None
            for j, item in enumerate(data if isinstance(data, list) else []):
                ref = item.get("objectName") if isinstance(item, dict) else None
                if isinstance(ref, str) and ref not in files:
                    guess = suggest(ref, files)
                    hint = f"did you mean {guess!r}?" if guess else f"files: {', '.join(files)}"
                    self.add(
                        "error",
                        doc,
                        doc.line("spec", "secretObjects", i, "data", j, "objectName"),
                        ctx,
                        f"secretObjects[{i}].data[{j}].objectName {ref!r} "
                        f"is not a file this SPC mounts; {hint}",
                    )

    def _inner_error_line(self, doc: Doc, message: str) -> int | None:
        parameter = "secrets" if "'secrets'" in message else "objects"
        base, fallback = _inner_base(doc, parameter)
        match = re.search(r"at line (\d+)", message)
        if match and base is not None:
            return base + int(match.group(1)) - 1
        return fallback

    # --- pods ---

    def _pod_specs(self, doc: Doc) -> Iterator[tuple[Doc, tuple[str | int, ...], dict[str, Any]]]:
        data = doc.data
        kind = data.get("kind")
        path: tuple[str | int, ...] = ("spec",)
        if kind in WORKLOAD_KINDS:
            path = ("spec", "template", "spec")
        elif kind == "CronJob":
            path = ("spec", "jobTemplate", "spec", "template", "spec")
        spec: Any = data
        for step in path:
            spec = spec.get(step) if isinstance(spec, dict) else None
        if isinstance(spec, dict):
            yield doc, path, spec
        else:
            self.add("error", doc, doc.line(*path), _pod_label(doc), f"{'.'.join(map(str, path))} is missing")

    @staticmethod
    def _pod_namespace(pod: tuple[Doc, tuple[str | int, ...], dict[str, Any]]) -> str | None:
        meta = pod[0].data.get("metadata")
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns if isinstance(ns, str) else None

    def lint_pod(self, doc: Doc, path: tuple[str | int, ...], spec: dict[str, Any], spcs: list[Doc]) -> None:
        ctx = _pod_label(doc)
        spc_names = {
            d.data.get("metadata", {}).get("name"): d
            for d in spcs
            if isinstance(d.data.get("metadata"), dict)
        }
        ns = self._pod_namespace((doc, path, spec))
        for name, spc_doc in spc_names.items():
            spc_ns = spc_doc.data["metadata"].get("namespace")
            if ns and spc_ns and ns != spc_ns:
                self.add(
                    "error",
                    doc,
                    doc.line("metadata", "namespace"),
                    ctx,
                    f"the pod is in namespace {ns!r} but SecretProviderClass {name} is in {spc_ns!r}; "
                    "the driver looks the SPC up in the pod's own namespace",
                )
        csi_volumes: dict[str, int] = {}
        for i, vol in enumerate(spec.get("volumes") or []):
            csi = vol.get("csi") if isinstance(vol, dict) else None
            if not isinstance(csi, dict) or csi.get("driver") != DRIVER:
                continue
            vpath = (*path, "volumes", i)
            vname = vol.get("name", f"volumes[{i}]")
            csi_volumes[vname] = i
            attrs: dict[str, Any] = (
                csi["volumeAttributes"] if isinstance(csi.get("volumeAttributes"), dict) else {}
            )
            ref = attrs.get("secretProviderClass")
            if not ref:
                self.add(
                    "error",
                    doc,
                    doc.line(*vpath, "csi"),
                    ctx,
                    f"volume {vname!r}: volumeAttributes.secretProviderClass is required",
                )
            elif ref not in spc_names:
                guess = suggest(str(ref), [n for n in spc_names if n])
                hint = f"; did you mean {guess!r}?" if guess else " (it is not in the linted files)"
                self.add(
                    "error" if guess else "warning",
                    doc,
                    doc.line(*vpath, "csi", "volumeAttributes", "secretProviderClass"),
                    ctx,
                    f"volume {vname!r} uses SecretProviderClass {ref!r}{hint}",
                )
            if csi.get("readOnly") is not True:
                self.add(
                    "error",
                    doc,
                    doc.line(*vpath, "csi"),
                    ctx,
                    f"volume {vname!r}: the Secrets Store CSI driver mounts only with "
                    "'readOnly: true' under csi:",
                )
        if not csi_volumes:
            names = ", ".join(n for n in spc_names if n)
            self.add(
                "error",
                doc,
                doc.line(*path),
                ctx,
                f"no volume uses the {DRIVER} driver, so SecretProviderClass {names} is never mounted; add "
                f"volumes: [{{name: secrets, csi: {{driver: {DRIVER}, readOnly: true, "
                f"volumeAttributes: {{secretProviderClass: {names.split(', ')[0]}}}}}}}]",
            )
        mounted: set[Any] = set()
        for group in CONTAINER_LISTS:
            for i, container in enumerate(spec.get(group) or []):
                if not isinstance(container, dict):
                    continue
                cname = container.get("name", f"{group}[{i}]")
                mounted |= {m.get("name") for m in container.get("volumeMounts") or [] if isinstance(m, dict)}
                image = container.get("image")
                line = doc.line(*path, group, i, "image")
                if not isinstance(image, str) or not image:
                    self.add("error", doc, line, ctx, f"container {cname!r} has no image")
                elif (problem := reference_problem(image)) is not None:
                    self.add("error", doc, line, ctx, f"container {cname!r}: image {image!r} {problem}")
                elif parse_image(image).digest is None:
                    self.add(
                        "error",
                        doc,
                        line,
                        ctx,
                        f"container {cname!r}: image {image!r} is not pinned by digest, so keygate's release "
                        f"policy refuses the mount; {pin_hint(image)}",
                    )
        for vname, i in csi_volumes.items():
            if vname not in mounted:
                self.add(
                    "warning",
                    doc,
                    doc.line(*path, "volumes", i),
                    ctx,
                    f"volume {vname!r} is not mounted by any container",
                )


def _pod_label(doc: Doc) -> str:
    meta = doc.data.get("metadata") if isinstance(doc.data, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{doc.data.get('kind', 'Pod')} {name}" if name else str(doc.data.get("kind", "Pod"))


def _strip_where(message: str) -> str:
    """Drop the daemon's own ``objects[i] 'name': `` prefix; lint prints a fuller location."""
    return re.sub(r"^objects\[\d+\](?: '[^']*')?: ", "", message)


def main(
    spc_path: str,
    pod_path: str | None,
    *,
    namespace: str | None,
    recipients: Sequence[str],
    strict: bool,
    policy: str | None = None,
    listing: SelectorPreview | None = None,
) -> int:
    """Run lint and print the report. Exit status: 1 on errors (or other warnings with ``strict``),
    else 3 when a used backend's extra is missing (lint could not check everything), else 0."""
    linter = Linter(namespace=namespace, recipients=recipients, policy=policy, listing=listing)
    report = linter.run(spc_path, pod_path)
    print(report.render())
    if report.errors > 0 or (strict and report.warnings > linter.missing_warnings):
        return ExitCode.PROBLEMS
    if linter.missing_extras:
        return ExitCode.MISSING_EXTRA
    return ExitCode.OK
