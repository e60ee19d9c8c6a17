"""The Azure SDK names the backend uses, imported in one place.

A missing SDK never gets this far: the registry checks the backend's SDK modules
(:data:`providers.registry.BUILTIN`) before loading it and says which extra to install.
"""

from __future__ import annotations

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import ClientAssertionCredential, ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "CertificateClient",
    "ClientAssertionCredential",
    "ClientAuthenticationError",
    "ClientSecretCredential",
    "DecodeError",
    "HttpResponseError",
    "IncompleteReadError",
    "KeyClient",
    "ManagedIdentityCredential",
    "ResourceNotFoundError",
    "SecretClient",
    "ServiceRequestError",
    "ServiceResponseError",
    "TokenRequestOptions",
]
