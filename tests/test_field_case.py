"""Object field names matched the way each backend's peer provider matches them.

The AWS provider decodes ``objects`` through Go's encoding/json (case-insensitive, with Go's own
folding); the Vault, Azure and GCP providers decode with gopkg.in/yaml.v3 (exact names), and
sealed is keygate's own (exact). Lint and the daemon share the walk, so both are checked here:
lint through the real CLI, the daemon through real Mounts against moto.
"""
# ruff: noqa: F811  (the fixtures are imported from tests.test_aws by name)

from __future__ import annotations

import textwrap
from pathlib import Path

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider import spc as spc_mod
from provider.cli import main
from provider.errors import InvalidSPC
from providers.common.schema import go_json_fold
from providers.registry import Registry, builtin_schema, builtin_schemas
from tests.test_aws import (  # noqa: F401
    REGION,
    ROLE,
    admin,
    aws_daemon,
    files_of,
    moto,
    moto_url,
    pod,
    sa_token,
)

PEER_SPC_OBJECTS = """\
- objectName: "jsonSsm"
  objectType: "ssmparameter"
  jmesPath:
      - Path: "username"
        ObjectAlias: "ssmUsername"
      - Path: "password"
        ObjectAlias: "ssmPassword"
- ObjectName: "secretsManagerJson"
  OBJECTTYPE: "secretsmanager"
  ObjectAlias: "whole.json"
  jmespath:
      - path: "username"
        objectalias: "secretsManagerUsername"
"""


def aws_params(objects: str) -> dict[str, str]:
    return {"region": REGION, "roleArn": ROLE, "objects": objects}


