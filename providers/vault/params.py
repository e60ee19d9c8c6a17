"""The Vault backend's SPC vocabulary (vault-csi-provider's names and defaults), and the typed
settings of one Mount built from it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from provider.errors import InvalidSPC
from providers.common import selectors
from providers.common.encoding import ENCODINGS
from providers.common.schema import Marker, RuleInput, Schema, Spec, Values

AUTH_METHODS = ("kubernetes", "jwt")
DYNAMIC_MODES = ("reuse", "per-mount")
DEFAULT_AUDIENCE = "vault"
SKIP_VERIFY_SETTING = "insecure_allow_skip_tls_verify"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How to check the Vault server (and present a client certificate), from SPC parameters."""

    ca_cert: str = ""
    ca_dir: str = ""
    server_name: str = ""
    client_cert: str = ""
    client_key: str = ""
    skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class VaultParams:
    """SPC-level settings of one Mount, validated once."""

    address: str
    namespace: str
    role: str
    auth_method: str
    auth_mount: str
    audience: str
    tls: TLSConfig
    dynamic: str

    @property
    def endpoint(self) -> tuple[str, str, TLSConfig]:
        return (self.address, self.namespace, self.tls)

    @property
    def where(self) -> str:
        ns = f" namespace {self.namespace!r}" if self.namespace else ""
        return f"Vault {self.address}{ns}"

    @classmethod
    def of(cls, values: Values) -> VaultParams:
        method = values.text("vaultAuthMethod")
        return cls(
            address=values.text("vaultAddress").rstrip("/"),
            namespace=values.text("vaultNamespace").strip("/"),
            role=values.text("roleName"),
            auth_method=method,
            auth_mount=mount_path(values.text("vaultAuthMountPath") or method),
            audience=values.text("audience"),
            tls=TLSConfig(
                ca_cert=values.text("vaultCACertPath"),
                ca_dir=values.text("vaultCADirectory"),
                server_name=values.text("vaultTLSServerName"),
                client_cert=values.text("vaultTLSClientCertPath"),
                client_key=values.text("vaultTLSClientKeyPath"),
                skip_verify=values.flag("vaultSkipTLSVerify"),
            ),
            dynamic=values.text("vaultDynamicSecrets"),
        )


def mount_path(raw: str) -> str:
    """Accept ``kubernetes``, ``/kubernetes/``, ``auth/kubernetes``: all name one auth mount."""
    path = raw.strip().strip("/")
    if path.startswith("auth/"):
        path = path[len("auth/") :]
    return path


def secret_path(raw: str) -> str:
    """``secretPath`` as Vault's API path below ``/v1/``: vault-csi-provider SPCs also write the
    ``/v1/`` prefix itself (``/v1/secret/data/x``), which names the same secret."""
    path = raw.strip().strip("/")
    return path[len("v1/") :].lstrip("/") if path.startswith("v1/") else path


def _address(given: RuleInput) -> None:
    address = given.parameters.text("vaultAddress")
    if not address:
        return
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSPC("parameter 'vaultAddress' must be an http(s) URL such as https://vault:8200")


def _auth_mount(given: RuleInput) -> None:
    values = given.parameters
    mount = mount_path(values.text("vaultAuthMountPath") or values.text("vaultAuthMethod"))
    if not mount or ".." in mount.split("/"):
        raise InvalidSPC("parameter 'vaultAuthMountPath' must name an auth mount such as 'kubernetes'")


def _tls(given: RuleInput) -> None:
    values = given.parameters
    if values.flag("vaultSkipTLSVerify") and not (given.settings or {}).get(SKIP_VERIFY_SETTING):
        raise InvalidSPC(
            "parameter 'vaultSkipTLSVerify' is refused: without certificate checks the pod's "
            "token can be stolen; give vaultCACertPath instead (or start keygate with "
            "--insecure-allow-vault-skip-tls-verify)"
        )
    if bool(values.text("vaultTLSClientCertPath")) != bool(values.text("vaultTLSClientKeyPath")):
        raise InvalidSPC("parameters 'vaultTLSClientCertPath' and 'vaultTLSClientKeyPath' go together")


