"""From SPC objects to Vault reads, and from Vault's answers to file contents."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from provider.domain import SecretObject
from provider.errors import InvalidSPC
from providers.common import extract
from providers.common.encoding import decode
from providers.vault.client import Read, Result
from providers.vault.params import secret_path
from providers.vault.response_json import TooDeep, peer_json

Render = Callable[[Mapping[str, Any]], bytes]


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


def contents(obj: SecretObject, read: Read, result: Result, whole: Render = peer_json) -> bytes:
    """``secretKey`` of the answer decoded per ``encoding``; without one, Vault's whole answer
    as vault-csi-provider writes it (``whole``; ``encoding`` then does not apply, as there)."""
    where = f"objects[{obj.index}] {obj.name!r}"
    key = obj.str_field("secretKey")
    values = result.values
    if not key:
        try:
            return whole(result.body if result.body is not None else {"data": values})
        except TooDeep as exc:
            raise InvalidSPC(
                f"{where}: Vault's answer at {read.label!r} is {exc}; "
                "name the value to write with 'secretKey'"
            ) from None
    if not isinstance(values, Mapping) or key not in values:  # the message only when it is needed
        names = ", ".join(sorted(map(str, values))) if isinstance(values, dict) else "none"
        missing = f"{where}: key {key!r} not found at Vault path {read.label!r} (keys there: {names})"
        extract.key_of(values, key, missing)
    value = values[key]
    encoding = obj.str_field("encoding", "utf-8").lower() or "utf-8"
    failure = (
        f"{where}: the value at {read.label!r}"
        + f" key {key!r}"
        + f" is not valid {encoding}; remove 'encoding' or store it {encoding}-encoded"
    )
    return decode(extract.as_text(value), encoding, failure)
