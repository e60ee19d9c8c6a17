"""Turn the driver's MountRequest strings into a typed, validated :class:`MountContext`.

The driver sends JSON strings (attributes, secrets), a decimal permission string and the
currently mounted object versions. Everything is checked here, once, so later stages can trust
the types. Messages name the attribute at fault, never its value when it may be secret.

Sizes are bounded before anything is parsed. gRPC already refuses messages above 4 MiB (the
server's receive limit, also the driver's default); below that, attributes are capped at 2 MiB
(an SPC is a Kubernetes object, and the API server stores nothing above 1.5 MiB, so a larger one
cannot come from a real SPC) and node-publish secrets at 1.5 MiB (a Secret holds at most 1 MiB).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provider.errors import InvalidRequest

POD_ATTRIBUTE_PREFIX = "csi.storage.k8s.io/"  # the driver's per-pod attributes, beside the SPC's
ATTR_POD_NAME = "csi.storage.k8s.io/pod.name"
ATTR_POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
ATTR_POD_UID = "csi.storage.k8s.io/pod.uid"
ATTR_SERVICE_ACCOUNT = "csi.storage.k8s.io/serviceAccount.name"
ATTR_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
ATTR_EPHEMERAL = "csi.storage.k8s.io/ephemeral"
ATTR_SPC = "secretProviderClass"
REQUIRED_POD_ATTRIBUTES = (ATTR_POD_NAME, ATTR_POD_NAMESPACE, ATTR_POD_UID, ATTR_SERVICE_ACCOUNT)
MAX_MODE = 0o777
# Kubernetes object names, matched on the whole string: a namespace is a DNS-1123 label, pod and
# service-account names DNS-1123 subdomains. The kubelet never sends anything else.
DNS_LABEL = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(
    r"\A(?=.{1,253}\Z)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z"
)
POD_UID = re.compile(r"\A[A-Za-z0-9-]{1,128}\Z")
_SUBDOMAIN = "a DNS subdomain (lowercase letters, digits, '-' and '.'; at most 253)"
IDENTITY_RULES = (
    (ATTR_POD_NAMESPACE, DNS_LABEL, "a DNS label (lowercase letters, digits and '-'; at most 63)"),
    (ATTR_POD_NAME, DNS_SUBDOMAIN, _SUBDOMAIN),
    (ATTR_SERVICE_ACCOUNT, DNS_SUBDOMAIN, _SUBDOMAIN),
    (ATTR_POD_UID, POD_UID, "a UID (letters, digits and '-'; at most 128)"),
)
MAX_ATTRIBUTES_BYTES = 2 * 1024 * 1024
MAX_SECRETS_BYTES = 1536 * 1024
MAX_TOKEN_BYTES = 64 * 1024
MAX_AUDIENCES = 16
MAX_TARGET_PATH = 4096
MAX_VERSIONS = 4096
MAX_VERSION_FIELD = 4096


@dataclass(frozen=True, slots=True)
class MountInput:
    """The MountRequest as plain data, so nothing past the server depends on gRPC."""

    attributes: str
    secrets: str
    target_path: str
    permission: str
    current_object_version: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PodAttributes:
    """The pod as the kubelet describes it; *claimed*, until attestation verifies it."""

    namespace: str
    name: str
    uid: str
    service_account: str


@dataclass(frozen=True, slots=True)
class MountContext:
    """Everything parsed from one MountRequest."""

    pod: PodAttributes
    spc_name: str
    parameters: Mapping[str, str]
    tokens: Mapping[str, str]
    node_secrets: Mapping[str, str]
    target_path: str
    default_mode: int
    current_versions: Mapping[str, str]
    tokens_present: bool


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _check_size(raw: str, what: str, limit: int, why: str) -> None:
    size = _utf8_size(raw) if len(raw) <= limit else len(raw)
    if size > limit:
        raise InvalidRequest(
            f"{what} are {size // 1024} KiB; keygate accepts at most {limit // 1024} KiB ({why})"
        )


class _Duplicate(ValueError):
    """A JSON object names one key twice (parsers disagree on which wins); the message is the key."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = item
    return out