def _secret_path(given: RuleInput) -> None:
    assert given.fields is not None
    path = secret_path(given.fields.text("secretPath"))
    if not path:
        raise InvalidSPC(f"{given.where}: 'secretPath' is required (e.g. secret/data/db)")
    if ".." in path.split("?")[0].split("/"):
        raise InvalidSPC(f"{given.where}: 'secretPath' must not contain '..'")


def _selector(given: RuleInput) -> None:
    """A Vault selector lists with GET: no other method, request body or query."""
    assert given.obj is not None
    obj = given.obj
    method = obj.str_field("method", "get").lower() or "get"
    if method != "get" or "?" in obj.str_field("secretPath"):
        raise InvalidSPC(f"{given.where}: a selector lists with GET; remove method and any ?query")


SCHEMA = Schema(
    backend="vault",
    summary="HashiCorp Vault or OpenBao, logged in to as the pod (kubernetes or jwt auth).",
    parameters=(
        Spec(
            "vaultAddress",
            "Vault URL, e.g. https://vault.vault:8200",
            required=True,
            setting="address",
            marker=True,
        ),
        Spec("roleName", "the Vault role the pod logs in as", required=True, marker=True),
        Spec("vaultNamespace", "Vault Enterprise / OpenBao namespace of the secrets"),
        Spec(
            "vaultAuthMethod",
            "auth method the pod's token is exchanged at",
            kind="choice",
            choices=AUTH_METHODS,
            setting="auth_method",
            default="kubernetes",
        ),
        Spec(
            "vaultAuthMountPath",
            "path of that auth method's mount (default: the method's name)",
            deprecated=("vaultKubernetesMountPath",),
        ),
        Spec(
            "audience",
            "audience of the pod token sent to Vault",
            setting="default_audience",
            default=DEFAULT_AUDIENCE,
        ),
        Spec("vaultCACertPath", "PEM file on the node with the CA that signed Vault's certificate"),
        Spec("vaultCADirectory", "directory on the node of such CA files"),
        Spec("vaultTLSServerName", "name expected in Vault's certificate (SNI)"),
        Spec("vaultTLSClientCertPath", "client certificate (PEM) for mutual TLS"),
        Spec("vaultTLSClientKeyPath", "its private key (PEM); goes with vaultTLSClientCertPath"),
        Spec(
            "vaultSkipTLSVerify",
            "skip certificate checks (refused unless the daemon allows it)",
            kind="bool",
            default="false",
        ),
        Spec(
            "vaultDynamicSecrets",
            "leased secrets: reuse while 2/3 of the lease remain, or read anew",
            kind="choice",
            choices=DYNAMIC_MODES,
            setting="dynamic_secrets",
            default="reuse",
        ),
    ),
    fields=(
        Spec(
            "secretPath",
            "path to read, e.g. secret/data/db (kv-v1/v2, dynamic engines)",
            required=True,
            marker=True,
        ),
        Spec("secretKey", "key of the answer's data to write (default: Vault's whole answer as JSON)"),
        Spec(
            "method",
            "HTTP method; POST or PUT (the same to Vault) for engines that issue on write (e.g. PKI)",
            kind="choice",
            choices=("get", "post", "put"),
            default="get",
            invalid="{where} must be GET, POST or PUT",
        ),
        Spec(
            "secretArgs",
            "request body (POST/PUT) or parameters of the read",
            kind="mapping",
            invalid="{where} must be a mapping of request parameters",
        ),
        Spec(
            "encoding",
            "how the value is stored: decoded to the file's bytes",
            kind="choice",
            choices=ENCODINGS,
            default="utf-8",
        ),
        selectors.spec("", "below secretPath (LIST; kv v2 lists <mount>/metadata/<path>)"),
    ),
    object_markers=(Marker("secretPath"),),
    spc_rules=(_address, _auth_mount, _tls),
    object_rules=(_secret_path, selectors.rule("", ("secretArgs",), _selector)),
)
