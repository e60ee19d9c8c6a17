"""Daemon settings from, in rising precedence: built-in defaults, a YAML config file,
``KEYGATE_*`` environment variables, and command-line flags.

Every setting is declared once in :data:`OPTIONS`; the CLI's ``--help``, the environment names
and the config-file keys are all derived from that table so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provider.errors import KeygateError

RATE_DEFAULTS = {
    "vault": (1000.0, 2500),
    "aws": (200.0, 400),
    "azure": (200.0, 400),
    "gcp": (500.0, 1000),
}

DEFAULT_SOCKET = "/var/run/secrets-store-csi-providers/keygate.sock"


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its key (config file), flag, environment variable, type and help."""

    key: str
    default: Any
    help: str
    kind: str = "str"  # str | float | int | bool | list

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return "KEYGATE_" + self.key.upper()


OPTIONS: tuple[Option, ...] = (
    Option("socket", DEFAULT_SOCKET, "Unix socket the driver dials (in its provider directory)."),
    Option(
        "sealed_key",
        [],
        "Node private key file or directory of *.pem/*.key files for the "
        "sealed backend; repeat for several keys (key rotation).",
        "list",
    ),
    Option(
        "version_key_file",
        "",
        "File holding the HMAC key for object versions; share one "
        "across nodes for identical versions. Default: a random key per daemon start.",
    ),
    Option(
        "write_files",
        False,
        "Legacy mode: also write the files into target_path atomically "
        "(..data symlink swap) instead of leaving that to the driver.",
        "bool",
    ),
    Option(
        "kubelet_root_dir",
        "/var/lib/kubelet",
        "The kubelet's root directory (its --root-dir; the driver chart's linux.kubeletRootDir), "
        "as a real path without links. With write_files, target_path must be a CSI volume of the "
        "requesting pod below it.",
    ),
    Option(
        "insecure_allow_write_files_off_tmpfs",
        False,
        "INSECURE: with write_files, also write into a target_path that is not on tmpfs "
        "(the secrets then reach the node's disk). Refused unless set.",
        "bool",
    ),
    Option(
        "mount_timeout",
        25.0,
        "Seconds one Mount may take in total (keep it below the driver's own timeout).",
        "float",
    ),
    Option(
        "selector_max_objects",
        1000,
        "Most objects one SPC selector (prefix mount) may expand to; a selector's own limit "
        "above it is refused.",
        "int",
    ),
    Option("grace_period", 30.0, "Seconds to finish in-flight mounts after SIGTERM.", "float"),
    Option("log_level", "info", "debug, info, warning or error."),
    Option("log_format", "json", "json (one object per line) or text."),
    Option(
        "insecure_skip_attestation",
        False,
        "INSECURE: trust the kubelet's pod attributes without verifying any token, image or "
        "release policy (local development only).",
        "bool",
    ),
    Option(
        "token_audience", "keygate", "Audience of the pod token keygate verifies (CSIDriver tokenRequests)."
    ),
    Option(
        "issuer",
        "",
        "The cluster's service-account issuer (kube-apiserver --service-account-issuer); "
        "its OIDC discovery gives the token keys unless key files are set.",
    ),
    Option("jwks_url", "", "Fetch the issuer keys from this JWKS URL instead of OIDC discovery."),
    Option("jwks_file", [], "Static JWKS file(s) with the issuer's public keys; repeat for several.", "list"),
    Option(
        "issuer_key_file",
        [],
        "Static PEM public key file(s) of the service-account issuer (sa.pub); repeat for several.",
        "list",
    ),
    Option(
        "jwks_min_refresh",
        10.0,
        "Minimum seconds between key refreshes triggered by an unknown key id.",
        "float",
    ),
    Option(
        "token_review",
        False,
        "Verify tokens with the API server's TokenReview instead of local keys "
        "(for clusters whose issuer is not reachable).",
        "bool",
    ),
    Option("clock_skew", 30.0, "Seconds of clock skew tolerated on exp, nbf and iat.", "float"),
    Option(
        "token_allow_ed25519",
        False,
        "Also accept issuer keys of type Ed25519 (EdDSA tokens); Kubernetes issuers use RSA or ECDSA.",
        "bool",
    ),
    Option(
        "kube_api_url",
        "",
        "Kubernetes API URL for Pod GET and TokenReview. Default: in-cluster configuration.",
    ),
    Option("kube_ca", "", "CA bundle for kube_api_url (and for the issuer's HTTPS)."),
    Option("kube_token_file", "", "Bearer token file keygate uses against kube_api_url."),
    Option(
        "insecure_skip_image_check",
        False,
        "INSECURE: do not read the Pod from the API (no pod UID, service account and image digest checks).",
        "bool",
    ),
    Option(
        "release_policy",
        "",
        "Release policy YAML file (a mounted ConfigMap), reloaded on change. Default: "
        "digest pinning required, the SPC decides the rest.",
    ),
    Option(
        "signature_registry_ca",
        "",
        "CA bundle trusted (besides the system's) for registries the release policy's image "
        "signatures are read from.",
    ),
    Option(
        "signature_docker_config",
        "",
        "Docker config.json whose `auths` hold the node's pull credentials for reading image "
        "signatures (basic credentials or the bearer-token exchange). Default: anonymous.",
    ),
    Option(
        "signature_cache_ttl",
        300.0,
        "Seconds a verified image signature is remembered (at most 86400); within it a registry "
        "outage does not refuse the image, after it the Mount fails closed.",
        "float",
    ),
    Option(
        "signature_registry_timeout",
        10.0,
        "Seconds one registry request for image signatures may take (capped at half of mount_timeout).",
        "float",
    ),
    Option("audit_sink", "stdout", "Where audit records go: stdout, stderr, or a file path (appended)."),
    Option("node_name", "", "This node's name (downward API spec.nodeName); recorded in audit and checked."),
    Option(
        "insecure_allow_vault_skip_tls_verify",
        False,
        "INSECURE: honour the SPC parameter vaultSkipTLSVerify (no Vault certificate check, "
        "so the pod's token can be stolen by anyone on the path). Refused unless set.",
        "bool",
    ),
    Option(
        "pod_watch",
        False,
        "Keep this node's pods in memory from one watch (needs node_name, and list/watch on pods) "
        "instead of one Pod GET per Mount; Mounts fall back to GET whenever the watch is down.",
        "bool",
    ),
    Option(
        "max_inflight",
        256,
        "Mounts served at once; beyond it new ones are refused at once with RESOURCE_EXHAUSTED "
        "(the driver retries) instead of queuing without bound. 0 means no limit.",
        "int",
    ),
    Option(
        "shared_reads",
        True,
        "Single flight: identical backend reads of concurrent Mounts (same backend, endpoint, "
        "identity, object, version) go to the backend once (docs/shared-reads.md). Set it to false in "
        "the environment or config file to turn it off.",
        "bool",
    ),
    Option(
        "shared_read_ttl",
        0,
        "Seconds (at most 60) a shared read's answer is reused, in memory only, by later Mounts with "
        "the same key; 0 (the default) keeps only the single flight.",
        "int",
    ),
    *(
        option
        for name, (rate, burst) in RATE_DEFAULTS.items()
        for option in (
            Option(
                f"{name}_rate",
                rate,
                f"Requests per second keygate sends to one {name} endpoint, shared by all Mounts "
                "(docs/rate-limits.md).",
                "float",
            ),
            Option(
                f"{name}_burst",
                int(burst),
                f"Requests to one {name} endpoint that may go at once before {name}_rate applies "
                "(1 or more).",
                "int",
            ),
        )
    ),
    Option(
        "metrics_addr",
        ":8098",
        "host:port for Prometheus /metrics and the /healthz and /readyz probes; empty disables.",
    ),
)


