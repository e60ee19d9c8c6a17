"""keygate lint on selectors: the same schema declaration as the daemon, offline limits shown."""

from __future__ import annotations

from tests.test_lint import line_of, lint, spc

VAULT = "vaultAddress: https://vault:8200\nroleName: app\n"


def test_selector_limits_and_files_shown(tmp_path, capsys):
    text = spc(
        """
        - objectName: conf
          secretPath: secret/data/app/
          selector: {depth: 2, limit: 20}
        """,
        params=VAULT,
    )
    code, out = lint(tmp_path, capsys, text)
    assert code == 0, out
    assert f"spc.yaml:{line_of(text, 'objectName: conf')}: info:" in out
    assert "below 'secret/data/app/' (up to 2 levels, at most 20" in out
    assert "files: conf/<name below the prefix>" in out and "0 errors, 0 warnings" in out


def test_selector_errors_are_the_daemons(tmp_path, capsys):
    text = spc(
        """
        - {objectName: a, secretPath: secret/a/, selector: {depth: 0}}
        - {objectName: b, secretPath: secret/b/, selector: {tags: {x: y}}}
        - {objectName: c, secretPath: secret/c/, secretArgs: {k: v}, selector: {}}
        - {objectName: d, objectType: secretsmanager, selector: {tags: {team: pay}}, backend: aws}
        - {objectName: e, objectType: ssmparameter, selector: {tags: {team: pay}}, backend: aws}
        - {objectName: f-, objectType: key, selector: {}, backend: azure}
        """,
        params=VAULT
        + "region: eu-west-1\nkeyvaultName: kv\ntenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\n",
    )
    code, out = lint(tmp_path, capsys, text)
    assert code == 1
    assert "depth is 0; it must be from 1 to 10" in out
    assert "unknown key 'tags' for this backend (allowed: depth, limit)" in out
    assert "'secretArgs' cannot be combined with selector" in out
    assert "selector tags are for Secrets Manager" in out
    assert "a selector lists secrets; set objectType: secret" in out
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert not [line for line in errors if "objects[3] 'd'" in line], "tags on Secrets Manager are fine"
