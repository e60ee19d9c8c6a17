"""Secret Manager reads over gRPC: one channel per endpoint (bounded), the access token sent as
per-call metadata, the payload checksum verified, and SDK failures as keygate errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from provider.errors import (
    BackendUnavailable,
    Gone,
    InvalidSPC,
    KeygateError,
    PermissionDenied,
    SecretNotFound,
    Unauthenticated,
    gone,
)
from providers.common.runtime import Pooled, Retryable
from providers.gcp.oauth import TokenSource
from providers.gcp.settings import GCPSettings

if TYPE_CHECKING:
    import grpc
    from google.cloud.parametermanager_v1 import ParameterManagerClient
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient

MAX_CHANNELS = 64


@dataclass(frozen=True, slots=True)
class Read:
    version: str
    data: bytes


class SecretManager:
    """The blocking side of the backend (runs on its worker pool)."""

    def __init__(self, settings: GCPSettings) -> None:
        self.settings = settings
        self._clients: Pooled[str, SecretManagerServiceClient] = Pooled(
            self._connect, lambda c: c.transport.close(), MAX_CHANNELS
        )

    def access(self, endpoint: str, name: str, token: str, timeout: float) -> Read:
        """One blocking AccessSecretVersion call; the SDK's own retries are off (ours apply)."""
        import google_crc32c

        client = self._clients.get(endpoint)
        response = client.access_secret_version(
            request={"name": name},
            retry=None,
            timeout=timeout,
            metadata=[("authorization", f"Bearer {token}")],
        )
        if "payload" not in response:
            raise BackendUnavailable(f"GCP Secret Manager answered for {name} without a payload")
        data = bytes(response.payload.data)
        if "data_crc32c" in response.payload and google_crc32c.value(data) != response.payload.data_crc32c:
            raise BackendUnavailable(
                f"GCP secret {name}: the payload checksum (data_crc32c) does not match; "
                "the response was corrupted in transit"
            )
        return Read(version=response.name or name, data=data)

    def _connect(self, endpoint: str) -> SecretManagerServiceClient:
        from google.cloud.secretmanager_v1 import SecretManagerServiceClient
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
            SecretManagerServiceGrpcTransport,
        )

        channel = _channel(endpoint, plaintext=self.settings.insecure_plaintext_endpoint)
        return SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))

    def close(self) -> None:
        self._clients.close()


class ParameterManager:
    """Parameter Manager reads (blocking): RenderParameterVersion, as the GCP provider calls it,
    so secret references inside a JSON or YAML parameter arrive substituted."""

    def __init__(self, settings: GCPSettings) -> None:
        self.settings = settings
        self._clients: Pooled[str, ParameterManagerClient] = Pooled(
            self._connect, lambda c: c.transport.close(), MAX_CHANNELS
        )

    def render(self, endpoint: str, name: str, token: str, timeout: float) -> Read:
        client = self._clients.get(endpoint)
        response = client.render_parameter_version(
            request={"name": name},
            retry=None,
            timeout=timeout,
            metadata=[("authorization", f"Bearer {token}")],
        )
        return Read(version=response.parameter_version or name, data=bytes(response.rendered_payload))

    def _connect(self, endpoint: str) -> ParameterManagerClient:

        try:
            from google.cloud.parametermanager_v1 import ParameterManagerClient
            from google.cloud.parametermanager_v1.services.parameter_manager.transports import (
                ParameterManagerGrpcTransport,
            )
        except ImportError:
            raise BackendUnavailable(
                "GCP Parameter Manager resources need google-cloud-parametermanager "
                "(pip install 'keygate[gcp]')"
            ) from None
        channel = _channel(endpoint, plaintext=self.settings.plaintext_for(endpoint))
        return ParameterManagerClient(transport=ParameterManagerGrpcTransport(channel=channel))

    def close(self) -> None:
        self._clients.close()


def _channel(endpoint: str, *, plaintext: bool) -> grpc.Channel:
    """A gRPC channel to ``endpoint``: TLS with the system roots, or plaintext where allowed."""
    import grpc

    if plaintext:
        return grpc.insecure_channel(endpoint)
    return grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())


def map_error(
    exc: BaseException, name: str, endpoint: str, auth: TokenSource, *, parameter: bool = False
) -> KeygateError:
    """SDK exceptions to keygate errors naming the resource and identity, never content."""
    from google.api_core import exceptions as gexc

    what, service = (
        ("parameter version", "Parameter Manager") if parameter else ("secret version", "Secret Manager")
    )
    role = (
        "roles/parametermanager.parameterAccessor on that parameter"
        if parameter
        else ("roles/secretmanager.secretAccessor on that secret")
    )
    if isinstance(exc, KeygateError):
        return exc
    if isinstance(exc, gexc.NotFound):
        return gone(SecretNotFound(f"GCP {what} {name} was not found (endpoint {endpoint})"), Gone.NOT_FOUND)
    if isinstance(exc, gexc.PermissionDenied):
        denied = PermissionDenied(f"GCP denied access to {name} for {auth.describe}; grant it {role}")
        return gone(denied, Gone.FORBIDDEN)
    if isinstance(exc, gexc.Unauthenticated):
        return Unauthenticated(f"GCP did not accept the access token of {auth.describe} reading {name}")
    if isinstance(exc, gexc.FailedPrecondition):
        destroyed = "DESTROYED" in str(exc.message or "").upper()
        error = SecretNotFound(f"GCP {what} {name} is disabled or destroyed")
        return gone(error, Gone.DELETED if destroyed else Gone.DISABLED)
    if isinstance(exc, gexc.InvalidArgument):
        return InvalidSPC(f"GCP rejected the resource name {name} as invalid")
    if isinstance(exc, gexc.ResourceExhausted | gexc.ServiceUnavailable | gexc.DeadlineExceeded):
        throttled = isinstance(exc, gexc.ResourceExhausted)
        message = f"GCP {service} at {endpoint} is busy or unavailable reading {name}"
        return Retryable(message, throttled=throttled)
    if isinstance(exc, gexc.GoogleAPICallError):
        status = getattr(exc, "grpc_status_code", None) or exc.code
        code = getattr(status, "name", None) or type(exc).__name__
        return BackendUnavailable(f"GCP {service} failed reading {name} ({code})")
    raise exc
