"""From AWS answers to files: the object's own file and one per ``jmesPath`` entry; and how reads
are grouped into calls (one per secret, SSM names in batches)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from provider.domain import Fetched
from provider.errors import SecretNotFound
from providers.aws.client import Value
from providers.aws.params import SECRETS_MANAGER, Plan, Target, translate_path
from providers.common import extract

SSM_BATCH = 10
Unit = list[tuple[Target, Sequence[Plan]]]


def main_file(plan: Plan, value: Value, parameters: Mapping[str, str]) -> Fetched:
    obj = plan.obj
    alias = obj.spec.get("objectAlias")
    path = translate_path(alias, parameters) if isinstance(alias, str) and alias else None
    return Fetched(
        obj=obj, object_id=value.object_id, contents=value.contents, version=value.version, path=path
    )


def jmes_files(plan: Plan, main: Fetched, parameters: Mapping[str, str]) -> list[Fetched]:
    """One file per ``jmesPath`` entry: the expression's result, a string as is, else JSON."""
    if not plan.jmes:
        return []
    failure = f"{plan.where}: jmesPath is set but the value is not JSON; remove jmesPath or store JSON"
    document = extract.parse(main.contents, "JSON", failure)
    files: list[Fetched] = []
    for entry in plan.jmes:
        result = extract.compile_jmes(entry.path).search(document)
        if result is None:
            raise SecretNotFound(f"{plan.where}: jmesPath {entry.path!r} matched nothing in the value")
        files.append(
            Fetched(
                obj=plan.obj,
                object_id=f"{main.object_id}#jmesPath={entry.path}",
                contents=extract.as_text(result, compact=False).encode(),
                version=main.version,
                path=translate_path(entry.alias, parameters),
            )
        )
    return files


def units(grouped: Sequence[tuple[Target, Sequence[Plan]]]) -> list[Unit]:
    """Split reads into calls: one per secret; SSM names in batches of up to ten.

    An SSM batch never holds two selectors of one parameter, since GetParameters answers by
    name and the answers could not be told apart.
    """
    out: list[Unit] = []
    ssm: dict[str, list[Unit]] = {}
    for target, plans in grouped:
        if target.object_type == SECRETS_MANAGER:
            out.append([(target, plans)])
            continue
        batches = ssm.setdefault(target.region, [])
        for batch in batches:
            if len(batch) < SSM_BATCH and all(t.name != target.name for t, _ in batch):
                batch.append((target, plans))
                break
        else:
            batches.append([(target, plans)])
    for batches in ssm.values():
        out.extend(batches)
    return out