@dataclass(frozen=True, slots=True)
class Config:
    """Resolved settings. ``backends`` holds each backend's section of the config file."""

    socket: str = DEFAULT_SOCKET
    sealed_key: tuple[str, ...] = ()
    version_key_file: str = ""
    write_files: bool = False
    kubelet_root_dir: str = "/var/lib/kubelet"
    insecure_allow_write_files_off_tmpfs: bool = False
    mount_timeout: float = 25.0
    selector_max_objects: int = 1000
    grace_period: float = 30.0
    log_level: str = "info"
    log_format: str = "json"
    insecure_skip_attestation: bool = False
    token_audience: str = "keygate"  # noqa: S105 - an audience name, not a secret
    issuer: str = ""
    jwks_url: str = ""
    jwks_file: tuple[str, ...] = ()
    issuer_key_file: tuple[str, ...] = ()
    jwks_min_refresh: float = 10.0
    token_review: bool = False
    clock_skew: float = 30.0
    token_allow_ed25519: bool = False
    kube_api_url: str = ""
    kube_ca: str = ""
    kube_token_file: str = ""
    insecure_skip_image_check: bool = False
    release_policy: str = ""
    signature_registry_ca: str = ""
    signature_docker_config: str = ""
    signature_cache_ttl: float = 300.0
    signature_registry_timeout: float = 10.0
    audit_sink: str = "stdout"
    node_name: str = ""
    insecure_allow_vault_skip_tls_verify: bool = False
    pod_watch: bool = False
    max_inflight: int = 256
    metrics_addr: str = ":8098"
    shared_reads: bool = True
    shared_read_ttl: int = 0
    vault_rate: float = RATE_DEFAULTS["vault"][0]
    vault_burst: int = RATE_DEFAULTS["vault"][1]
    aws_rate: float = RATE_DEFAULTS["aws"][0]
    aws_burst: int = RATE_DEFAULTS["aws"][1]
    azure_rate: float = RATE_DEFAULTS["azure"][0]
    azure_burst: int = RATE_DEFAULTS["azure"][1]
    gcp_rate: float = RATE_DEFAULTS["gcp"][0]
    gcp_burst: int = RATE_DEFAULTS["gcp"][1]
    backends: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def backend_settings(self) -> dict[str, dict[str, Any]]:
        settings = {name: dict(section) for name, section in self.backends.items()}
        sealed = settings.setdefault("sealed", {})
        sealed["keys"] = list(self.sealed_key) + list(sealed.get("keys") or [])
        vault = settings.setdefault("vault", {})
        vault["insecure_allow_skip_tls_verify"] = self.insecure_allow_vault_skip_tls_verify
        aws = settings.setdefault("aws", {})
        for key in ("node_name", "kube_api_url", "kube_ca", "kube_token_file"):
            aws.setdefault(key, getattr(self, key))  # the node's region label (providers.aws.region)
        for name in RATE_DEFAULTS:
            settings.setdefault(name, {})["runtime"] = {
                "rate": getattr(self, f"{name}_rate"),
                "burst": getattr(self, f"{name}_burst"),
                "shared_reads": self.shared_reads,
                "shared_read_ttl": self.shared_read_ttl,
                "verified": not self.insecure_skip_attestation,
            }
        return settings


