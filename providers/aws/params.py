"""The AWS backend's SPC vocabulary (the AWS provider's names), and each object's resolved reads.

Everything here is pure: the same plan is made when lint checks an SPC and when a Mount runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provider.domain import SecretObject
from provider.errors import InvalidSPC
from provider.spc import PATH_FIELDS
from providers.common import readers, selectors
from providers.common.extract import compile_jmes
from providers.common.schema import Marker, RuleInput, Schema, Spec, Values

SECRETS_MANAGER = "secretsmanager"
SSM_PARAMETER = "ssmparameter"
OBJECT_TYPES = (SECRETS_MANAGER, SSM_PARAMETER)
TYPE_BY_ARN_SERVICE = {"secretsmanager": SECRETS_MANAGER, "ssm": SSM_PARAMETER}
ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
ARN_MARKER = r"arn:[A-Za-z0-9-]+:(secretsmanager|ssm):"
ARN_RE = re.compile(
    r"\Aarn:(?P<partition>[A-Za-z0-9-]+):(?P<service>[A-Za-z0-9-]+):(?P<region>[A-Za-z0-9-]*):"
    r"(?P<account>[0-9]*):(?P<resource>.+)\Z"
)
REGION_RE = re.compile(r"\A[a-z]{2}(-[a-z]+)+-[0-9]+\Z")


def translate_path(name: str, parameters: Mapping[str, str]) -> str:
    """``name`` with "/" replaced per ``pathTranslation`` (default "_"; "False" keeps it)."""
    raw = parameters.get("pathTranslation")
    if raw is None or raw == "":
        return name.replace("/", "_")
    if raw.lower() == "false":
        return name
    if len(raw) != 1 or raw in ("\x00", "\\"):
        raise InvalidSPC(
            f"parameter 'pathTranslation' must be a single character or \"False\", not {raw[:20]!r}"
        )
    return name.replace("/", raw)


def default_path(item: Mapping[str, Any], parameters: Mapping[str, str]) -> str:
    """The file name for an object without objectAlias: its name with "/" translated (a
    selector's prefix without its leading and trailing "/": its files' directory)."""
    name = str(item.get("objectName", ""))
    if item.get(selectors.FIELD) is not None:
        name = name.strip("/") or name
    return translate_path(name, parameters)


@dataclass(frozen=True, slots=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str

    @classmethod
    def parse(cls, text: str) -> Arn | None:
        match = ARN_RE.match(text)
        return cls(**match.groupdict()) if match else None

    def with_region(self, region: str) -> str:
        return f"arn:{self.partition}:{self.service}:{region}:{self.account}:{self.resource}"


@dataclass(frozen=True, slots=True)
class Target:
    """One AWS read: what to ask for, where."""

    object_type: str
    name: str
    region: str
    version: str = ""
    label: str = ""

    @property
    def ssm_request(self) -> str:
        """The GetParameters name with its selector (``name:3`` or ``name:label``)."""
        selector = self.version or self.label
        return f"{self.name}:{selector}" if selector else self.name


@dataclass(frozen=True, slots=True)
class JmesEntry:
    path: str
    alias: str


@dataclass(frozen=True, slots=True)
class Plan:
    """An SPC object resolved to its primary read, optional failover read and extractions."""

    obj: SecretObject
    primary: Target
    failover: Target | None
    jmes: tuple[JmesEntry, ...]

    @property
    def where(self) -> str:
        return f"objects[{self.obj.index}] {self.obj.name!r}"


def _type_of(name: str, declared: str, where: str, region: str) -> str:
    arn = Arn.parse(name) if name.startswith("arn:") else None
    declared = declared.lower()
    if name.startswith("arn:"):
        if arn is None or arn.service not in TYPE_BY_ARN_SERVICE:
            raise InvalidSPC(
                f"{where}: objectName looks like an ARN but is not a Secrets Manager or SSM parameter ARN"
            )
        from_arn = TYPE_BY_ARN_SERVICE[arn.service]
        if declared and declared != from_arn:
            raise InvalidSPC(
                f"{where}: objectType {declared!r} does not match the ARN's service ({from_arn})"
            )
        if arn.region and region and arn.region != region:
            raise InvalidSPC(f"{where}: the ARN's region {arn.region} is not the SPC region {region}")
        return from_arn
    if declared not in OBJECT_TYPES:
        raise InvalidSPC(
            f"{where}: objectType must be 'secretsmanager' or 'ssmparameter' "
            f"(or give a full ARN as objectName), not {declared[:40]!r}"
        )
    return declared


def _version_fields(spec: Mapping[str, Any], object_type: str, where: str) -> tuple[str, str]:
    version = readers.string(spec.get("objectVersion"), f"{where}: objectVersion")
    label = readers.string(spec.get("objectVersionLabel"), f"{where}: objectVersionLabel")
    if object_type == SSM_PARAMETER:
        if version and label:
            raise InvalidSPC(f"{where}: an SSM parameter takes objectVersion or objectVersionLabel, not both")
        if version and not version.isdigit():
            raise InvalidSPC(f"{where}: objectVersion of an SSM parameter must be a version number")
    elif version and not 32 <= len(version) <= 64:
        raise InvalidSPC(f"{where}: objectVersion must be a Secrets Manager VersionId (32 to 64 characters)")
    return version, label


def _jmes_entries(raw: Any, where: str, compile_paths: bool = True) -> tuple[JmesEntry, ...]:
    """The ``jmesPath`` entries; ``compile_paths=False`` only reads their shape and aliases (no
    jmespath needed, so lint without the AWS extra still knows the files they add)."""
    if raw in (None, ""):
        return ()
    if not isinstance(raw, list) or not raw:
        raise InvalidSPC(f"{where}: jmesPath must be a list of {{path, objectAlias}} entries")
    entries: list[JmesEntry] = []
    for i, entry in enumerate(raw):
        at = f"{where}: jmesPath[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidSPC(f"{at} must be a mapping with 'path' and 'objectAlias'")
        path = readers.string(entry.get("path"), f"{at}: path")
        alias = readers.string(entry.get("objectAlias"), f"{at}: objectAlias")
        if not path or not alias:
            raise InvalidSPC(f"{at} needs both 'path' and 'objectAlias'")
        if compile_paths:
            compile_jmes(path)
        entries.append(JmesEntry(path, alias))
    return tuple(entries)


def plan(obj: SecretObject, values: Values, parameters: Mapping[str, str]) -> Plan:
    """Resolve one object against the SPC's values; raises InvalidSPC naming the field at fault."""
    where = f"objects[{obj.index}] {obj.name!r}"
    region = values.text("region")
    failover_region = values.text("failoverRegion")
    translate_path(obj.name, parameters)
    spec = obj.spec
    object_type = _type_of(obj.name, obj.str_field("objectType"), where, region)
    version, label = _version_fields(spec, object_type, where)
    primary = Target(object_type, obj.name, region, version, label)
    failover: Target | None = None
    raw_failover = spec.get("failoverObject")
    if raw_failover not in (None, ""):
        if not failover_region:
            raise InvalidSPC(f"{where}: failoverObject needs the SPC parameter 'failoverRegion'")
        if not isinstance(raw_failover, Mapping):
            raise InvalidSPC(f"{where}: failoverObject must be a mapping with objectName")
        f_where = f"{where}: failoverObject"
        f_name = readers.string(raw_failover.get("objectName"), f"{f_where}: objectName")
        if not f_name:
            raise InvalidSPC(f"{f_where}: objectName is required")
        if not any(spec.get(key) for key in PATH_FIELDS):
            raise InvalidSPC(
                f"{where}: an object with failoverObject needs objectAlias, so its file name does not "
                "depend on the region it was read from"
            )
        f_type = _type_of(f_name, object_type, f_where, failover_region)
        f_version, f_label = _version_fields(raw_failover, f_type, f_where)
        if f_version and f_version != version:
            raise InvalidSPC(
                f"{f_where}: objectVersion must equal the object's own objectVersion (or be left out)"
            )
        failover = Target(f_type, f_name, failover_region, f_version or version, f_label or label)
    elif failover_region:
        arn = Arn.parse(obj.name)
        name = arn.with_region(failover_region) if arn and arn.region else obj.name
        failover = Target(object_type, name, failover_region, version, label)
    return Plan(obj, primary, failover, _jmes_entries(spec.get("jmesPath"), where))


