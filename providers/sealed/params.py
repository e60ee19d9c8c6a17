"""The sealed backend's SPC vocabulary: one field, the text ``keygate seal`` printed."""

from __future__ import annotations

from provider.errors import InvalidSPC
from providers.common.schema import Marker, RuleInput, Schema, Spec
from providers.sealed.envelope import SealError, parse


def _envelope(given: RuleInput) -> None:
    assert given.fields is not None
    text = given.fields.text("sealed")
    if not text.strip():
        raise InvalidSPC(
            f"{given.where}: a sealed object needs a 'sealed' field with the output of 'keygate seal'"
        )
    try:
        parse(text)
    except SealError as exc:
        raise InvalidSPC(f"{given.where}: {exc}") from None


SCHEMA = Schema(
    backend="sealed",
    summary="Values sealed in CI for a namespace and object name, opened only with the node's key.",
    fields=(
        Spec("sealed", "the output of 'keygate seal' (bound to the namespace and objectName)", marker=True),
    ),
    object_markers=(Marker("sealed"),),
    object_rules=(_envelope,),
)
