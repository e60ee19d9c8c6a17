"""A client that calls a provider exactly as the Secrets Store CSI driver does.

Used by ``keygate demo`` and by the tests: attributes are the SPC parameters merged with the
kubelet's ``csi.storage.k8s.io/*`` volume attributes, the permission is a decimal JSON number,
service-account tokens are a JSON string keyed by audience.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from provider.request import (
    ATTR_EPHEMERAL,
    ATTR_POD_NAME,
    ATTR_POD_NAMESPACE,
    ATTR_POD_UID,
    ATTR_SERVICE_ACCOUNT,
    ATTR_SPC,
    ATTR_TOKENS,
)
from provider.wire import service_pb2 as pb
from provider.wire import service_pb2_grpc as pb_grpc


@dataclass(slots=True)
class Pod:
    namespace: str = "default"
    name: str = "app-0"
    uid: str = "6c3f8c51-3d0e-4c7e-9d0b-1a2b3c4d5e6f"
    service_account: str = "app"
    tokens: Mapping[str, str] = field(default_factory=dict)


def attributes(spc_name: str, parameters: Mapping[str, str], pod: Pod) -> str:
    attrs = dict(parameters)
    attrs.update(
        {
            ATTR_SPC: spc_name,
            ATTR_POD_NAME: pod.name,
            ATTR_POD_NAMESPACE: pod.namespace,
            ATTR_POD_UID: pod.uid,
            ATTR_SERVICE_ACCOUNT: pod.service_account,
            ATTR_EPHEMERAL: "false",
        }
    )
    if pod.tokens:
        attrs[ATTR_TOKENS] = json.dumps(
            {
                aud: {"token": tok, "expirationTimestamp": "2099-01-01T00:00:00Z"}
                for aud, tok in pod.tokens.items()
            }
        )
    return json.dumps(attrs)


def mount_request(
    spc_name: str,
    parameters: Mapping[str, str],
    pod: Pod,
    *,
    permission: int = 0o644,
    target_path: str = "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/secrets/mount",
    secrets: Mapping[str, str] | None = None,
    current: Sequence[tuple[str, str]] = (),
) -> pb.MountRequest:
    return pb.MountRequest(
        attributes=attributes(spc_name, parameters, pod),
        secrets=json.dumps(dict(secrets or {})),
        target_path=target_path,
        permission=str(permission),
        current_object_version=[pb.ObjectVersion(id=i, version=v) for i, v in current],
    )


class DriverClient:
    """A blocking gRPC client over the provider's Unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.stub = pb_grpc.CSIDriverProviderStub(self.channel)

    def version(self) -> pb.VersionResponse:
        return self.stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=10)

    def mount(self, request: pb.MountRequest, timeout: float = 30.0) -> pb.MountResponse:
        response: pb.MountResponse = self.stub.Mount(request, timeout=timeout)
        return response

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> DriverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
