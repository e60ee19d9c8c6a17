"""Read the SPC parameters into typed :class:`SecretObject` entries, one backend each.

Objects come from the ``objects`` parameter (a YAML or JSON string: a list of mappings, or the
Azure provider's ``array:`` of YAML strings) and from the GCP provider's ``secrets`` parameter.
Each object's backend is, in order: its own ``backend:`` field, the SPC's ``backend`` parameter,
a field only one backend uses (``sealed``, ``secretPath``, ``resourceName``, ``objectType``), or a
parameter only one backend uses (``vaultAddress``, ``keyvaultName``, ``region``). Parsed results
are cached by the parameter text, since rotation re-sends the same SPC every poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import yaml

from provider.errors import InvalidSPC
from provider.files import PathClaims, clean_path, parse_mode
from providers.base import SecretObject
from providers.registry import Registry

MAX_OBJECTS = 1000
PATH_FIELDS = ("objectAlias", "fileName", "path")
NAME_FIELDS = ("objectName", "resourceName")
MODE_FIELDS = ("filePermission", "mode")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, so a typo cannot silently shadow a field."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(text: str, what: str) -> Any:
    """Parse YAML (JSON is YAML) with a message that points at the line, never echoing content."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or "syntax error"
        raise InvalidSPC(f"{what} is not valid YAML/JSON{where}: {problem}") from None
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


@lru_cache(maxsize=512)
def _cached_items(text: str, parameter: str) -> tuple[tuple[tuple[str, Any], ...], ...]:
    return tuple(tuple(item.items()) for item in _items(text, parameter))


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
            raw.extend((implied or "", dict(item)) for item in _cached_items(text, parameter))
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

    Shared by the daemon and ``keygate lint`` so both read an SPC the same way.
    """
    where = f"objects[{index}]"
    name = _first_str(item, NAME_FIELDS, where)
    if name is None:
        raise InvalidSPC(f"{where}: 'objectName' is required")
    where = f"objects[{index}] {name!r}"
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
    backend_impl = registry.get(backend)
    default_path = getattr(backend_impl, "default_path", None)
    explicit = _first_str(item, PATH_FIELDS, where)
    path = clean_path(explicit or (default_path(item, parameters) if default_path else name), where)
    mode_raw = next((item[k] for k in MODE_FIELDS if item.get(k) not in (None, "")), None)
    mode = None if mode_raw is None else parse_mode(mode_raw, where)
    return SecretObject(backend=backend, name=name, path=path, mode=mode, spec=item, index=index)


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
        registry.get(obj.backend).validate(obj, parameters)
        objects.append(obj)
    return objects
