"""The parameter tables in docs/backends/*.md are generated from the schemas and kept current."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from provider import docs_gen
from providers.registry import builtin_schemas

ROOT = Path(__file__).resolve().parent.parent


def test_committed_tables_are_current():
    stale = docs_gen.run(check=True)
    assert not stale, f"regenerate with: python -m provider.docs_gen ({', '.join(map(str, stale))})"


def test_every_parameter_and_field_is_in_its_page():
    for schema in builtin_schemas():
        text = (ROOT / "docs" / "backends" / f"{schema.backend}.md").read_text()
        for spec in (*schema.parameters, *schema.fields):
            assert f"| `{spec.name}` |" in text, (schema.backend, spec.name)


def test_check_fails_on_a_stale_table_and_regeneration_keeps_the_prose(tmp_path):
    docs = tmp_path / "backends"
    shutil.copytree(ROOT / "docs" / "backends", docs)
    page = docs / "vault.md"
    page.write_text(page.read_text().replace("| `roleName` |", "| `roleNmae` |"))
    assert docs_gen.run(check=True, docs=docs) == [page]
    assert docs_gen.run(check=False, docs=docs) == [page]
    assert docs_gen.run(check=True, docs=docs) == []
    assert page.read_text() == (ROOT / "docs" / "backends" / "vault.md").read_text()


def test_the_command_reports_stale_pages():
    out = subprocess.run(
        [sys.executable, "-m", "provider.docs_gen", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
