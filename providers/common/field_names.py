"""Object field names matched the way a peer provider's decoder matches them.

The AWS provider decodes an SPC's ``objects`` through Go's ``encoding/json``, which matches keys
to fields ignoring case; the other peers match exactly. This is that one rule, written once for
:meth:`providers.common.schema.Schema.canonical_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provider.errors import InvalidSPC


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


def fold_keys(raw: Mapping[Any, Any], names: tuple[str, ...], where: str, strict: bool) -> dict[Any, Any]:
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
