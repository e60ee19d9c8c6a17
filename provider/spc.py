"""Read the SPC parameters into typed :class:`SecretObject` entries, one backend each.

Objects come from the ``objects`` parameter (a YAML or JSON string: a list of mappings, or the
Azure provider's ``array:`` of YAML strings) and from the GCP provider's ``secrets`` parameter.
Each object's backend is, in order: its own ``backend:`` field, the SPC's ``backend`` parameter,
a marker its backend's schema declares (a field such as ``sealed``, ``secretPath``,
``resourceName``, an ``objectType`` value), or a marker parameter (``vaultAddress``,
``keyvaultName``, ``region``). :func:`check_objects` is the one walk of the backend parts. Parsed
results are cached by the parameter text, since rotation re-sends the same SPC every poll; the
cache is bounded by entries and bytes, and texts above 128 KiB are parsed every time, never
remembered.

The YAML is read before attestation, so it is attacker input: see :func:`load_yaml` for why
aliases are refused and how nodes and nesting are capped. ``keygate lint`` reads SPCs through
the same functions, so the linter refuses exactly what the daemon refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from provider.domain import SecretObject
from provider.errors import InvalidSPC
from provider.files import PathClaims, clean_path, parse_mode
from providers.common.schema import Finding, FirstError, Sink, go_json_fold
from providers.registry import Registry

MAX_OBJECTS = 1000
MAX_YAML_NODES = 50_000
MAX_YAML_DEPTH = 32
PATH_FIELDS = ("objectAlias", "fileName", "path")
NAME_FIELDS = ("objectName", "resourceName")
MODE_FIELDS = ("filePermission", "mode")


class _StrictPyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, so a typo cannot silently shadow a field."""


_StrictLoader: Any = _StrictPyLoader
if getattr(yaml, "__with_libyaml__", False):

    class _StrictCLoader(yaml.CSafeLoader):
        """The same on libyaml's parser: about 20x faster, which matters because SPCs are
        parsed on the event loop and before attestation. Its error marks differ from the
        pure-Python parser's in places, so errors are re-located with that one (for texts up
        to PRECISE_ERRORS_CHARS, to keep a refusal cheap)."""

    _StrictLoader = _StrictCLoader

PRECISE_ERRORS_CHARS = 64 * 1024


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


