"""One declared schema per backend: lint, the daemon's parsing and inference all read it.

The lint cases are the defects of the old hand-kept lint table (issue 10); each runs the real
``keygate lint`` CLI on a real file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from provider import spc as spc_mod
from provider.cli import main
from provider.errors import InvalidSPC
from providers.common.readers import truthy
from providers.common.schema import Collect, FirstError
from providers.registry import Registry, builtin_schema, builtin_schemas


def lint(tmp_path: Path, capsys, parameters: str) -> tuple[int, str]:
    path = tmp_path / "spc.yaml"
    path.write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata:\n  name: app\n  namespace: shop\nspec:\n  provider: keygate\n  parameters:\n"
        + textwrap.indent(textwrap.dedent(parameters), "    ")
    )
    code = main(["lint", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


VAULT_OBJECTS = "objects: |\n  - {objectName: db, secretPath: secret/data/db, secretKey: password}\n"
GCP_SECRETS = "secrets: |\n  - {resourceName: projects/p/secrets/s/versions/latest, path: s.txt}\n"


def test_vault_parameters_the_backend_reads_are_known(tmp_path, capsys):
    code, out = lint(
        tmp_path,
        capsys,
        "vaultAddress: https://vault.example:8200\nroleName: app\nvaultAuthMethod: jwt\n"
        "vaultDynamicSecrets: per-mount\n" + VAULT_OBJECTS,
    )
    assert code == 0, out
    assert "0 errors, 0 warnings" in out


def test_gcp_identity_parameters_are_known(tmp_path, capsys):
    code, out = lint(
        tmp_path,
        capsys,
        "gcpServiceAccount: app@p.iam.gserviceaccount.com\n"
        "gcpServiceAccountDelegates: '[\"d@p.iam.gserviceaccount.com\"]'\n"
        "workloadIdentityPool: p.svc.id.goog\nidentityProvider: https://container.googleapis.com/x\n"
        "workloadIdentityAudience: identitynamespace:p.svc.id.goog:x\n" + GCP_SECRETS,
    )
    assert code == 0, out
    assert "0 errors, 0 warnings" in out
    assert "azure" not in out  # no "azure backend could not be loaded" on a GCP SPC


def test_azure_tenant_id_spelling_is_accepted(tmp_path, capsys):
    code, out = lint(
        tmp_path,
        capsys,
        "keyvaultName: kv1\ntenantID: 00000000-0000-0000-0000-000000000000\n"
        "clientID: 11111111-1111-1111-1111-111111111111\n"
        "objects: |\n  - {objectName: s1, objectType: secret}\n",
    )
    assert code == 0, out
    assert "0 errors, 0 warnings" in out


def test_aws_role_arn_is_known(tmp_path, capsys):
    code, out = lint(
        tmp_path,
        capsys,
        "region: eu-west-1\nroleArn: arn:aws:iam::123456789012:role/app\n"
        "objects: |\n  - {objectName: db, objectType: secretsmanager}\n",
    )
    assert code == 0, out
    assert "0 errors, 0 warnings" in out


def test_missing_vault_address_is_a_warning_naming_the_daemon_setting(tmp_path, capsys):
    code, out = lint(tmp_path, capsys, "roleName: app\n" + VAULT_OBJECTS)
    assert code == 0, out
    assert "warning" in out and "backends.vault.address" in out
    assert "0 errors, 1 warning" in out
    # The daemon, whose settings are known, refuses it when the setting is empty too.
    with pytest.raises(InvalidSPC, match="vaultAddress"):
        spc_mod.parse_objects({"roleName": "app", "objects": VAULT_OBJECTS[10:]}, Registry({}))


def test_bad_values_are_errors_in_lint_and_in_the_daemon(tmp_path, capsys):
    params = "vaultAddress: ftp://x\nroleName: app\nvaultDynamicSecrets: forever\n"
    code, out = lint(tmp_path, capsys, params + VAULT_OBJECTS)
    assert code == 1
    assert "'vaultDynamicSecrets' must be one of reuse, per-mount" in out
    assert "'vaultAddress' must be an http(s) URL" not in out  # rules run once values are valid
    parameters = {"vaultAddress": "ftp://x", "roleName": "app", "objects": VAULT_OBJECTS[10:]}
    with pytest.raises(InvalidSPC, match="must be an http"):
        spc_mod.parse_objects(parameters, Registry({}))


def test_deprecated_spelling_is_read_and_flagged(tmp_path, capsys):
    code, out = lint(
        tmp_path,
        capsys,
        "vaultAddress: https://v:8200\nroleName: app\nvaultKubernetesMountPath: k8s\n" + VAULT_OBJECTS,
    )
    assert code == 0 and "'vaultKubernetesMountPath' is an old spelling; write 'vaultAuthMountPath'" in out
    values = builtin_schema("vault").read_parameters(
        {"vaultAddress": "https://v:8200", "roleName": "a", "vaultKubernetesMountPath": "k8s"}, {}
    )
    assert values.text("vaultAuthMountPath") == "k8s"


def test_one_walk_stops_at_the_first_error_or_collects_all():
    schema = builtin_schema("azure")
    parameters = {"tenantId": "t", "cloudName": "Mars", "usePodIdentity": "yes"}
    collected = Collect()
    schema.read_parameters(parameters, {}, collected)
    messages = [f.message for f in collected.findings]
    assert len(messages) == 3
    assert any("'keyvaultName' is required" in m for m in messages)
    assert any("'cloudName' 'Mars' is unknown" in m for m in messages)
    assert any("'usePodIdentity' is not supported" in m for m in messages)
    with pytest.raises(InvalidSPC, match="keyvaultName"):
        schema.read_parameters(parameters, {}, FirstError())


def test_a_setting_fills_a_required_parameter():
    # (AWS region is no longer required: the node's label is the last fallback; vault's address is.)
    schema = builtin_schema("vault")
    given = {"roleName": "app"}
    values = schema.read_parameters(given, {"address": "https://vault:8200"})
    assert values.text("vaultAddress") == "https://vault:8200" and "vaultAddress" not in values.given
    with pytest.raises(InvalidSPC, match=r"backends\.vault\.address"):
        schema.read_parameters(given, {})
    sink = Collect()
    schema.read_parameters(given, None, sink)  # lint: the daemon's settings are unknown
    assert [f.severity for f in sink.findings] == ["warning"]


@pytest.mark.parametrize(
    ("item", "backend"),
    [
        ({"objectName": "a", "sealed": "x"}, "sealed"),
        ({"objectName": "a", "secretPath": "s/d/x"}, "vault"),
        ({"resourceName": "projects/p/secrets/s/versions/1"}, "gcp"),
        ({"objectName": "a", "objectType": "Secret"}, "azure"),
        ({"objectName": "a", "objectType": "ssmparameter"}, "aws"),
        ({"objectName": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"}, "aws"),
        ({"objectName": "a", "objectType": "blob"}, None),
    ],
)
def test_registry_infers_backends_from_schema_markers(item, backend):
    assert Registry({}).infer_for_object(item) == backend


def test_spc_markers_come_from_the_schemas():
    registry = Registry({})
    assert registry.infer_for_spc({"keyvaultName": "kv"}) == "azure"
    assert registry.infer_for_spc({"failoverRegion": "eu-west-2"}) == "aws"
    assert registry.infer_for_spc({"roleName": "r"}) == "vault"
    markers = {s.backend: s.spc_markers for s in builtin_schemas()}
    assert markers["vault"] == {"vaultAddress", "roleName"}


def test_one_truthy_parser():
    for text in ("true", "TRUE", " yes ", "on", "1"):
        assert truthy(text, "x") is True
    for text in ("false", "No", "off", "0", ""):
        assert truthy(text, "x") is False
    with pytest.raises(InvalidSPC, match="'flag' must be true or false"):
        truthy("maybe", "'flag'")


def test_every_spec_has_a_doc_and_unique_spellings():
    for schema in builtin_schemas():
        for specs in (schema.parameters, schema.fields):
            names = [n for s in specs for n in s.spellings]
            assert len(names) == len(set(names)), schema.backend
            assert all(s.doc for s in specs), schema.backend


def test_aws_schema_reads_pod_identity_and_refuses_it_with_role_arn():
    schema = builtin_schema("aws")
    values = schema.check_parameters({"region": "eu-west-1", "usePodIdentity": "T"}, {}, FirstError())
    assert values.flag("usePodIdentity") and values.text("preferredAddressType") == ""
    sink = Collect()
    schema.check_parameters(
        {"region": "eu-west-1", "usePodIdentity": "true", "preferredAddressType": "ipv5"}, None, sink
    )
    assert [f.message for f in sink.findings] == [
        "parameter 'preferredAddressType' must be ipv4, ipv6 or auto, not 'ipv5'"
    ]
    with pytest.raises(InvalidSPC, match="'roleArn' is not used with usePodIdentity"):
        schema.check_parameters(
            {"region": "eu-west-1", "usePodIdentity": "1", "roleArn": "arn:aws:iam::123456789012:role/x"},
            {},
            FirstError(),
        )


def test_a_rule_that_needs_a_missing_sdk_module_is_skipped_not_an_error():
    from providers.common.schema import RuleInput, Schema, Spec

    def needs_sdk(given: RuleInput) -> None:
        raise ModuleNotFoundError("No module named 'jmespath'", name="jmespath")

    schema = Schema(backend="x", summary="x", parameters=(Spec("p", "p"),), spc_rules=(needs_sdk,))
    sink = Collect()
    schema.check_parameters({"p": "v"}, None, sink)
    assert [(f.severity, f.message) for f in sink.findings] == [("skipped", "jmespath")]
    schema.check_parameters({"p": "v"}, {}, FirstError())  # the daemon: the backend's load says it
