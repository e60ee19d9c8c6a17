"""A Vault answer written the way vault-csi-provider writes an object that has no ``secretKey``.

That peer parses the answer into the Vault Go client's ``api.Secret`` and writes ``json.Marshal``
of it, so applications parse the file as such (``.data.certificate``, ``.data.data.password``).
The bytes follow from Go's rules, which this module reproduces:

* struct fields in declaration order: ``request_id``, ``lease_id``, ``lease_duration``,
  ``renewable``, ``data``, ``warnings``, then ``auth``, ``wrap_info``, ``mount_type`` only when set;
* map keys sorted (``data`` and everything below it), no whitespace;
* ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c``..., other text left as UTF-8;
* numbers as Vault sent them (the peer decodes with ``UseNumber``); floats are printed the way
  Go prints a float64, which is how Vault itself wrote them.

:class:`StableRequestIds` keeps the file stable across rotation polls: ``request_id`` is new on
every read, so a static secret would otherwise change (and get a new object version) every poll.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Hashable, Mapping
from decimal import Decimal
from typing import Any

from provider.bounded_cache import BoundedCache

_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_HTML_RE = re.compile("[<>&\u2028\u2029]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_EXPONENT_RE = re.compile(r"e([+-])0(\d)\Z")
MAX_REQUEST_ID = 128
MAX_DEPTH = 200


def peer_json(body: Mapping[str, Any], request_id: str | None = None) -> bytes:
    """``body`` (Vault's parsed answer) as vault-csi-provider writes it; ``request_id`` overrides."""
    rid = _text(body.get("request_id")) if request_id is None else request_id
    parts = [
        ("request_id", _str(rid)),
        ("lease_id", _str(_text(body.get("lease_id")))),
        ("lease_duration", _int(body.get("lease_duration"))),
        ("renewable", _bool(body.get("renewable"))),
        ("data", _value(body.get("data")) if isinstance(body.get("data"), dict) else "null"),
        ("warnings", _strings(body.get("warnings"))),
    ]
    if isinstance(body.get("auth"), dict):
        parts.append(("auth", _auth(body["auth"])))
    if isinstance(body.get("wrap_info"), dict):
        parts.append(("wrap_info", _wrap_info(body["wrap_info"])))
    if _text(body.get("mount_type")):
        parts.append(("mount_type", _str(_text(body.get("mount_type")))))
    return _object(parts).encode()


class StableRequestIds:
    """The ``request_id`` to write for a read: the first one that returned the current answer.

    Remembered per read (and per pod, by the caller's key) with a digest of the rest of the
    answer; while the rest is unchanged the earlier id is written again, so the file and its
    object version stay the same until the secret itself changes. Holds no secret values.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._ids: BoundedCache[Hashable, tuple[str, str]] = BoundedCache(
            "vault-request-ids", max_entries=max_entries, max_bytes=max_entries * 1024, max_entry_bytes=4096
        )

    def render(self, key: Hashable, body: Mapping[str, Any]) -> bytes:
        fresh = _text(body.get("request_id"))
        rest = hashlib.sha256(peer_json(body, request_id="")).hexdigest()
        known = self._ids.get(key)
        if known is not None and known[0] == rest:
            return peer_json(body, request_id=known[1])
        if len(fresh) <= MAX_REQUEST_ID:
            self._ids.put(key, (rest, fresh))
        return peer_json(body, request_id=fresh)

    def clear(self) -> None:
        self._ids.clear()


def _object(parts: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_str(name)}:{value}" for name, value in parts) + "}"


class TooDeep(ValueError):
    """The answer nests deeper than :data:`MAX_DEPTH`; the caller names the object."""


def _value(value: Any, depth: int = 0) -> str:
    """Any JSON value as Go writes an ``interface{}`` holding it."""
    if depth > MAX_DEPTH:
        raise TooDeep(f"nested more than {MAX_DEPTH} levels deep")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, dict):
        items = (f"{_str(str(k))}:{_value(value[k], depth + 1)}" for k in sorted(value, key=str))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(item, depth + 1) for item in value) + "]"
    return _str(str(value))


def _str(text: str) -> str:
    text = _SURROGATE_RE.sub("\ufffd", text)
    return _HTML_RE.sub(lambda m: _HTML[m.group()], json.dumps(text, ensure_ascii=False))


def _float(value: float) -> str:
    """Go's float64 text: shortest digits, exponent form only below 1e-6 or from 1e21."""
    if not math.isfinite(value):
        return "null"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return _EXPONENT_RE.sub(r"e\g<1>\g<2>", repr(value))
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "0"


def _bool(value: Any) -> str:
    return "true" if value is True else "false"


def _strings(value: Any) -> str:
    if not isinstance(value, list):
        return "null"
    return "[" + ",".join(_str(_text(item)) for item in value) + "]"


def _string_map(value: Any) -> str:
    if not isinstance(value, dict):
        return "null"
    return "{" + ",".join(f"{_str(str(k))}:{_str(_text(value[k]))}" for k in sorted(value, key=str)) + "}"


def _auth(auth: Mapping[str, Any]) -> str:
    return _object(
        [
            ("client_token", _str(_text(auth.get("client_token")))),
            ("accessor", _str(_text(auth.get("accessor")))),
            ("policies", _strings(auth.get("policies"))),
            ("token_policies", _strings(auth.get("token_policies"))),
            ("identity_policies", _strings(auth.get("identity_policies"))),
            ("metadata", _string_map(auth.get("metadata"))),
            ("orphan", _bool(auth.get("orphan"))),
            ("entity_id", _str(_text(auth.get("entity_id")))),
            ("lease_duration", _int(auth.get("lease_duration"))),
            ("renewable", _bool(auth.get("renewable"))),
            ("mfa_requirement", _mfa(auth.get("mfa_requirement"))),
        ]
    )


def _mfa(mfa: Any) -> str:
    if not isinstance(mfa, dict):
        return "null"
    parts: list[tuple[str, str]] = []
    if _text(mfa.get("mfa_request_id")):
        parts.append(("mfa_request_id", _str(_text(mfa.get("mfa_request_id")))))
    constraints = mfa.get("mfa_constraints")
    if isinstance(constraints, dict) and constraints:
        inner = []
        for name in sorted(constraints, key=str):
            methods = (constraints[name] or {}).get("any") if isinstance(constraints[name], dict) else None
            body = "null" if constraints[name] is None else "{}"
            if isinstance(methods, list) and methods:
                body = _object([("any", "[" + ",".join(_mfa_method(m) for m in methods) + "]")])
            inner.append(f"{_str(str(name))}:{body}")
        parts.append(("mfa_constraints", "{" + ",".join(inner) + "}"))
    return _object(parts)


def _mfa_method(method: Any) -> str:
    if not isinstance(method, dict):
        return "null"
    parts = [(k, _str(_text(method.get(k)))) for k in ("type", "id") if _text(method.get(k))]
    if method.get("uses_passcode") is True:
        parts.append(("uses_passcode", "true"))
    if _text(method.get("name")):
        parts.append(("name", _str(_text(method.get("name")))))
    return _object(parts)


def _wrap_info(info: Mapping[str, Any]) -> str:
    return _object(
        [
            ("token", _str(_text(info.get("token")))),
            ("accessor", _str(_text(info.get("accessor")))),
            ("ttl", _int(info.get("ttl"))),
            ("creation_time", _str(_text(info.get("creation_time")) or "0001-01-01T00:00:00Z")),
            ("creation_path", _str(_text(info.get("creation_path")))),
            ("wrapped_accessor", _str(_text(info.get("wrapped_accessor")))),
        ]
    )
