"""``spec.secretObjects`` through the driver's contract: a real Mount, then the Secret the driver
would build from the mounted files.

The provider never sees ``secretObjects`` (the driver sends only ``spec.parameters``). The driver
writes the returned files into the pod's volume, then, for each ``secretObjects[].data[]`` entry,
reads the file whose path relative to the volume equals ``objectName``; a missing file fails the
sync. ``driver_secret_data`` below does exactly that, from the files written to a real directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from keygate_dev.driver_client import Pod, mount_request
from provider.cli import main
from provider.wire import service_pb2 as pb
from tests.test_aws import REGION, ROLE, admin, moto, moto_url, sa_token  # noqa: F401 - fixtures

SECRET_LIMIT = 1024 * 1024  # a Kubernetes Secret holds at most 1 MiB


class SyncError(Exception):
    """What the driver's secret sync reports instead of creating the Secret."""


def write_volume(target: Path, files: Sequence[pb.File]) -> None:
    """The driver's side of the contract: every returned file at its relative path."""
    for item in files:
        path = target / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.contents)


def mounted_files(target: Path) -> dict[str, Path]:
    """Files of the volume keyed by their path relative to it, skipping the '..' entries."""
    found: dict[str, Path] = {}
    for entry in sorted(target.iterdir()):
        if entry.name.startswith(".."):
            continue
        candidates = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        for path in candidates:
            found[path.relative_to(target).as_posix()] = path
    return found


def driver_secret_data(
    secret_objects: Sequence[Mapping[str, Any]], target: Path
) -> dict[str, dict[str, bytes]]:
    """Secret name -> data, built the way the driver's sync does; SyncError where it would fail."""
    files = mounted_files(target)
    secrets: dict[str, dict[str, bytes]] = {}
    for entry in secret_objects:
        data: dict[str, bytes] = {}
        for item in entry["data"]:
            name = str(item["objectName"]).strip()
            key = str(item["key"]).strip()
            if name not in files:
                raise SyncError(f"file matching objectName {name} not found in the pod")
            data[key] = files[name].read_bytes()
        if sum(len(v) for v in data.values()) > SECRET_LIMIT:
            raise SyncError(f"secret {entry['secretName']} would exceed 1 MiB")
        secrets[entry["secretName"]] = data
    return secrets


def spc_manifest(
    name: str, parameters: dict[str, str], secret_objects: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"provider": "keygate", "parameters": parameters, "secretObjects": secret_objects},
    }


def mount_and_sync(
    client: Any, manifest: dict[str, Any], pod: Pod, target: Path
) -> dict[str, dict[str, bytes]]:
    """Send the SPC's parameters as the driver does, write the files, then sync as the driver does."""
    response = client.mount(mount_request(manifest["metadata"]["name"], manifest["spec"]["parameters"], pod))
    target.mkdir()
    write_volume(target, response.files)
    return driver_secret_data(manifest["spec"]["secretObjects"], target)


def lint_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: dict[str, Any]
) -> tuple[int, str]:
    path = tmp_path / "spc.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    code = main(["lint", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def sealed_manifest(node_key: Any, secret_objects: list[dict[str, Any]]) -> dict[str, Any]:
    objects = [
        {"objectName": "db-password", "sealed": node_key.seal(b"pw-sync-1", "default", "db-password")},
        {
            "objectName": "api-key",
            "objectAlias": "keys/api",
            "sealed": node_key.seal(b"api-sync-2", "default", "api-key"),
        },
        {
            "objectName": "db-user",
            "fileName": "db.user",
            "sealed": node_key.seal(b"user-sync-3", "default", "db-user"),
        },
    ]
    return spc_manifest("app-sync", {"objects": yaml.safe_dump(objects)}, secret_objects)


def test_sealed_objects_sync_by_object_name_alias_and_file_name(start_daemon, node_key, short_tmp):
    d = start_daemon()
    secret_objects = [
        {
            "secretName": "app-db",
            "type": "Opaque",
            "data": [
                {"objectName": "db-password", "key": "password"},
                {"objectName": "db.user", "key": "username"},
            ],
        },
        {"secretName": "app-api", "type": "Opaque", "data": [{"objectName": "keys/api", "key": "token"}]},
    ]
    synced = mount_and_sync(d.client, sealed_manifest(node_key, secret_objects), Pod(), short_tmp / "vol")
    assert synced == {
        "app-db": {"password": b"pw-sync-1", "username": b"user-sync-3"},
        "app-api": {"token": b"api-sync-2"},
    }


