"""Prefix mounts against the Key Vault fake (real azure-keyvault-secrets SDK over HTTPS, GET
/secrets with nextLink pages): name prefix, tags, disabled secrets skipped; real Mounts."""
# ruff: noqa: F811  (the azure fixture is imported from tests.test_azure by name)

from __future__ import annotations

from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.test_azure import CLIENT_ID, AzureEnv, azure, spc  # noqa: F401


def files(resp: Any) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def mount(d: Any, env: AzureEnv, vault: str, *objects: dict[str, Any]) -> Any:
    return d.client.mount(mount_request("app-secrets", spc(vault, list(objects)), env.pod()))


def refused(d: Any, env: AzureEnv, vault: str, *objects: dict[str, Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        mount(d, env, vault, *objects)
    return info.value.code(), info.value.details()


@pytest.fixture
def vault(azure: AzureEnv) -> str:
    name = azure.vault()  # grants every secret, so listing too
    for i in range(30):
        azure.fake.add_secret(name, f"app-{i:02d}", f"v{i}")
    azure.fake.add_secret(name, "app-tagged", "t", tags={"team": "pay", "env": "prod"})
    azure.fake.add_secret(name, "app-other", "o", tags={"team": "web"})
    azure.fake.add_secret(name, "xapp", "no")
    return name


def test_prefix_over_pages(azure: AzureEnv, start_daemon: Any, vault: str) -> None:
    d = start_daemon(backends={"azure": azure.settings()})
    resp = mount(
        d, azure, vault, {"objectName": "app-", "objectType": "secret", "objectAlias": "a", "selector": {}}
    )
    got = files(resp)
    assert len(got) == 32 and got["a/07"] == b"v7" and got["a/tagged"] == b"t" and "a/xapp" not in got
    lists = [r for r in azure.fake.vault_requests(vault) if r["path"] == "/secrets"]
    assert len([r for r in lists if r["query"].get("$skiptoken")]) == 1, "33 secrets: 25 + 8 via nextLink"


def test_tags_all_must_match(azure: AzureEnv, start_daemon: Any, vault: str) -> None:
    d = start_daemon(backends={"azure": azure.settings()})
    sel = {"objectName": "app-", "objectType": "secret", "objectAlias": "t"}
    one = mount(d, azure, vault, {**sel, "selector": {"tags": {"team": "pay"}}})
    assert files(one) == {"t/tagged": b"t"}
    none = mount(d, azure, vault, {**sel, "selector": {"tags": {"team": "pay", "env": "dev"}}})
    assert files(none) == {}


def test_disabled_skipped_and_rotation(azure: AzureEnv, start_daemon: Any) -> None:
    fake = azure.fake
    name = azure.vault()
    fake.add_secret(name, "rot-a", "a")
    fake.add_secret(name, "rot-b", "b")
    d = start_daemon(backends={"azure": azure.settings()})
    sel = {"objectName": "rot-", "objectType": "secret", "selector": {}}
    assert files(mount(d, azure, name, sel)) == {"rot-/a": b"a", "rot-/b": b"b"}
    fake.objects[(name, "secrets", "rot-a")][-1].enabled = False
    fake.add_secret(name, "rot-c", "c")
    assert files(mount(d, azure, name, sel)) == {"rot-/b": b"b", "rot-/c": b"c"}
    del fake.objects[(name, "secrets", "rot-b")]
    resp = mount(d, azure, name, sel)
    assert files(resp) == {"rot-/c": b"c"} and len(resp.object_version) == 1


def test_list_denied(azure: AzureEnv, start_daemon: Any) -> None:
    name = f"kvnolist{id(azure) % 100000}"
    azure.fake.grant(CLIENT_ID, name, "secrets", "one")
    azure.fake.add_secret(name, "one", "1")
    d = start_daemon(backends={"azure": azure.settings()})
    code, details = refused(d, azure, name, {"objectName": "o", "objectType": "secret", "selector": {}})
    assert code == grpc.StatusCode.PERMISSION_DENIED and "secrets listing" in details


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"objectType": "key"}, "a selector lists secrets"),
        ({"objectVersion": "abc123"}, "'objectVersion' cannot be combined"),
        ({"objectVersionHistory": 2}, "'objectVersionHistory' cannot be combined"),
        ({"selector": {"labels": {"a": "b"}}}, "unknown key 'labels'"),
        ({"selector": {"limit": 5}}, "more than 5 objects"),
    ],
)
def test_bad_selectors(
    azure: AzureEnv, start_daemon: Any, vault: str, extra: dict[str, Any], fragment: str
) -> None:
    d = start_daemon(backends={"azure": azure.settings()})
    obj = {"objectName": "app-", "objectType": "secret", "selector": {}, **extra}
    _, details = refused(d, azure, vault, obj)
    assert fragment in details
