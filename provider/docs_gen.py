"""Generate the parameter tables of ``docs/backends/<name>.md`` from the backends' schemas.

``python -m provider.docs_gen`` rewrites the text between the markers of each page (creating the
page when missing); ``--check`` only reports stale pages and exits 1, for tests and CI. The
tables are the only place parameters are documented, so they cannot drift from what the daemon
reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from providers.common.schema import Schema, Spec
from providers.registry import builtin_schemas

BEGIN = "<!-- BEGIN GENERATED PARAMETERS (python -m provider.docs_gen) -->"
END = "<!-- END GENERATED PARAMETERS -->"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "backends"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _kind(spec: Spec) -> str:
    if spec.choices:
        return " | ".join(f"`{c}`" for c in spec.choices)
    return {"bool": "true/false", "int": f"{spec.bounds[0]}-{spec.bounds[1]}"}.get(spec.kind, spec.kind)


def _row(spec: Spec, backend: str) -> str:
    spellings = [f"`{a}`" for a in spec.aliases] + [f"`{d}` (deprecated)" for d in spec.deprecated]
    notes = []
    if spec.required:
        notes.append("**required**")
    if spec.setting:
        notes.append(f"daemon setting `backends.{backend}.{spec.setting}`")
    if spec.marker:
        notes.append("selects this backend")
    if spec.refused:
        notes.append(f"refused when set: {spec.refused}")
    default = f"`{spec.default}`" if spec.default not in (None, "") else ""
    cells = [f"`{spec.name}`", _kind(spec), default, ", ".join(spellings), "; ".join(notes), spec.doc]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(title: str, specs: Sequence[Spec], backend: str) -> list[str]:
    if not specs:
        return []
    return [
        f"**{title}**",
        "",
        "| Name | Values | Default | Also accepted | Notes | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
        *(_row(spec, backend) for spec in specs),
        "",
    ]


def render(schema: Schema) -> str:
    """The generated block of one backend's page, markers included."""
    markers = [
        f"`{m.field}`" + (f" = {'/'.join(m.values)}" if m.values else "") for m in schema.object_markers
    ]
    lines = [
        BEGIN,
        "",
        *_table("SPC parameters (`spec.parameters`)", schema.parameters, schema.backend),
        *_table("Object fields (entries of `objects`)", schema.fields, schema.backend),
        "Every object also takes the common fields `objectName`, `objectAlias` (or `fileName` / "
        "`path`), `filePermission` (or `mode`) and `backend`.",
        "",
    ]
    if markers:
        lines += [
            f"An object without `backend:` is served by {schema.backend} when it has {', '.join(markers)}.",
            "",
        ]
    return "\n".join([*lines, END])


def _page(schema: Schema) -> str:
    return f"# The {schema.backend} backend\n\n{schema.summary}\n\n{render(schema)}\n"


def updated(text: str, schema: Schema) -> str:
    """``text`` with its generated block replaced (or the whole page when it has none)."""
    if BEGIN not in text or END not in text:
        return _page(schema) if not text.strip() else f"{text.rstrip()}\n\n{render(schema)}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + render(schema) + tail


def run(check: bool, docs: Path = DOCS) -> list[Path]:
    """Pages that were (or, with ``check``, would be) rewritten."""
    stale: list[Path] = []
    for schema in builtin_schemas():
        path = docs / f"{schema.backend}.md"
        old = path.read_text() if path.exists() else ""
        new = updated(old, schema)
        if new != old:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(new)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provider.docs_gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale; change nothing")
    args = parser.parse_args(argv)
    stale = run(args.check)
    for path in stale:
        print(f"{'stale' if args.check else 'updated'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
