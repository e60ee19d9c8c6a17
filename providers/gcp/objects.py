"""From a Secret Manager payload to the file: whole, or one key with ``extractJSONKey`` /
``extractYAMLKey`` (as the GCP provider: a top-level string value only)."""

from __future__ import annotations

from provider.domain import SecretObject
from provider.errors import InvalidSPC
from providers.common import extract
from providers.common.extract import Format

EXTRACT_FIELDS: tuple[tuple[str, Format], ...] = (("extractJSONKey", "JSON"), ("extractYAMLKey", "YAML"))


def contents(obj: SecretObject, data: bytes) -> bytes:
    where = f"objects[{obj.index}] {obj.name!r}"
    for field, kind in EXTRACT_FIELDS:
        key = obj.str_field(field)
        if not key:
            continue
        document = extract.parse(
            data, kind, f"{where}: {field} is set but the secret's payload is not valid {kind}"
        )
        if not isinstance(document, dict):
            raise InvalidSPC(f"{where}: {field} is set but the secret's payload is not a {kind} mapping")
        value = extract.key_of(
            document, key, f"{where}: key {key!r} was not found in the secret's {kind} payload"
        )
        if not isinstance(value, str):
            raise InvalidSPC(
                f"{where}: the value of {key!r} is a {type(value).__name__}; only string values can be "
                f"extracted with {field}"
            )
        return value.encode()
    return data
