"""``keygate lint --list`` against real servers: each selector expanded with a pod's token by the
daemon's own backends (OpenBao over TLS with JWT login, moto for AWS), never reading a value."""
# ruff: noqa: F811  (the session fixtures are imported by name)

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keygate_dev.driver_client import Pod
from provider.cli import main
from tests.test_aws import REGION, ROLE, moto, moto_url, sa_token  # noqa: F401
from tests.test_prefix_mounts_aws import seed_secrets
from tests.test_prefix_mounts_vault import tree  # noqa: F401
from tests.vault_fixtures import AUDIENCE, Vault, vault  # noqa: F401

VALUES = (b"pa", b"pb", b"pc", b"pd", b"db-pass", b"api-key", b"nested")


def spc_file(tmp_path: Path, parameters: dict[str, str], namespace: str | None = None) -> Path:
    doc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app-secrets", **({"namespace": namespace} if namespace else {})},
        "spec": {"provider": "keygate", "parameters": parameters},
    }
    path = tmp_path / "spc.yaml"
    path.write_text(json.dumps(doc))
    return path


def vault_spc(tmp_path: Path, v: Vault, objects: str, **extra: str) -> Path:
    return spc_file(tmp_path, v.params(textwrap.dedent(objects), roleName="lister", **extra))


def token_file(tmp_path: Path, token: str, name: str = "token.jwt") -> Path:
    path = tmp_path / name
    path.write_text(token + "\n")
    return path