def test_a_name_the_mount_does_not_produce_fails_the_sync_and_lint_reports_it(
    start_daemon, node_key, short_tmp, tmp_path, capsys
):
    d = start_daemon()
    secret_objects = [
        {"secretName": "app-db", "type": "Opaque", "data": [{"objectName": "db-pasword", "key": "password"}]},
        {"secretName": "app-api", "type": "Opaque", "data": [{"objectName": "api-key", "key": "token"}]},
    ]
    manifest = sealed_manifest(node_key, secret_objects)
    with pytest.raises(SyncError, match="objectName db-pasword not found"):
        mount_and_sync(d.client, manifest, Pod(), short_tmp / "vol")

    code, out = lint_manifest(tmp_path, capsys, manifest)
    assert code == 1
    assert "'db-pasword' is not a file this SPC mounts; did you mean 'db-password'?" in out
    # objectAlias decides the file: the object's name is not a file of the mount
    assert "secretObjects[1].data[0].objectName 'api-key' is not a file this SPC mounts" in out
    assert "pw-sync-1" not in out and "api-sync-2" not in out


def aws_manifest(secret_objects: list[dict[str, Any]]) -> dict[str, Any]:
    objects = [
        {
            "objectName": "prod/db",
            "objectType": "secretsmanager",
            "jmesPath": [
                {"path": "username", "objectAlias": "db-user"},
                {"path": "password", "objectAlias": "db-pass"},
            ],
        },
        {"objectName": "/prod/api-token", "objectType": "ssmparameter", "objectAlias": "api-token"},
        {"objectName": "prod/tls/key", "objectType": "secretsmanager"},
    ]
    parameters = {"region": REGION, "roleArn": ROLE, "objects": json.dumps(objects)}
    return spc_manifest("aws-sync", parameters, secret_objects)


AWS_SECRET_OBJECTS = [
    {
        "secretName": "db",
        "type": "Opaque",
        "data": [
            {"objectName": "db-user", "key": "username"},
            {"objectName": "db-pass", "key": "password"},
            {"objectName": "prod_db", "key": "all.json"},
        ],
    },
    {
        "secretName": "api",
        "type": "Opaque",
        "data": [{"objectName": "api-token", "key": "token"}, {"objectName": "prod_tls_key", "key": "tls"}],
    },
]


def seed_aws(url: str) -> str:
    document = json.dumps({"username": "sync-user", "password": "sync-pass-9"})
    sm = admin(url, "secretsmanager")
    sm.create_secret(Name="prod/db", SecretString=document)
    sm.create_secret(Name="prod/tls/key", SecretString="tls-key-7")
    admin(url, "ssm").put_parameter(Name="/prod/api-token", Value="api-tok-5", Type="SecureString")
    return document


def test_aws_objects_sync_including_jmes_path_files(start_daemon, moto, sa_token, short_tmp):  # noqa: F811
    document = seed_aws(moto)
    d = start_daemon(backends={"aws": {"endpoint_url": moto}})
    pod = Pod(tokens={"sts.amazonaws.com": sa_token})
    synced = mount_and_sync(d.client, aws_manifest(AWS_SECRET_OBJECTS), pod, short_tmp / "vol")
    assert synced == {
        "db": {"username": b"sync-user", "password": b"sync-pass-9", "all.json": document.encode()},
        "api": {"token": b"api-tok-5", "tls": b"tls-key-7"},
    }


def test_aws_object_name_is_not_a_file_after_path_translation(start_daemon, moto, sa_token, short_tmp):  # noqa: F811
    seed_aws(moto)
    d = start_daemon(backends={"aws": {"endpoint_url": moto}})
    pod = Pod(tokens={"sts.amazonaws.com": sa_token})
    secret_objects = [{"secretName": "db", "type": "Opaque", "data": [{"objectName": "prod/db", "key": "x"}]}]
    with pytest.raises(SyncError, match="objectName prod/db not found"):
        mount_and_sync(d.client, aws_manifest(secret_objects), pod, short_tmp / "vol")


def test_lint_accepts_jmes_path_files_in_secret_objects(tmp_path, capsys):
    code, out = lint_manifest(tmp_path, capsys, aws_manifest(AWS_SECRET_OBJECTS))
    assert code == 0, out