def lint(tmp_path: Path, capsys, objects: str, **extra: str) -> tuple[int, str]:
    params = {"region": REGION, **extra}
    lines = "".join(f"{k}: {v}\n" for k, v in params.items())
    path = tmp_path / "spc.yaml"
    path.write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata:\n  name: app\n  namespace: shop\nspec:\n  provider: keygate\n  parameters:\n"
        + textwrap.indent(lines + "objects: |\n" + textwrap.indent(objects, "  "), "    ")
    )
    code = main(["lint", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_go_fold_accepts_exactly_ascii_case_kelvin_and_long_s():
    assert go_json_fold("objectAlias") == go_json_fold("OBJECTALIAS") == go_json_fold("objectalias")
    assert go_json_fold("\u212aey") == go_json_fold("key") == go_json_fold("KEY")
    assert go_json_fold("\u017fecret") == go_json_fold("Secret")
    # Go's SimpleFold orbits of I/i do not hold the dotted or dotless i; no other look-alikes.
    assert go_json_fold("\u0130d") != go_json_fold("id") and go_json_fold("\u0131d") != go_json_fold("id")
    assert go_json_fold("p\u0430th") != go_json_fold("path")
    assert go_json_fold("object_alias") != go_json_fold("objectAlias")
    assert go_json_fold("path ") != go_json_fold("path")


def test_which_backends_fold():
    assert {s.backend: s.field_case for s in builtin_schemas()} == {
        "sealed": "exact",
        "vault": "exact",
        "azure": "exact",
        "gcp": "exact",
        "aws": "go-json",
    }
    folded = [go_json_fold(f.name) for f in builtin_schema("aws").fields]
    assert len(folded) == len(set(folded))


def test_peer_spc_with_capitalised_jmes_path_fields_mounts(start_daemon, moto, pod):
    admin(moto, "ssm").put_parameter(
        Name="jsonSsm", Value='{"username": "ssm-user", "password": "ssm-pass"}', Type="String"
    )
    admin(moto, "secretsmanager").create_secret(
        Name="secretsManagerJson", SecretString='{"username": "sm-user", "password": "sm-pass"}'
    )
    d = aws_daemon(start_daemon, moto)
    resp = d.client.mount(mount_request("aws-spc", aws_params(PEER_SPC_OBJECTS), pod))
    assert files_of(resp) == {
        "jsonSsm": b'{"username": "ssm-user", "password": "ssm-pass"}',
        "ssmUsername": b"ssm-user",
        "ssmPassword": b"ssm-pass",
        "whole.json": b'{"username": "sm-user", "password": "sm-pass"}',
        "secretsManagerUsername": b"sm-user",
    }


def test_long_s_reaches_the_same_field_as_in_go(start_daemon, moto, pod):
    admin(moto, "secretsmanager").create_secret(Name="k", SecretString='{"a": "b"}')
    d = aws_daemon(start_daemon, moto)
    objects = "- {objectName: k, objectType: secretsmanager, jme\u017fPath: [{path: a, objectAlias: x}]}\n"
    assert files_of(d.client.mount(mount_request("aws-spc", aws_params(objects), pod))) == {
        "k": b'{"a": "b"}',
        "x": b"b",
    }


def test_two_spellings_of_one_field_are_refused_naming_both(start_daemon, moto, pod, tmp_path, capsys):
    objects = "- objectName: k\n  objectType: secretsmanager\n  jmesPath:\n    - {path: a, Path: b, objectAlias: x}\n"
    code, out = lint(tmp_path, capsys, objects)
    assert code != 0 and "'path' and 'Path' both set the field 'path'" in out
    with pytest.raises(InvalidSPC, match="'objectType' and 'ObjectType'"):
        spc_mod.parse_objects(
            aws_params("- {objectName: k, objectType: secretsmanager, ObjectType: ssmparameter}"),
            Registry({"aws": {"region": REGION}}),
        )
    d = aws_daemon(start_daemon, moto)
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(mount_request("aws-spc", aws_params(objects), pod))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'path' and 'Path'" in (info.value.details() or "")


def test_lint_accepts_the_peer_spellings_and_still_flags_real_typos(tmp_path, capsys):
    code, out = lint(tmp_path, capsys, PEER_SPC_OBJECTS)
    assert code == 0, out
    assert "0 errors, 0 warnings" in out
    code, out = lint(tmp_path, capsys, "- {objectName: k, objectType: secretsmanager, object_alias: x}\n")
    assert "object_alias" in out


def test_exact_peers_keep_exact_names(tmp_path, capsys):
    """Vault, Azure and GCP decode with gopkg.in/yaml.v3, sealed is keygate's: names are exact."""
    item = {"ObjectName": "x", "SecretPath": "a", "ObjectType": "secret", "ResourceName": "r"}
    for backend in ("sealed", "vault", "azure", "gcp"):
        assert builtin_schema(backend).canonical_fields(item, "o") == item
    with pytest.raises(InvalidSPC, match="'secretPath' is required"):
        spc_mod.parse_objects(
            {
                "vaultAddress": "https://v:8200",
                "roleName": "r",
                "objects": "- {objectName: d, SecretPath: a}",
            },
            Registry({}),
        )
    _, out = lint(
        tmp_path, capsys, "- {objectName: d, secretPath: a, SecretKey: k}\n", backend="vault", roleName="r"
    )
    assert "SecretKey" in out


def test_lint_counts_jmes_path_files_for_secret_objects(tmp_path, capsys):
    """The peer's BasicTestMountSPC syncs jmesPath files (ssmUsername...) into Secrets."""
    path = tmp_path / "spc.yaml"
    path.write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata:\n  name: app\n  namespace: shop\nspec:\n  provider: keygate\n"
        "  secretObjects:\n  - secretName: s\n    type: Opaque\n    data:\n"
        "    - {objectName: ssmUsername, key: username}\n    - {objectName: secretsManagerUsername, key: u}\n"
        "    - {objectName: nope, key: n}\n"
        "  parameters:\n    region: us-east-1\n    objects: |\n" + textwrap.indent(PEER_SPC_OBJECTS, "      ")
    )
    main(["lint", str(path)])
    out = capsys.readouterr().out
    assert "'nope' is not a file this SPC mounts" in out
    assert "ssmUsername' is not" not in out and "secretsManagerUsername' is not" not in out
    assert "1 error" in out