def lint(capsys, *argv: str | Path) -> tuple[int, str]:
    code = main(["lint", *map(str, argv)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert not any(v.decode() in text.split() for v in VALUES), "a secret value reached lint's output"
    assert "Traceback" not in text
    return code, text


KV2_DEPTH2 = "- {objectName: t, secretPath: secret/data/tree, secretKey: password, selector: {depth: 2}}"


def test_vault_kv2_selector_listed_with_the_pods_token(tmp_path, capsys, tree: Vault):
    spc = vault_spc(tmp_path, tree, KV2_DEPTH2)
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    code, out = lint(capsys, spc, "--list", "--token", token)
    assert code == 0, out
    assert "objects[0] 't': selector lists 3 objects as default/app" in out
    assert "no --policy: the release policy was not asked" in out
    listed = [line.strip() for line in out.splitlines() if " -> " in line]
    assert listed == [
        "secret/data/tree/a -> t/a",
        "secret/data/tree/b -> t/b",
        "secret/data/tree/sub/c -> t/sub/c",
    ]
    assert "0 errors, 0 warnings" in out


def test_limit_and_depth_are_the_daemons(tmp_path, capsys, tree: Vault):
    one_level = vault_spc(
        tmp_path, tree, "- {objectName: t, secretPath: secret/tree, secretKey: password, selector: {}}"
    )
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    code, out = lint(capsys, one_level, "--list", "--token", f"{AUDIENCE}={token}")
    assert code == 0, out
    assert [line.split()[-1] for line in out.splitlines() if " -> " in line] == ["t/a", "t/b"]
    capped = vault_spc(
        tmp_path,
        tree,
        "- {objectName: t, secretPath: secret/tree, secretKey: password, selector: {depth: 3, limit: 2}}",
    )
    code, out = lint(capsys, capped, "--list", "--token", token)
    assert code == 1
    assert "listing failed:" in out and "limit" in out, out


def test_a_role_without_list_permission_is_the_daemons_error(tmp_path, capsys, tree: Vault):
    spc = spc_file(tmp_path, tree.params(KV2_DEPTH2))  # role 'app' may read, not list
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    code, out = lint(capsys, spc, "--list", "--token", token)
    assert code == 1
    line = next(line for line in out.splitlines() if ": error: " in line)
    assert "listing failed:" in line and "permission" in line.lower(), out


def test_a_token_for_another_audience_fails_the_login(tmp_path, capsys, tree: Vault):
    spc = vault_spc(tmp_path, tree, KV2_DEPTH2)
    token = token_file(tmp_path, tree.issuer.mint(Pod(), audience="other"))
    code, out = lint(capsys, spc, "--list", "--token", token)
    assert code == 1 and "listing failed:" in out, out


def test_policy_refusals_of_listed_objects_are_errors(tmp_path, capsys, tree: Vault):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules:\n"
        "  - name: app\n"
        "    namespaces: [default]\n"
        "    objects: ['secret/data/tree', 'secret/data/tree/?']\n"
    )
    spc = vault_spc(tmp_path, tree, KV2_DEPTH2)
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    code, out = lint(capsys, spc, "--list", "--token", token, "--policy", policy)
    assert code == 1, out
    assert "secret/data/tree/sub/c -> t/sub/c (refused by the release policy)" in out
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert (
        len(errors) == 1 and "'secret/data/tree/sub/c': release policy rule 'app' does not allow" in errors[0]
    )
    # A policy refusing the selector's own prefix refuses before any listing, as the daemon does.
    policy.write_text("rules:\n  - name: app\n    namespaces: [default]\n    objects: ['other/*']\n")
    code, out = lint(capsys, spc, "--list", "--token", token, "--policy", policy)
    assert (
        code == 1 and "not listed: release policy rule 'app' does not allow object 'secret/data/tree'" in out
    )


def test_aws_prefix_and_tags_through_the_daemons_config(tmp_path, capsys, moto: str, sa_token: str):
    seed_secrets(moto)
    config = tmp_path / "keygate.yaml"
    config.write_text(f"backends:\n  aws:\n    endpoint_url: {moto}\n")
    sel = {
        "objectName": "app/",
        "objectType": "secretsmanager",
        "selector": {"tags": {"team": "pay"}, "depth": 3},
    }
    spc = spc_file(
        tmp_path, {"region": REGION, "roleArn": ROLE, "objects": json.dumps([sel])}, namespace="default"
    )
    token = token_file(tmp_path, sa_token)
    code, out = lint(capsys, spc, "--list", "--token", token, "--config", config)
    assert code == 0, out
    listed = sorted(line.strip() for line in out.splitlines() if " -> " in line)
    assert listed == ["app/db -> app/db", "app/nested/x -> app/nested/x"]
    assert "selector lists 2 objects as default/app" in out


def test_the_tokens_identity_must_agree_with_the_spc_and_flags(tmp_path, capsys, tree: Vault):
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    elsewhere = spc_file(tmp_path, tree.params(KV2_DEPTH2, roleName="lister"), namespace="shop")
    code, out = lint(capsys, elsewhere, "--list", "--token", token)
    assert code == 1
    assert (
        "cannot list selectors:" in out
        and "token for namespace 'default', not 'shop' (the SecretProviderClass's namespace)" in out
    )
    spc = vault_spc(tmp_path, tree, KV2_DEPTH2)
    code, out = lint(capsys, spc, "--list", "--token", token, "--service-account", "other")
    assert code == 1 and "token for service account 'app', not 'other' (--service-account)" in out


def test_no_listing_when_the_spc_has_errors(tmp_path, capsys, tree: Vault):
    bad = vault_spc(
        tmp_path, tree, KV2_DEPTH2 + "\n- {objectName: x, secretPath: secret/x, secretKey: k, mode: 0x}"
    )
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    code, out = lint(capsys, bad, "--list", "--token", token)
    assert code == 1 and "selector lists" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--list"], "--list needs a service-account token"),
        (["--token", "t.jwt"], "--token only apply with --list"),
        (["--config", "c.yaml"], "--config only apply with --list"),
        (["--list", "--token", "missing.jwt"], "cannot read missing.jwt"),
        (["--list", "--token", "garbage.jwt"], "does not hold a JWT"),
        (["--list", "--token", "noaud.jwt"], "has no 'aud' claim; pass it as AUDIENCE="),
    ],
)
def test_usage_errors(tmp_path, capsys, monkeypatch, argv, message):
    import jwt as pyjwt

    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.jwt").write_text("not a token")
    (tmp_path / "noaud.jwt").write_text(pyjwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256"))
    spc = spc_file(tmp_path, {"vaultAddress": "https://vault:8200", "roleName": "app", "objects": KV2_DEPTH2})
    code = main(["lint", str(spc), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_the_console_script(tmp_path, tree: Vault):
    spc = vault_spc(tmp_path, tree, KV2_DEPTH2)
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    script = Path(sys.executable).with_name("keygate")
    run = subprocess.run(
        [script, "lint", spc, "--list", "--token", token], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "selector lists 3 objects as default/app" in run.stdout
    assert not any(v.decode() in run.stdout.split() for v in VALUES)


def test_a_broken_policy_is_reported_once_and_nothing_is_listed_without_it(tmp_path, capsys, tree: Vault):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: app}]\n")
    spc = vault_spc(tmp_path, tree, KV2_DEPTH2)
    token = token_file(tmp_path, tree.issuer.mint(Pod()))
    code, out = lint(capsys, spc, "--list", "--token", token, "--policy", policy)
    assert code == 1, out
    assert sum("policy.yaml: error:" in line for line in out.splitlines()) == 1, out
    assert "selectors not listed: the release policy has errors" in out and " -> " not in out
