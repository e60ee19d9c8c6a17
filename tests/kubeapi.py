"""A local Kubernetes API for tests: real HTTPS on 127.0.0.1, real RSA/EC keys, real tokens.

The server itself is :class:`keygate_dev.devcluster.DevCluster` (``keygate demo`` uses it too): OIDC
discovery + JWKS, Pod GET, TokenReview. This module adds pytest fixtures and the helpers the
negative cases need (forged headers, HMAC confusion, raw payloads). Other suites (e.g. Vault's
kubernetes auth) can use ``kube`` for its TokenReview endpoint and ``kube.ca_file``.

Loaded as a pytest plugin from ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest

from keygate_dev.devcluster import DevCluster, PodSpec, SigningKey, k8s_key_id, pinned, running
from keygate_dev.driver_client import Pod

__all__ = [
    "DevCluster",
    "PodSpec",
    "SigningKey",
    "b64url",
    "driver_pod",
    "hs256_with_public_key",
    "k8s_key_id",
    "pinned",
    "raw_token",
    "unsigned_token",
]

API_TOKEN = "daemon-sa-token-for-tests"
AUDIENCE = "keygate"
NODE = "node-a"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def unsigned_token(claims: Mapping[str, Any], kid: str = "") -> str:
    """``alg: none``: the oldest JWT attack."""
    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{b64url(_json(header))}.{b64url(_json(dict(claims)))}."


def hs256_with_public_key(claims: Mapping[str, Any], key: SigningKey) -> str:
    """Algorithm confusion: HS256 keyed with the issuer's *public* key PEM (which anyone has)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64url(_json(header))}.{b64url(_json(dict(claims)))}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def raw_token(payload: bytes, key: SigningKey) -> str:
    """A correctly signed token whose payload bytes are given verbatim (e.g. duplicate members)."""
    return jwt.api_jws.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid})


def driver_pod(spec: PodSpec, token: str | None, audience: str = AUDIENCE) -> Pod:
    """The driver's view of a pod, with its token under ``audience`` (no tokens when None)."""
    return Pod(
        namespace=spec.namespace,
        name=spec.name,
        uid=spec.uid,
        service_account=spec.service_account,
        tokens={audience: token} if token is not None else {},
    )


def make_pod(
    kube: DevCluster,
    *,
    namespace: str = "default",
    name: str = "app-0",
    uid: str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    service_account: str = "app",
    images: Mapping[str, str] | None = None,
    init_images: Mapping[str, str] | None = None,
    ephemeral_images: Mapping[str, str] | None = None,
    node_name: str = NODE,
    register: bool = True,
) -> PodSpec:
    spec = PodSpec(
        namespace=namespace,
        name=name,
        uid=uid,
        service_account=service_account,
        images=dict(images or {"app": pinned("ghcr.io/acme/app")}),
        init_images=dict(init_images or {}),
        ephemeral_images=dict(ephemeral_images or {}),
        node_name=node_name,
    )
    return kube.add_pod(spec) if register else spec


@pytest.fixture
def kube(short_tmp: Path) -> Iterator[DevCluster]:
    """A running local Kubernetes API (HTTPS, own CA in ``kube.ca_file``, bearer token required)."""
    with running(short_tmp, api_token=API_TOKEN) as cluster:
        yield cluster


def attest_settings(kube: DevCluster, **overrides: Any) -> dict[str, Any]:
    """Config overrides that make ``start_daemon`` attest against ``kube``."""
    settings: dict[str, Any] = {
        "insecure_skip_attestation": False,
        "issuer": kube.issuer,
        "kube_api_url": kube.url,
        "kube_ca": str(kube.ca_file),
        "kube_token_file": str(kube.token_file),
        "node_name": NODE,
        "jwks_min_refresh": 0.001,
    }
    settings.update(overrides)
    return settings


@pytest.fixture
def attest_daemon(start_daemon: Callable[..., Any], kube: DevCluster) -> Callable[..., Any]:
    """``start_daemon`` with real attestation against the ``kube`` fixture's API and issuer."""

    def start(**overrides: Any) -> Any:
        return start_daemon(**attest_settings(kube, **overrides))

    return start