def _json_string_map(raw: str, what: str, *, allow_empty: bool) -> dict[str, str]:
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidRequest(f"{what} is empty; the driver must send a JSON object")
    try:
        value: Any = json.loads(raw, object_pairs_hook=_unique_members)
    except _Duplicate as exc:
        raise InvalidRequest(f"{what} name the key {str(exc)[:80]!r} twice") from None
    except RecursionError:
        raise InvalidRequest(f"{what} nest too deeply; they must be a flat JSON object of strings") from None
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        where = f" at character {pos}" if pos is not None else ""
        raise InvalidRequest(f"{what} is not valid JSON{where}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidRequest(f"{what}: the value of {key!r} must be a string")
        out[key] = item
    return out


def parse_permission(raw: str) -> int:
    """The driver's default mode: a JSON number in decimal ("420" is 0644)."""
    text = raw.strip()
    if not text:
        raise InvalidRequest('permission is empty; expected a decimal file mode such as "420"')
    if len(text) > 20:
        raise InvalidRequest(f'permission {text[:20]!r}... is not a file mode (e.g. "420" for 0644)')
    try:
        value: Any = json.loads(text)
    except ValueError:
        raise InvalidRequest(
            f'permission {text[:20]!r} is not a decimal number (e.g. "420" for 0644)'
        ) from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MODE:
        raise InvalidRequest(f"permission {text[:20]!r} must be a decimal integer between 0 and 511 (0777)")
    return value


def parse_tokens(raw: str) -> dict[str, str]:
    """``serviceAccount.tokens``: audience -> {"token": JWT, "expirationTimestamp": ...}."""
    try:
        value: Any = json.loads(raw, object_pairs_hook=_unique_members)
    except _Duplicate as exc:
        raise InvalidRequest(f"attribute {ATTR_TOKENS!r} names audience {str(exc)[:80]!r} twice") from None
    except (ValueError, RecursionError):
        raise InvalidRequest(f"attribute {ATTR_TOKENS!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"attribute {ATTR_TOKENS!r} must be a JSON object keyed by audience")
    if len(value) > MAX_AUDIENCES:
        raise InvalidRequest(
            f"attribute {ATTR_TOKENS!r} has {len(value)} audiences; at most {MAX_AUDIENCES} are accepted"
        )
    tokens: dict[str, str] = {}
    for audience, entry in value.items():
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token:
            raise InvalidRequest(
                f"attribute {ATTR_TOKENS!r}: audience {audience!r} has no string 'token' field"
            )
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidRequest(
                f"attribute {ATTR_TOKENS!r}: the token for audience {audience[:64]!r} is "
                f"{len(token) // 1024} KiB; a service-account token is a few KiB (limit "
                f"{MAX_TOKEN_BYTES // 1024} KiB)"
            )
        tokens[audience] = token
    return tokens


def _check_versions(versions: Mapping[str, str]) -> None:
    if len(versions) > MAX_VERSIONS:
        raise InvalidRequest(
            f"current_object_version lists {len(versions)} objects; an SPC has at most {MAX_VERSIONS}"
        )
    for object_id, version in versions.items():
        if len(object_id) > MAX_VERSION_FIELD or len(version) > MAX_VERSION_FIELD:
            raise InvalidRequest(
                f"current_object_version has an id or version longer than {MAX_VERSION_FIELD} characters"
            )


def _pod_tokens(attributes: dict[str, str], node_secrets: dict[str, str]) -> str:
    """The pod's tokens, from the attributes or, failing that, from the node-publish secrets.

    With ``serviceAccountTokenInSecrets: true`` on the CSIDriver (the driver's chart sets it on
    Kubernetes 1.35 and later), the kubelet hands the tokens over in the secrets field instead of
    the volume context. The driver copies them into the attributes as well, but an older or other
    driver may not. Either way the key is taken out of the node-publish secrets, so no backend
    ever reads a pod token as a secret of the node's.
    """
    from_secrets = node_secrets.pop(ATTR_TOKENS, "")
    return attributes.get(ATTR_TOKENS, "") or from_secrets


def parse(request: MountInput) -> MountContext:
    """Validate a MountInput; raises InvalidRequest naming the first problem found."""
    _check_size(
        request.attributes,
        "attributes",
        MAX_ATTRIBUTES_BYTES,
        "the API server stores at most 1.5 MiB per SPC",
    )
    _check_size(request.secrets, "secrets", MAX_SECRETS_BYTES, "a Kubernetes Secret holds at most 1 MiB")
    _check_versions(request.current_object_version)
    attributes = _json_string_map(request.attributes, "attributes", allow_empty=False)
    node_secrets = _json_string_map(request.secrets, "secrets", allow_empty=True)
    missing = [name for name in REQUIRED_POD_ATTRIBUTES if not attributes.get(name)]
    if missing:
        raise InvalidRequest(
            "attributes lack the pod identity the kubelet always sends: "
            + ", ".join(missing)
            + " (is this request coming from the Secrets Store CSI driver?)"
        )
    for name, rule, shape in IDENTITY_RULES:
        if not rule.fullmatch(attributes[name]):
            raise InvalidRequest(
                f"attribute {name!r} is {attributes[name][:80]!r}, which is not {shape}; "
                "the kubelet sends only valid Kubernetes names"
            )
    raw_tokens = _pod_tokens(attributes, node_secrets)
    tokens = parse_tokens(raw_tokens) if raw_tokens.strip() else {}
    target_path = request.target_path
    if "\x00" in target_path:
        raise InvalidRequest("target_path contains a NUL byte")
    if len(target_path) > MAX_TARGET_PATH:
        raise InvalidRequest(f"target_path is longer than {MAX_TARGET_PATH} characters (PATH_MAX)")
    pod = PodAttributes(
        namespace=attributes[ATTR_POD_NAMESPACE],
        name=attributes[ATTR_POD_NAME],
        uid=attributes[ATTR_POD_UID],
        service_account=attributes[ATTR_SERVICE_ACCOUNT],
    )
    return MountContext(
        pod=pod,
        spc_name=attributes.get(ATTR_SPC, ""),
        parameters=attributes,
        tokens=tokens,
        node_secrets=node_secrets,
        target_path=target_path,
        default_mode=parse_permission(request.permission),
        current_versions=dict(request.current_object_version),
        tokens_present=bool(raw_tokens.strip()),
    )
