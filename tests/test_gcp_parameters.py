"""GCP Parameter Manager versions, end to end: real Mounts over the Unix socket, the real
google-cloud-parametermanager client against local gRPC Parameter Manager servers (global and
regional), with the pod's workload identity exchanged at the local STS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from provider.cli import main
from providers.gcp.settings import GCPSettings
from tests.gcp_fake import FakeParameterManager
from tests.test_gcp import GCP, POD_PRINCIPAL, SECRET_VALUE, files_of, mount_error, secrets_param
from tests.test_gcp import gcp as gcp  # the fixture

GLOBAL = "projects/proj/locations/global/parameters/app-config"
REGIONAL = "projects/proj/locations/europe-west1/parameters/eu-config"
CONFIG = (
    b"db_host: db.internal\n"
    b'db_password: __REF__("//secretmanager.googleapis.com/projects/proj/secrets/db/versions/latest")\n'
)


@dataclass
class Params:
    gcp: GCP
    pm: FakeParameterManager
    regional: FakeParameterManager

    def settings(self) -> dict[str, Any]:
        return self.gcp.settings()


@pytest.fixture
def params(gcp: GCP) -> Params:
    """The ``gcp`` fixture's Parameter Manager servers (global and regional), loaded."""
    pm, regional = gcp.pm, gcp.pm_regional
    pm.add(GLOBAL, "v1", b"mode: old\n", grant=(POD_PRINCIPAL,))
    pm.add(GLOBAL, "v2", CONFIG, grant=(POD_PRINCIPAL,))
    pm.add(GLOBAL, "v3", b"mode: pulled\n", grant=(POD_PRINCIPAL,), disabled=True)
    regional.add_version(f"{REGIONAL}/versions/prod", b"region: europe-west1\n", grant=(POD_PRINCIPAL,))
    pm.add("projects/proj/locations/global/parameters/locked", "v1", b"x", grant=())
    return Params(gcp, pm, regional)


def _one(resource: str, file_name: str = "f") -> dict[str, str]:
    return secrets_param({"resourceName": resource, "fileName": file_name})


def test_global_and_regional_versions_are_rendered(start_daemon: Any, params: Params) -> None:
    d = start_daemon(backends={"gcp": params.settings()})
    spc = secrets_param(
        {"resourceName": f"{GLOBAL}/versions/v2", "fileName": "app.yaml"},
        {"resourceName": f"{GLOBAL}/versions/v1", "path": "old/app.yaml", "mode": 0o400},
        {"resourceName": f"{REGIONAL}/versions/prod", "fileName": "eu.yaml"},
        {"resourceName": "projects/proj/secrets/db/versions/latest", "fileName": "db"},
    )
    resp = d.client.mount(mount_request("spc", spc, params.gcp.pod()))
    out = files_of(resp)
    assert out["app.yaml"][1] == b"db_host: db.internal\ndb_password: " + SECRET_VALUE + b"\n"
    assert b"__REF__" not in out["app.yaml"][1], "the rendered payload is written, not the raw one"
    assert out["old/app.yaml"] == (0o400, b"mode: old\n")
    assert out["eu.yaml"] == (0o644, b"region: europe-west1\n")
    assert [(c.name, c.server) for c in params.regional.calls] == [(f"{REGIONAL}/versions/prod", "regional")]
    assert {c.principal for c in params.pm.calls} == {POD_PRINCIPAL}
    assert len(params.gcp.auth.log.sts) == 1, "one token exchange for both services"
    assert [v.id for v in resp.object_version][:3] == [
        f"{GLOBAL}/versions/v2",
        f"{GLOBAL}/versions/v1",
        f"{REGIONAL}/versions/prod",
    ]


def test_extract_yaml_key_from_a_rendered_parameter(start_daemon: Any, params: Params) -> None:
    d = start_daemon(backends={"gcp": params.settings()})
    spc = secrets_param(
        {"resourceName": f"{GLOBAL}/versions/v2", "fileName": "pw", "extractYAMLKey": "db_password"}
    )
    resp = d.client.mount(mount_request("spc", spc, params.gcp.pod()))
    assert files_of(resp) == {"pw": (0o644, SECRET_VALUE)}


def test_not_found_disabled_and_denied(start_daemon: Any, params: Params) -> None:
    d = start_daemon(backends={"gcp": params.settings()})
    pod = params.gcp.pod()
    err = mount_error(d, mount_request("spc", _one(f"{GLOBAL}/versions/v9"), pod))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details().startswith("[SecretNotFound]") and "parameter version" in err.details()
    missing = "projects/proj/locations/global/parameters/nope/versions/v1"
    err = mount_error(d, mount_request("spc", _one(missing), pod))
    assert err.code() == grpc.StatusCode.NOT_FOUND and missing in err.details()
    err = mount_error(d, mount_request("spc", _one(f"{GLOBAL}/versions/v3"), pod))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "is disabled" in err.details()
    err = mount_error(
        d, mount_request("spc", _one("projects/proj/locations/global/parameters/locked/versions/v1"), pod)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "roles/parametermanager.parameterAccessor" in err.details()
    assert b"mode: pulled" not in d.log_text().encode()


def test_bad_resource_forms_are_invalid(start_daemon: Any, params: Params) -> None:
    d = start_daemon(backends={"gcp": params.settings()})
    for bad in (
        "projects/proj/parameters/app-config/versions/v1",
        "projects/proj/locations/Europe!/parameters/p/versions/v1",
        "projects/proj/locations/global/parameters/p/versions/v1/extra",
    ):
        err = mount_error(d, mount_request("spc", _one(bad), params.gcp.pod()))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "parameters/<parameter>/versions/<version>" in err.details() or "location" in err.details()
    assert params.pm.calls == []


def test_settings_default_endpoints() -> None:
    s = GCPSettings.from_mapping({})
    assert s.endpoint_for(None, parameters=True) == "parametermanager.googleapis.com:443"
    assert s.endpoint_for("us-east4", parameters=True) == "parametermanager.us-east4.rep.googleapis.com:443"
    # The plaintext test switch never reaches past loopback: Parameter Manager keeps TLS there.
    t = GCPSettings.from_mapping(
        {"endpoint": "127.0.0.1:1", "regional_endpoint": "127.0.0.1:2", "insecure_plaintext_endpoint": True}
    )
    assert not t.plaintext_for(t.endpoint_for(None, parameters=True))
    assert t.plaintext_for("127.0.0.1:5") and not s.plaintext_for("127.0.0.1:5")


def test_lint_knows_the_parameter_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def lint(resource: str) -> tuple[int, str]:
        path = tmp_path / "spc.yaml"
        path.write_text(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
            "metadata: {name: pm}\nspec:\n  provider: keygate\n  parameters:\n    secrets: |\n"
            f'      - resourceName: "{resource}"\n        fileName: cfg\n'
        )
        code = main(["lint", str(path)])
        out = capsys.readouterr()
        return code, out.out + out.err

    for good in (f"{GLOBAL}/versions/v1", f"{REGIONAL}/versions/prod"):
        code, out = lint(good)
        assert code == 0 and "0 errors, 0 warnings" in out and "(1 gcp)" in out, out
    code, out = lint("projects/proj/parameters/app-config/versions/v1")
    assert code != 0 and "parameters/<parameter>/versions/<version>" in out, out
