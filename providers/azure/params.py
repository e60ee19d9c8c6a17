"""The Azure Key Vault backend's SPC vocabulary (secrets-store-csi-driver-provider-azure's names)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provider.errors import InvalidSPC
from providers.common import selectors
from providers.common.encoding import ENCODINGS
from providers.common.schema import Advisory, Marker, RuleInput, Schema, Spec

OBJECT_TYPES = ("secret", "key", "cert")
FORMATS = ("pem", "pfx")
MAX_HISTORY = 100
WORKLOAD_IDENTITY = "use workload identity (clientID)"
NODE_IDENTITY_ADVICE = (
    "useVMManagedIdentity reads as the node's managed identity: the daemon refuses it unless the "
    "release policy rule covering the pod's namespace grants `nodeIdentity: [azure]`"
)

VAULT_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]\Z")
OBJECT_NAME = re.compile(r"\A[A-Za-z0-9-]{1,127}\Z")
VERSION = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")
TENANT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,99}\Z")
CLIENT_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Cloud:
    """The endpoints of one Azure cloud that the backend needs."""

    vault_dns_suffix: str
    authority_host: str


CLOUDS: dict[str, Cloud] = {
    "azurepubliccloud": Cloud("vault.azure.net", "https://login.microsoftonline.com"),
    "azureusgovernmentcloud": Cloud("vault.usgovcloudapi.net", "https://login.microsoftonline.us"),
    "azurechinacloud": Cloud("vault.azure.cn", "https://login.chinacloudapi.cn"),
    "azuregermancloud": Cloud("vault.microsoftazure.de", "https://login.microsoftonline.de"),
}


def _vault(given: RuleInput) -> None:
    values = given.parameters
    vault = values.text("keyvaultName")
    if vault and not VAULT_NAME.fullmatch(vault):
        raise InvalidSPC(
            f"parameter 'keyvaultName' {vault[:40]!r} is not a Key Vault name "
            "(3-24 letters, digits and hyphens, starting with a letter)"
        )
    tenant = values.text("tenantId")
    if tenant and not TENANT.fullmatch(tenant):
        raise InvalidSPC("parameter 'tenantId' must be a tenant GUID or domain name")
    client_id = values.text("clientID")
    if client_id and not CLIENT_ID.fullmatch(client_id):
        raise InvalidSPC("parameter 'clientID' must be the application (client) id GUID")
    _node_identity(given)


def _node_identity(given: RuleInput) -> None:
    """``useVMManagedIdentity`` is the node's identity: the backend checks the policy grant per
    Mount; lint (no daemon settings) says that the grant is needed."""
    values = given.parameters
    managed = values.flag("useVMManagedIdentity")
    assigned = values.text("userAssignedIdentityID")
    if assigned and not CLIENT_ID.fullmatch(assigned):
        raise InvalidSPC("parameter 'userAssignedIdentityID' must be the managed identity's client id GUID")
    if assigned and not managed:
        raise InvalidSPC("parameter 'userAssignedIdentityID' is only used with useVMManagedIdentity: true")
    if managed and values.text("clientID"):
        raise InvalidSPC(
            "set either clientID (the pod's workload identity) or useVMManagedIdentity (the node's), not both"
        )
    if managed and given.settings is None:
        raise Advisory(NODE_IDENTITY_ADVICE, "useVMManagedIdentity")


def _object(given: RuleInput) -> None:
    assert given.obj is not None and given.fields is not None
    fields, where = given.fields, given.where
    if not OBJECT_NAME.fullmatch(given.obj.name):
        raise InvalidSPC(f"{where}: objectName must be 1-127 letters, digits and hyphens")
    version = fields.text("objectVersion")
    if version and not VERSION.fullmatch(version):
        raise InvalidSPC(f"{where}: objectVersion must be a Key Vault version id (letters and digits)")
    if fields.text("objectFormat") == "pfx" and fields.text("objectType") != "secret":
        raise InvalidSPC(f"{where}: objectFormat pfx is only supported with objectType secret")


def _selector(given: RuleInput) -> None:
    assert given.fields is not None
    if given.fields.text("objectType") != "secret":
        raise InvalidSPC(f"{given.where}: a selector lists secrets; set objectType: secret")


SCHEMA = Schema(
    backend="azure",
    summary="Azure Key Vault secrets, keys and certificates, read with the pod's workload identity.",
    parameters=(
        Spec("keyvaultName", "name of the Key Vault", required=True, marker=True),
        Spec("tenantId", "tenant (GUID or domain) of the vault", required=True, aliases=("tenantID",)),
        Spec(
            "cloudName",
            "Azure cloud of the vault",
            kind="choice",
            choices=tuple(CLOUDS),
            default="azurepubliccloud",
            invalid="parameter 'cloudName' {value!r} is unknown; use one of AzurePublicCloud, "
            "AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud",
        ),
        Spec("clientID", "client id of the workload identity the pod's token is federated with"),
        Spec(
            "usePodIdentity",
            "AAD Pod Identity",
            kind="bool",
            refused=f"AAD Pod Identity is deprecated upstream; {WORKLOAD_IDENTITY}",
        ),
        Spec(
            "useVMManagedIdentity",
            "read as the node's VM managed identity; only where the release policy grants "
            "`nodeIdentity: [azure]`",
            kind="bool",
        ),
        Spec(
            "userAssignedIdentityID",
            "client id of the node's user-assigned managed identity (with useVMManagedIdentity)",
        ),
        Spec(
            "cloudEnvFileName",
            "custom cloud environment file",
            refused="custom cloud files are not read; set backends.azure.vault_url_template and "
            "authority_host in the daemon configuration instead",
        ),
    ),
    fields=(
        Spec(
            "objectType",
            "secret, key or cert",
            kind="choice",
            choices=OBJECT_TYPES,
            required=True,
            invalid="{obj}: objectType must be one of secret, key, cert",
        ),
        Spec("objectVersion", "version id (default: the current version)"),
        Spec(
            "objectVersionHistory",
            f"write this many newest versions as <file>/0, /1, ... (0-{MAX_HISTORY})",
            kind="int",
            default="0",
            bounds=(0, MAX_HISTORY),
        ),
        Spec(
            "objectFormat",
            "pem or pfx, for certificate-backed secrets",
            kind="choice",
            choices=FORMATS,
            default="pem",
            invalid="{obj}: objectFormat must be pem or pfx",
        ),
        Spec(
            "objectEncoding",
            "how the secret's value is stored",
            kind="choice",
            choices=ENCODINGS,
            default="utf-8",
            invalid="{obj}: objectEncoding must be utf-8, base64 or hex",
        ),
        selectors.spec("tags", "secret whose name starts with objectName (enabled secrets only)"),
    ),
    object_markers=(Marker("objectType", values=OBJECT_TYPES),),
    spc_rules=(_vault,),
    object_rules=(selectors.rule("tags", ("objectVersion", "objectVersionHistory"), _selector), _object),
)
