"""From SPC objects to Vault reads, and from Vault's answers to file contents."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from provider.domain import SecretObject
from providers.common import extract
from providers.common.encoding import decode
from providers.vault.client import Read, Result
from providers.vault.params import secret_path


def read_of(obj: SecretObject) -> Read:
    """The distinct request an object needs; objects asking the same share one read."""
    raw = secret_path(obj.str_field("secretPath"))
    path, _, query = raw.partition("?")
    method = obj.str_field("method", "GET").upper() or "GET"
    args = obj.field("secretArgs")
    args_text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str) if args else ""
    return Read(path.strip("/"), tuple(sorted(parse_qsl(query))), method, args_text)


def object_id(obj: SecretObject) -> str:
    path = secret_path(obj.str_field("secretPath"))
    key = obj.str_field("secretKey")
    return f"vault/{path}#{key}" if key else f"vault/{path}"


def contents(obj: SecretObject, read: Read, result: Result) -> bytes:
    """``secretKey`` of the answer (or all of it as JSON), decoded per ``encoding``."""
    where = f"objects[{obj.index}] {obj.name!r}"
    key = obj.str_field("secretKey")
    values = result.values
    if key:
        names = ", ".join(sorted(map(str, values))) if isinstance(values, dict) else "none"
        missing = f"{where}: key {key!r} not found at Vault path {read.label!r} (keys there: {names})"
        value = extract.key_of(values, key, missing)
    else:
        value = values
    encoding = obj.str_field("encoding", "utf-8").lower() or "utf-8"
    failure = (
        f"{where}: the value at {read.label!r}"
        + (f" key {key!r}" if key else "")
        + f" is not valid {encoding}; remove 'encoding' or store it {encoding}-encoded"
    )
    return decode(extract.as_text(value), encoding, failure)