for _loader in {_StrictPyLoader, _StrictLoader}:
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _check_shape(text: str, what: str) -> None:
    """Refuse aliases, more than MAX_YAML_NODES nodes or nesting deeper than MAX_YAML_DEPTH.

    Checked on the parser's event stream, before anything is built, so a bomb costs one linear
    pass. Aliases are refused rather than counted: PyYAML shares an aliased node, so nine
    anchors of nine aliases each are a few hundred bytes that every consumer walking the result
    (a backend's validation, a hash, ``json.dumps``) sees as 9**9 entries. Object lists never
    need them (no peer provider documents them, and tools that render manifests do not write
    them inside parameter strings), and a clear refusal is easier to act on than a count limit
    a legitimate SPC might one day cross. Anchors without aliases are harmless and accepted.
    The node and depth caps leave room far beyond MAX_OBJECTS objects of ordinary shape.
    """
    nodes = depth = 0
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.AliasEvent):
            raise InvalidSPC(
                f"{what} uses the YAML alias *{event.anchor}{_where(event.start_mark)}; write each "
                "object out in full (aliases are refused: a few bytes of them can expand to millions)"
            )
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            nodes += 1
            if nodes > MAX_YAML_NODES:
                raise InvalidSPC(
                    f"{what} has more than {MAX_YAML_NODES} YAML nodes{_where(event.start_mark)}"
                )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise InvalidSPC(
                    f"{what} nests deeper than {MAX_YAML_DEPTH} levels{_where(event.start_mark)}"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_yaml(text: str, what: str) -> Any:
    """Parse YAML (JSON is YAML) with a message that points at the line, never echoing content.

    Aliases, node counts and nesting are checked first (:func:`_check_shape`).
    """
    try:
        _check_shape(text, what)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        error = exc
        if _StrictLoader is not _StrictPyLoader and len(text) <= PRECISE_ERRORS_CHARS:
            try:
                yaml.load(text, Loader=_StrictPyLoader)  # noqa: S506 - a SafeLoader subclass
            except yaml.MarkedYAMLError as precise:
                error = precise
            except (yaml.YAMLError, RecursionError, ValueError):
                pass
        problem = error.problem or "syntax error"
        raise InvalidSPC(f"{what} is not valid YAML/JSON{_where(error.problem_mark)}: {problem}") from None
    except (yaml.YAMLError, RecursionError, ValueError):
        raise InvalidSPC(f"{what} is not valid YAML/JSON") from None


def _items(text: str, parameter: str) -> list[dict[str, Any]]:
    data = load_yaml(text, f"parameter {parameter!r}")
    if data is None:
        return []
    if isinstance(data, dict) and set(data) == {"array"}:
        data = data["array"]
        if not isinstance(data, list):
            raise InvalidSPC(f"parameter {parameter!r}: 'array' must be a list")
        data = [
            load_yaml(item, f"parameter {parameter!r} array[{i}]") if isinstance(item, str) else item
            for i, item in enumerate(data)
        ]
    if not isinstance(data, list):
        raise InvalidSPC(f"parameter {parameter!r} must be a list of objects, got {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise InvalidSPC(f"parameter {parameter!r}[{i}] must be a mapping with objectName etc.")
        for key in item:
            if not isinstance(key, str):
                raise InvalidSPC(f"parameter {parameter!r}[{i}]: field names must be strings")
    return data


def _first_str(item: Mapping[str, Any], keys: tuple[str, ...], where: str) -> str | None:
    for key in keys:
        value = item.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise InvalidSPC(f"{where}: field {key!r} must be a string")
        return str(value)
    return None


def raw_items(parameters: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """The SPC's object entries as written, each with the backend its parameter implies ('' if none)."""
    raw: list[tuple[str, dict[str, Any]]] = []
    for parameter, implied in (("objects", None), ("secrets", "gcp")):
        text = parameters.get(parameter)
        if text and text.strip():
            raw.extend((implied or "", dict(item)) for item in _items(text, parameter))
    return raw


def resolve_object(
    index: int,
    implied: str,
    item: Mapping[str, Any],
    parameters: Mapping[str, str],
    registry: Registry,
    default_backend: str | None,
) -> SecretObject:
    """One entry -> a SecretObject with its backend, clean path and mode (no backend validation).

    Field names are rewritten to their canonical spelling as the backend's peer matches them
    (:meth:`providers.common.schema.Schema.canonical_fields`) before anything reads them.

    Shared by the daemon and ``keygate lint`` so both read an SPC the same way.
    """
    at = f"objects[{index}]"
    name = _first_str(item, NAME_FIELDS, at)
    folds = {go_json_fold(n) for n in NAME_FIELDS}
    if name is None and not any(isinstance(k, str) and go_json_fold(k) in folds for k in item):
        raise InvalidSPC(f"{at}: 'objectName' is required")
    where = f"{at} {name!r}" if name is not None else at
    backend_field = item.get("backend")
    if backend_field is not None and not isinstance(backend_field, str):
        raise InvalidSPC(f"{where}: field 'backend' must be a string")
    backend = backend_field or implied or registry.infer_for_object(item) or default_backend
    if not backend:
        raise InvalidSPC(
            f"{where}: cannot tell which backend serves it; set 'backend:' on the object or "
            f"the SPC parameter 'backend' (one of: {', '.join(registry.names())})"
        )
    if not registry.known(backend):
        raise InvalidSPC(
            f"{where}: unknown backend {backend!r}; known backends: {', '.join(registry.names())}"
        )
    schema = registry.schema(backend)
    if schema is not None:
        item = schema.canonical_fields(item, where)
        name = _first_str(item, NAME_FIELDS, at)
        if name is None:
            raise InvalidSPC(f"{at}: 'objectName' is required")
        where = f"{at} {name!r}"
    elif name is None:
        raise InvalidSPC(f"{at}: 'objectName' is required")
    default_path = schema.default_path if schema is not None else None
    explicit = _first_str(item, PATH_FIELDS, where)
    path = clean_path(explicit or (default_path(item, parameters) if default_path else name), where)
    mode_raw = next((item[k] for k in MODE_FIELDS if item.get(k) not in (None, "")), None)
    mode = None if mode_raw is None else parse_mode(mode_raw, where)
    return SecretObject(backend=backend, name=name, path=path, mode=mode, spec=item, index=index)


def check_objects(
    objects: Sequence[SecretObject], parameters: Mapping[str, str], registry: Registry, sink: Sink
) -> None:
    """The one walk of an SPC's backend-specific parts, shared by the daemon and ``keygate lint``.

    For each backend in use: its parameters once, then each of its objects, against its declared
    schema; ``sink`` decides whether the first error stops the walk (daemon) or all are kept
    (lint). A plugin without a schema is asked through its own ``validate``.
    """
    used: dict[str, list[SecretObject]] = {}
    for obj in objects:
        used.setdefault(obj.backend, []).append(obj)
    for backend, group in used.items():
        schema = registry.schema(backend)
        if schema is None:
            for obj in group:
                try:
                    registry.get(backend).validate(obj, parameters)
                except InvalidSPC as exc:
                    sink.report(Finding("error", exc.message, obj.index))
            continue
        settings = registry.settings(backend)
        values = schema.check_parameters(parameters, settings, sink)
        for obj in group:
            schema.check_object(obj, values, settings, sink)


def parse_objects(parameters: Mapping[str, str], registry: Registry) -> list[SecretObject]:
    """All objects of an SPC, each with a validated file path, mode and known backend."""
    default_backend = parameters.get("backend") or registry.infer_for_spc(parameters)
    raw = raw_items(parameters)
    if not raw:
        raise InvalidSPC(
            "the SecretProviderClass lists no objects: set parameters.objects to a YAML list "
            "such as '- objectName: db-password' (or parameters.secrets for GCP-style entries)"
        )
    if len(raw) > MAX_OBJECTS:
        raise InvalidSPC(f"the SecretProviderClass lists {len(raw)} objects; the limit is {MAX_OBJECTS}")
    objects: list[SecretObject] = []
    paths = PathClaims()
    for index, (implied, item) in enumerate(raw):
        obj = resolve_object(index, implied, item, parameters, registry, default_backend)
        paths.claim(obj.path, f"objects[{index}] {obj.name!r}", "give one an objectAlias")
        objects.append(obj)
    check_objects(objects, parameters, registry, FirstError())
    return objects