def derived_paths(obj: SecretObject, parameters: Mapping[str, str]) -> tuple[str, ...]:
    """The files of the object's ``jmesPath`` entries, named as the backend writes them."""
    entries = _jmes_entries(obj.spec.get("jmesPath"), f"objects[{obj.index}] {obj.name!r}", False)
    return tuple(translate_path(entry.alias, parameters) for entry in entries)


def _regions(given: RuleInput) -> None:
    values = given.parameters
    region, failover = values.text("region"), values.text("failoverRegion")
    if region and not REGION_RE.fullmatch(region):
        raise InvalidSPC(f"parameter 'region' {region[:40]!r} is not an AWS region name")
    if failover and not REGION_RE.fullmatch(failover):
        raise InvalidSPC(f"parameter 'failoverRegion' {failover[:40]!r} is not an AWS region name")
    if failover and failover == region:
        raise InvalidSPC("parameter 'failoverRegion' must differ from 'region'")


def fill_region(values: Values, region: str) -> Values:
    """``values`` with ``region`` filled in (from the node's label); re-checks failoverRegion."""
    if values.text("failoverRegion") == region:
        raise InvalidSPC(
            f"parameter 'failoverRegion' must differ from the region ({region}, the node's label)"
        )
    return Values({**{name: values.get(name) for name in values}, "region": region}, values.given)


