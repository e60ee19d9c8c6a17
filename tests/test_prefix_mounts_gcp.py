"""Prefix mounts against the Secret Manager fake (real SDK, real gRPC ListSecrets with filters and
page tokens): global and regional, prefix and labels, rotation; real Mounts over the socket."""
# ruff: noqa: F811  (the gcp fixture is imported from tests.test_gcp by name)

from __future__ import annotations

import json

import grpc
import pytest

from keygate_dev.driver_client import mount_request
from tests.test_gcp import GCP, POD_PRINCIPAL, gcp  # noqa: F401


def params(*items: dict) -> dict[str, str]:
    return {"secrets": json.dumps(list(items))}


def files(resp) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def mount(d, g: GCP, *items: dict):
    return d.client.mount(mount_request("app-secrets", params(*items), g.pod()))


def refused(d, g: GCP, *items: dict) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        mount(d, g, *items)
    return info.value.code(), info.value.details()


@pytest.fixture
def listed(gcp: GCP) -> GCP:
    for i in range(30):
        gcp.sm.add(f"projects/proj/secrets/app-{i:02d}", f"v{i}".encode(), grant=(POD_PRINCIPAL,))
    gcp.sm.add("projects/proj/secrets/xapp-no", b"no", grant=(POD_PRINCIPAL,))
    gcp.sm.set_labels("projects/proj/secrets/app-01", env="prod", team="pay")
    gcp.sm.set_labels("projects/proj/secrets/app-02", env="prod")
    gcp.sm.set_labels("projects/proj/secrets/xapp-no", env="prod", team="pay")
    gcp.sm.allow_list("projects/proj", POD_PRINCIPAL)
    gcp.regional.add("projects/proj/locations/europe-west1/secrets/eu-a", b"ea", grant=(POD_PRINCIPAL,))
    gcp.regional.add("projects/proj/locations/europe-west1/secrets/eu-b", b"eb", grant=(POD_PRINCIPAL,))
    gcp.regional.allow_list("projects/proj/locations/europe-west1", POD_PRINCIPAL)
    return gcp


def test_global_prefix_paginated(start_daemon, listed: GCP):
    d = start_daemon(backends={"gcp": listed.settings()})
    resp = mount(d, listed, {"resourceName": "projects/proj/secrets/app-", "fileName": "app", "selector": {}})
    # "name:app-" also matches xapp-no on the service; the exact prefix check drops it.
    assert files(resp) == {f"app/{i:02d}": f"v{i}".encode() for i in range(30)}
    assert {v.id for v in resp.object_version} == {
        f"projects/proj/secrets/app-{i:02d}/versions/latest" for i in range(30)
    }
    lists = [c for c in listed.sm.calls if c.name.startswith("list:")]
    assert len(lists) == 1 and all(c.principal == POD_PRINCIPAL for c in lists)


def test_page_tokens_followed(start_daemon, listed: GCP, monkeypatch):
    from providers.gcp import listing

    monkeypatch.setattr(listing, "PAGE_SIZE", 7)
    d = start_daemon(backends={"gcp": listed.settings()})
    resp = mount(d, listed, {"resourceName": "projects/proj/secrets/app-", "fileName": "app", "selector": {}})
    assert len(resp.files) == 30
    assert len([c for c in listed.sm.calls if c.name.startswith("list:")]) == 5


def test_labels_all_must_match(start_daemon, listed: GCP):
    d = start_daemon(backends={"gcp": listed.settings()})
    sel = {"resourceName": "projects/proj/secrets/app-", "fileName": "p"}
    prod = mount(d, listed, {**sel, "selector": {"labels": {"env": "prod"}}})
    assert files(prod) == {"p/01": b"v1", "p/02": b"v2"}
    both = mount(d, listed, {**sel, "selector": {"labels": {"env": "prod", "team": "pay"}}})
    assert files(both) == {"p/01": b"v1"}
    call = [c.name for c in listed.sm.calls if c.name.startswith("list:")][-1]
    assert "name:app- AND labels.env=prod AND labels.team=pay" in call


def test_regional(start_daemon, listed: GCP):
    d = start_daemon(backends={"gcp": listed.settings()})
    item = {"resourceName": "projects/proj/locations/europe-west1/secrets/eu-", "path": "eu", "selector": {}}
    assert files(mount(d, listed, item)) == {"eu/a": b"ea", "eu/b": b"eb"}
    assert not [c for c in listed.sm.calls if c.name.startswith("list:")], "regional lists on its endpoint"


def test_rotation_adds_and_removes(start_daemon, listed: GCP):
    d = start_daemon(backends={"gcp": listed.settings()})
    item = {"resourceName": "projects/proj/locations/europe-west1/secrets/eu-", "path": "eu", "selector": {}}
    listed.regional.add("projects/proj/locations/europe-west1/secrets/eu-c", b"ec", grant=(POD_PRINCIPAL,))
    assert set(files(mount(d, listed, item))) == {"eu/a", "eu/b", "eu/c"}
    listed.regional.delete("projects/proj/locations/europe-west1/secrets/eu-a")
    assert set(files(mount(d, listed, item))) == {"eu/b", "eu/c"}


def test_list_denied_and_cap(start_daemon, listed: GCP):
    d = start_daemon(backends={"gcp": listed.settings()})
    code, details = refused(
        d, listed, {"resourceName": "projects/other/secrets/", "fileName": "o", "selector": {}}
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "secretmanager.secrets.list" in details
    code, details = refused(
        d, listed, {"resourceName": "projects/proj/secrets/app-", "fileName": "a", "selector": {"limit": 29}}
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "more than 29 objects" in details


@pytest.mark.parametrize(
    "item, fragment",
    [
        (
            {"resourceName": "projects/proj/secrets/app-/versions/1", "fileName": "a"},
            "a selector's resourceName is",
        ),
        (
            {
                "resourceName": "projects/proj/secrets/app-",
                "fileName": "a",
                "selector": {"labels": {"Env": "x"}},
            },
            "GCP label keys",
        ),
        (
            {
                "resourceName": "projects/proj/secrets/app-",
                "fileName": "a",
                "selector": {"labels": {"e": "x OR name:y"}},
            },
            "GCP label keys",
        ),
        (
            {"resourceName": "projects/proj/secrets/app-", "fileName": "a", "selector": {"tags": {"e": "x"}}},
            "unknown key 'tags'",
        ),
    ],
)
def test_bad_selectors(start_daemon, listed: GCP, item: dict, fragment: str):
    d = start_daemon(backends={"gcp": listed.settings()})
    code, details = refused(d, listed, {**item, "selector": item.get("selector", {})})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details
