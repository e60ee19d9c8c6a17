"""The GCP backend's daemon settings (``backends.gcp``), validated once at construction."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from provider.errors import KeygateError

DEFAULTS: dict[str, Any] = {
    "endpoint": "secretmanager.googleapis.com:443",
    "regional_endpoint": "secretmanager.{location}.rep.googleapis.com:443",
    "parameter_endpoint": "parametermanager.googleapis.com:443",
    "parameter_regional_endpoint": "parametermanager.{location}.rep.googleapis.com:443",
    "sts_endpoint": "https://sts.googleapis.com/v1/token",
    "iam_endpoint": "https://iamcredentials.googleapis.com",
    "token_endpoint": "https://oauth2.googleapis.com/token",
    "workload_identity_pool": "",
    "identity_provider": "",
    "workload_identity_audience": "",
    "allow_node_publish_secret": True,
    "insecure_allow_provider_adc": False,
    "insecure_plaintext_endpoint": False,
    "workers": 16,
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class GCPSettings:
    """The ``backends.gcp`` section of the daemon config, validated once at construction.

    The ``insecure_plaintext_endpoint`` switch exists for tests against local servers: it turns
    off TLS for every Google endpoint, and is refused unless every endpoint is on loopback, so a
    mistaken production config cannot send tokens in clear over a network.
    """

    endpoint: str
    regional_endpoint: str
    parameter_endpoint: str
    parameter_regional_endpoint: str
    sts_endpoint: str
    iam_endpoint: str
    token_endpoint: str
    workload_identity_pool: str
    identity_provider: str
    workload_identity_audience: str
    allow_node_publish_secret: bool
    insecure_allow_provider_adc: bool
    insecure_plaintext_endpoint: bool
    workers: int

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> GCPSettings:
        unknown = sorted(set(raw) - set(DEFAULTS))
        if unknown:
            raise KeygateError(
                f"backends.gcp: unknown settings {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}"
            )
        values = {**DEFAULTS, **raw}
        for key, default in DEFAULTS.items():
            value = values[key]
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise KeygateError(f"backends.gcp.{key} must be true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                    raise KeygateError(f"backends.gcp.{key} must be an integer between 1 and 256")
            elif not isinstance(value, str):
                raise KeygateError(f"backends.gcp.{key} must be a string")
        if values["insecure_allow_provider_adc"] is True:
            raise KeygateError(
                "backends.gcp.insecure_allow_provider_adc is replaced by the release policy: grant "
                "`nodeIdentity: [gcp]` in the rule of each namespace that may use auth: provider-adc"
            )
        settings = cls(**values)
        settings._check_endpoints()
        return settings

    def _check_endpoints(self) -> None:
        for key in ("endpoint", "regional_endpoint", "parameter_endpoint", "parameter_regional_endpoint"):
            target: str = getattr(self, key)
            host = target.rsplit(":", 1)[0] if ":" in target else target
            if not host or "/" in target:
                raise KeygateError(f"backends.gcp.{key} must be host:port, not {target!r}")
            if key.startswith("parameter_"):
                continue  # plaintext only where loopback (plaintext_for), TLS otherwise
            if self.insecure_plaintext_endpoint and not _is_loopback(host.replace("{location}", "x")):
                raise KeygateError(
                    f"backends.gcp.{key} {target!r}: insecure_plaintext_endpoint is only allowed "
                    "for loopback addresses (local test servers)"
                )
        for key in ("sts_endpoint", "iam_endpoint", "token_endpoint"):
            url = urlsplit(getattr(self, key))
            plaintext_ok = self.insecure_plaintext_endpoint and _is_loopback(url.hostname or "")
            if url.scheme != "https" and not (url.scheme == "http" and plaintext_ok):
                raise KeygateError(
                    f"backends.gcp.{key} must be an https:// URL (http:// only on loopback with "
                    "insecure_plaintext_endpoint)"
                )

    def plaintext_for(self, endpoint: str) -> bool:
        """Whether a Parameter Manager channel may skip TLS: only to loopback, with the switch.

        Added after ``insecure_plaintext_endpoint`` existed, so a test config that moved only the
        Secret Manager endpoints keeps TLS towards the real Parameter Manager.
        """
        host = endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint
        return self.insecure_plaintext_endpoint and _is_loopback(host)

    def endpoint_for(self, location: str | None, *, parameters: bool = False) -> str:
        """Secret Manager's (or Parameter Manager's) endpoint: global for None, else regional."""
        if location is None:
            return self.parameter_endpoint if parameters else self.endpoint
        template = self.parameter_regional_endpoint if parameters else self.regional_endpoint
        return template.replace("{location}", location)