def _pod_identity(given: RuleInput) -> None:
    if given.parameters.flag("usePodIdentity") and given.parameters.text("roleArn"):
        raise InvalidSPC(
            "parameter 'roleArn' is not used with usePodIdentity: the role comes from the EKS Pod "
            "Identity association of the service account; remove one of them"
        )


def _path_translation(given: RuleInput) -> None:
    translate_path("", {"pathTranslation": given.parameters.text("pathTranslation")})


def _object(given: RuleInput) -> None:
    assert given.obj is not None
    raw = {"pathTranslation": given.parameters.text("pathTranslation")}
    plan(given.obj, given.parameters, raw)
    alias = given.obj.spec.get("objectAlias")
    if isinstance(alias, str):
        translate_path(alias, raw)


def _selector(given: RuleInput) -> None:
    """An AWS selector names a prefix (not an ARN) of one service; tags are Secrets Manager's."""
    assert given.obj is not None
    obj = given.obj
    if obj.name.startswith("arn:"):
        raise InvalidSPC(f"{given.where}: a selector's objectName is a name prefix or path, not an ARN")
    object_type = obj.str_field("objectType").lower()
    if object_type not in OBJECT_TYPES:
        raise InvalidSPC(f"{given.where}: a selector needs objectType secretsmanager or ssmparameter")
    raw = obj.spec.get(selectors.FIELD)
    if object_type == SSM_PARAMETER and isinstance(raw, Mapping) and raw.get("tags"):
        raise InvalidSPC(f"{given.where}: selector tags are for Secrets Manager; SSM selects by path")


SELECTOR_REFUSED = ("objectVersion", "objectVersionLabel", "jmesPath", "failoverObject")

SCHEMA = Schema(
    backend="aws",
    summary="AWS Secrets Manager and SSM Parameter Store, with the pod's own IAM role "
    "(IRSA or EKS Pod Identity).",
    parameters=(
        Spec(
            "region",
            "AWS region of the secrets, e.g. eu-west-1 (unset: the node's "
            "topology.kubernetes.io/region label)",
            setting="region",
            marker=True,
        ),
        Spec("failoverRegion", "region read when the primary region is unavailable", marker=True),
        Spec("pathTranslation", 'character that replaces "/" in file names ("False" keeps it)', marker=True),
        Spec("roleArn", f"IAM role the pod assumes (default: the service account's {ROLE_ANNOTATION})"),
        Spec(
            "usePodIdentity",
            "true: credentials from the node's EKS Pod Identity Agent (pod token for "
            "pods.eks.amazonaws.com) instead of IRSA",
            kind="bool",
        ),
        Spec(
            "preferredAddressType",
            "Pod Identity Agent address: ipv4, ipv6 or auto (IPv4, then IPv6 if IPv4 is unreachable)",
            kind="choice",
            choices=("auto", "ipv4", "ipv6"),
            invalid="{where} must be ipv4, ipv6 or auto, not {value!r}",
        ),
    ),
    fields=(
        Spec("objectType", "secretsmanager or ssmparameter (implied by an ARN objectName)"),
        Spec("objectVersion", "Secrets Manager VersionId or SSM parameter version"),
        Spec("objectVersionLabel", "Secrets Manager staging label or SSM parameter label"),
        Spec(
            "jmesPath",
            "list of {path, objectAlias}: JSON values written to their own files",
            kind="list",
            invalid="{where} must be a list of {{path, objectAlias}} entries",
            entries=("path", "objectAlias", "filePermission"),
        ),
        Spec(
            "failoverObject",
            "{objectName, ...} read in failoverRegion instead of this object",
            kind="mapping",
            invalid="{where} must be a mapping with objectName",
            entries=("objectName", "objectVersion", "objectVersionLabel"),
        ),
        selectors.spec(
            "tags",
            "whose name starts with objectName (Secrets Manager ListSecrets) or below its path "
            "(SSM GetParametersByPath)",
        ),
    ),
    object_markers=(Marker("objectType", values=OBJECT_TYPES), Marker("objectName", pattern=ARN_MARKER)),
    spc_rules=(_regions, _pod_identity, _path_translation),
    object_rules=(selectors.rule("tags", SELECTOR_REFUSED, _selector), _object),
    default_path=default_path,
    # The AWS provider decodes objects with sigs.k8s.io/yaml, i.e. through encoding/json.
    field_case="go-json",
    peer_fields=("objectName", "objectAlias", "filePermission"),
    derived_paths=derived_paths,
)