_BY_KEY = {opt.key: opt for opt in OPTIONS}


def describe(*keys: str) -> str:
    """How to set options, for error messages: ``--kube-ca (KEYGATE_KUBE_CA, config key kube_ca)``.

    Generated from :data:`OPTIONS`, so a message never names a flag or variable that does not exist.
    """
    return " and ".join(f"{_BY_KEY[key].flag} ({_BY_KEY[key].env}, config key {key})" for key in keys)


def local_alternatives() -> str:
    """The options that let the daemon run without a cluster, for errors about missing cluster access."""
    return (
        f"off a cluster (e.g. on a laptop), verify tokens with a local issuer key instead: "
        f"{describe('issuer')} with {describe('issuer_key_file')} or {describe('jwks_file')}, "
        f"plus {describe('insecure_skip_image_check')} to skip the Pod lookup; or turn attestation "
        f"off entirely with {describe('insecure_skip_attestation')} (development only; see docs/local.md)"
    )


def attribute(message: str, config: Config) -> str:
    """``message`` plus the options whose configured value it quotes (a path, an address...).

    Start-up errors from deep inside (an unreadable key, a busy socket) name the value but not
    where it was set; this names the flag, variable and key, from :data:`OPTIONS`, in one place.
    """
    named = []
    for opt in OPTIONS:
        if opt.kind == "bool" or opt.flag in message:
            continue
        value = getattr(config, opt.key)
        if value == opt.default:
            continue  # nobody set it, and a default such as "keygate" also appears in prose
        values = value if isinstance(value, tuple) else (value,)
        if any(
            isinstance(v, str)
            and len(v) >= 3
            and re.search(rf"(?<![\w./-]){re.escape(v)}(?![\w.-])", message)
            for v in values
        ):
            named.append(opt.key)
    return f"{message} (set by {describe(*named)})" if named else message


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for every option; defaults are left unset so the file and environment can apply."""
    parser.add_argument(
        "--config",
        help="YAML config file with the same keys as the flags "
        "(underscores) and a 'backends:' section. Env: KEYGATE_CONFIG.",
    )
    for opt in OPTIONS:
        help_text = f"{opt.help} Env: {opt.env}. Default: {opt.default!r}."
        if opt.kind == "bool":
            parser.add_argument(opt.flag, action="store_true", default=None, help=help_text)
        elif opt.kind == "list":
            parser.add_argument(opt.flag, action="append", default=None, metavar="PATH", help=help_text)
        else:
            parser.add_argument(
                opt.flag, default=None, metavar=opt.key.split("_")[-1].upper(), help=help_text
            )


def _convert(opt: Option, value: Any, source: str) -> Any:
    try:
        if opt.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if opt.kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            count = int(value)
            if count < 0:
                raise ValueError
            return count
        if opt.kind == "float":
            number = float(value)
            if number <= 0:
                raise ValueError
            return number
        if opt.kind == "list":
            if isinstance(value, str):
                return tuple(v for v in value.split(",") if v)
            if isinstance(value, list | tuple):
                return tuple(str(v) for v in value)
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        expected = {
            "bool": "true or false",
            "int": "a whole number, 0 or more",
            "float": "a number above 0",
            "list": "a list (comma-separated in the environment)",
        }.get(opt.kind, "a string")
        raise KeygateError(f"{source}: invalid value for {describe(opt.key)}: expected {expected}") from None


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Merge defaults, file, environment and flags into one validated Config."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or env.get("KEYGATE_CONFIG")
    backends: dict[str, Any] = {}
    if config_path:
        data = _read_file(config_path)
        backends = data.pop("backends", None) or {}
        if not isinstance(backends, dict):
            raise KeygateError(f"{config_path}: 'backends' must be a mapping of backend name to settings")
        unknown = sorted(set(data) - _BY_KEY.keys(), key=str)
        if unknown:
            raise KeygateError(f"{config_path}: {_unknown_keys(unknown)}")
        for opt in OPTIONS:
            if opt.key in data:
                values[opt.key] = _convert(opt, data[opt.key], config_path)
    for opt in OPTIONS:
        if opt.env in env:
            values[opt.key] = _convert(opt, env[opt.env], opt.env)
        flag_value = getattr(args, opt.key, None) if args is not None else None
        if flag_value is not None:
            values[opt.key] = _convert(opt, flag_value, opt.flag)
    config = Config(backends=backends, **values)
    if config.log_format not in ("json", "text"):
        raise KeygateError(f"{describe('log_format')} must be json or text, not {config.log_format[:40]!r}")
    if config.metrics_addr:
        from provider.health import parse_addr

        try:
            parse_addr(config.metrics_addr)
        except KeygateError as exc:
            raise KeygateError(f"{describe('metrics_addr')}: {exc.message}") from None
    if config.shared_read_ttl > 60:
        raise KeygateError(f"{describe('shared_read_ttl')} must be at most 60 seconds")
    for name in RATE_DEFAULTS:
        if getattr(config, f"{name}_burst") < 1:
            raise KeygateError(f"{describe(f'{name}_burst')} must be 1 or more")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise KeygateError(
            f"{describe('log_level')} must be debug, info, warning or error, not {config.log_level[:40]!r}"
        )
    return config


def _unknown_keys(unknown: Sequence[Any]) -> str:
    import difflib

    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(_BY_KEY), n=1, cutoff=0.7)
        parts.append(str(key)[:60] + (f" (did you mean {close[0]}?)" if close else ""))
    return (
        f"unknown keys {', '.join(parts)}; the keys are the flags' names "
        "with underscores (keygate serve --help lists them), plus 'backends'"
    )


def _read_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KeygateError(f"cannot read config file {path}: {os.strerror(exc.errno or 0)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise KeygateError(f"config file {path} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KeygateError(f"config file {path} must be a mapping")
    return data


def option_names() -> Sequence[str]:
    return [opt.key for opt in OPTIONS]
