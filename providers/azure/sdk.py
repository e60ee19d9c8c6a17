"""The Azure SDK names the backend uses, imported once with an actionable error when missing."""

from __future__ import annotations

from provider.errors import KeygateError

try:
    from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.identity import ClientAssertionCredential, ClientSecretCredential
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.secrets import SecretClient
except ImportError as _missing:  # pragma: no cover - depends on the installed extras
    raise KeygateError(
        f"the azure backend needs the Azure SDK ({_missing.name} is missing); "
        "install keygate with the 'azure' extra: pip install 'keygate[azure]'"
    ) from None


__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "CertificateClient",
    "ClientAssertionCredential",
    "ClientAuthenticationError",
    "ClientSecretCredential",
    "HttpResponseError",
    "KeyClient",
    "ResourceNotFoundError",
    "SecretClient",
    "ServiceRequestError",
    "ServiceResponseError",
    "TokenRequestOptions",
]
