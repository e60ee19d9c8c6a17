"""Reading one value out of a structured secret: a key of a JSON/YAML mapping, or a JMESPath.

Parser errors are never passed on: their text quotes the payload, which is a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from provider.bounded_cache import bounded_memo
from provider.errors import InvalidSPC, SecretNotFound

Format = Literal["JSON", "YAML"]


def parse(data: bytes | str, kind: Format, failure: str) -> Any:
    """The document in ``data``; InvalidSPC(``failure``) when it does not parse."""
    try:
        return json.loads(data) if kind == "JSON" else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError, RecursionError):
        raise InvalidSPC(failure) from None


def key_of(document: Any, key: str, missing: str) -> Any:
    """``document[key]``; SecretNotFound(``missing``) when the document has no such key."""
    if not isinstance(document, Mapping) or key not in document:
        raise SecretNotFound(missing)
    return document[key]


def as_text(value: Any, compact: bool = True) -> str:
    """A string as is; anything else as JSON: compact and sorted (stable files), or as the AWS
    provider writes ``jmesPath`` results (``compact=False``: Python's default layout)."""
    if isinstance(value, str):
        return value
    if compact:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return json.dumps(value)


@bounded_memo("jmespath", max_entries=256, max_bytes=512 * 1024, max_entry_bytes=8 * 1024)
def compile_jmes(expression: str) -> Any:
    """A compiled JMESPath expression (jmespath is imported on first use)."""
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(expression)
    except JMESPathError:
        raise InvalidSPC(f"jmesPath {expression[:100]!r} is not a valid JMESPath expression") from None
