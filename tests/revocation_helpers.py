"""Helpers for the revocation tests: a rotation Mount is a Mount carrying what the pod holds."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from keygate_dev.driver_client import Pod, mount_request


def held(resp: Any) -> list[tuple[str, str]]:
    """``current_object_version`` as the driver sends it after mounting ``resp``."""
    return [(v.id, v.version) for v in resp.object_version]


def files_of(resp: Any) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def rotate(d: Any, spc: str, params: dict[str, str], pod: Pod, before: Any) -> Any:
    """The driver's rotation Mount after ``before`` was mounted."""
    return d.client.mount(mount_request(spc, params, pod, current=held(before)))


def refused(d: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        d.client.mount(request)
    return info.value


def revoke_records(d: Any) -> list[dict[str, Any]]:
    return [r for r in d.audit_records() if r["decision"] == "revoke"]


def revocations(backend: str, reason: str) -> float:
    from provider.metrics import REGISTRY

    value = REGISTRY.get_sample_value("keygate_revocations_total", {"backend": backend, "reason": reason})
    return float(value or 0.0)
