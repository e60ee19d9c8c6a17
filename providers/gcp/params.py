"""The GCP Secret Manager backend's SPC vocabulary (the GCP provider's ``secrets`` list)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from provider.domain import SecretObject
from provider.errors import InvalidSPC
from providers.common import selectors
from providers.common.schema import Advisory, Marker, RuleInput, Schema, Spec

GLOBAL_RESOURCE = re.compile(r"projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)")
REGIONAL_RESOURCE = re.compile(r"projects/([^/]+)/locations/([^/]+)/secrets/([^/]+)/versions/([^/]+)")
PARAMETER_RESOURCE = re.compile(r"projects/([^/]+)/locations/([^/]+)/parameters/([^/]+)/versions/([^/]+)")
SELECTOR_RESOURCE = re.compile(
    r"(projects/[A-Za-z0-9][A-Za-z0-9.:_-]*(?:/locations/([^/]+))?)/secrets/([A-Za-z0-9_-]*)"
)
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
GLOBAL_LOCATION = "global"
LOCATION = re.compile(r"[a-z][a-z0-9-]{0,29}")
SERVICE_ACCOUNT_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
AUTH_POD = "pod-adc"
AUTH_PROVIDER = "provider-adc"
PROVIDER_ADC_WHAT = "auth: provider-adc (the keygate daemon's own Google credentials)"
PROVIDER_ADC_ADVICE = (
    "auth: provider-adc reads with the keygate daemon's own Google identity, shared by every pod on "
    "the node: the daemon refuses it unless the release policy rule covering the pod's namespace "
    "grants `nodeIdentity: [gcp]`"
)


@dataclass(frozen=True, slots=True)
class Resource:
    """What a ``resourceName`` selects: a Secret Manager secret version or a Parameter Manager
    parameter version, and the location whose endpoint serves it (None: the global one)."""

    parameter: bool
    location: str | None


def parse_target(name: str, where: str) -> Resource:
    """The service and location of a resource name; InvalidSPC naming the accepted forms otherwise."""
    parameter = PARAMETER_RESOURCE.fullmatch(name)
    regional = parameter or REGIONAL_RESOURCE.fullmatch(name)
    if regional:
        location = regional.group(2)
        if not LOCATION.fullmatch(location):
            raise InvalidSPC(f"{where}: location {location[:40]!r} is not a valid GCP location")
        if parameter is None:
            return Resource(False, location)
        return Resource(True, None if location == GLOBAL_LOCATION else location)
    if GLOBAL_RESOURCE.fullmatch(name):
        return Resource(False, None)
    raise InvalidSPC(
        f"{where}: resourceName must be projects/<project>/secrets/<secret>/versions/<version>, "
        "projects/<project>/locations/<location>/secrets/<secret>/versions/<version> or "
        "projects/<project>/locations/<location>/parameters/<parameter>/versions/<version> "
        "(Parameter Manager; <location> may be global)"
    )


@dataclass(frozen=True, slots=True)
class Listing:
    """What a selector's ``resourceName`` lists: the secrets of ``parent`` whose id starts with
    ``prefix``, on the endpoint of ``location`` (None: the global one)."""

    parent: str
    location: str | None
    prefix: str


def parse_listing(name: str, where: str) -> Listing:
    match = SELECTOR_RESOURCE.fullmatch(name)
    if match is None:
        raise InvalidSPC(
            f"{where}: a selector's resourceName is projects/<project>/secrets/<prefix> or "
            "projects/<project>/locations/<location>/secrets/<prefix> (Secret Manager; the prefix "
            "may be empty, each secret's latest version is read)"
        )
    location = match.group(2)
    if location is not None and not LOCATION.fullmatch(location):
        raise InvalidSPC(f"{where}: location {location[:40]!r} is not a valid GCP location")
    return Listing(match.group(1), location, match.group(3))


def label_filter(selector: selectors.Selector, where: str) -> list[str]:
    """The ``labels.<key>=<value>`` terms; keys and values must be GCP label syntax, which
    also keeps the filter string free of anything but those terms."""
    terms = []
    for key, value in selector.filters:
        if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
            raise InvalidSPC(
                f"{where}: selector label {key[:40]!r}: GCP label keys are lowercase letters, digits, "
                "_ and - (starting with a letter), values the same, up to 63 characters"
            )
        terms.append(f"labels.{key}={value}")
    return terms


def _selector(given: RuleInput) -> None:
    assert given.obj is not None
    label_filter(selectors.read(given.obj, "labels"), given.where)


def resource_name(obj: SecretObject) -> str:
    """The secret version to read: ``resourceName``, which an ``objects`` entry may pair with an
    ``objectName`` (a mixed SPC names every object), else the object's name."""
    return obj.str_field("resourceName") or obj.name


def delegates(raw: str, where: str) -> tuple[str, ...]:
    """``gcpServiceAccountDelegates``: a JSON list (as the GKE annotation) or a comma list."""
    text = raw.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise InvalidSPC(f"{where}: gcpServiceAccountDelegates is not a valid JSON list") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidSPC(f"{where}: gcpServiceAccountDelegates must be a list of e-mail addresses")
        items = [v.strip() for v in value]
    else:
        items = [v.strip() for v in text.split(",") if v.strip()]
    for item in items:
        if not SERVICE_ACCOUNT_EMAIL.fullmatch(item):
            raise InvalidSPC(f"{where}: delegate {item[:80]!r} is not a service-account e-mail")
    return tuple(items)


def _identity(given: RuleInput) -> None:
    gsa = given.parameters.text("gcpServiceAccount")
    if gsa and not SERVICE_ACCOUNT_EMAIL.fullmatch(gsa):
        raise InvalidSPC(f"parameter 'gcpServiceAccount' {gsa[:80]!r} is not a service-account e-mail")
    delegates(given.parameters.text("gcpServiceAccountDelegates"), "parameter 'gcpServiceAccountDelegates'")


def _provider_adc(given: RuleInput) -> None:
    """``auth: provider-adc`` reads as the daemon, shared by every pod: the backend checks the
    release policy grant per Mount; lint (no daemon settings) says that the grant is needed."""
    if given.parameters.text("auth") == AUTH_PROVIDER and given.settings is None:
        raise Advisory(PROVIDER_ADC_ADVICE, "auth")


def _object(given: RuleInput) -> None:
    assert given.obj is not None and given.fields is not None
    obj, fields, where = given.obj, given.fields, given.where
    if selectors.is_selector(obj):
        parse_listing(resource_name(obj), where)
    else:
        parse_target(resource_name(obj), where)
    file_name = obj.str_field("fileName")
    path = obj.str_field("path")
    named = obj.str_field("objectName") and obj.str_field("resourceName")
    if not (file_name or path or obj.str_field("objectAlias") or named):
        raise InvalidSPC(
            f"{where}: set fileName (or path) to name the file this secret is written to; "
            "the GCP provider requires one and keygate does too"
        )
    if file_name and path and file_name != path:
        raise InvalidSPC(f"{where}: set either fileName or path, not both with different values")
    if fields.text("extractJSONKey") and fields.text("extractYAMLKey"):
        raise InvalidSPC(f"{where}: set either extractJSONKey or extractYAMLKey, not both")


SCHEMA = Schema(
    backend="gcp",
    summary="GCP Secret Manager and Parameter Manager versions, read with the pod's workload identity.",
    parameters=(
        Spec("secrets", "the GCP provider's object list (resourceName + fileName/path entries)", kind="text"),
        Spec(
            "auth",
            f"{AUTH_POD} (the pod's workload identity) or {AUTH_PROVIDER} (the daemon's own; only where "
            "the release policy grants `nodeIdentity: [gcp]`)",
            kind="choice",
            choices=(AUTH_POD, AUTH_PROVIDER),
            invalid=f"parameter 'auth' is {{value!r}}; use {AUTH_POD!r} (the pod's workload identity, "
            f"the default) or {AUTH_PROVIDER!r} (the daemon's own credentials)",
        ),
        Spec(
            "workloadIdentityPool", "workload identity pool of the cluster", setting="workload_identity_pool"
        ),
        Spec("identityProvider", "identity provider of that pool", setting="identity_provider"),
        Spec(
            "workloadIdentityAudience",
            "STS audience (default: identitynamespace:<pool>:<provider>)",
            setting="workload_identity_audience",
        ),
        Spec("gcpServiceAccount", "Google service account to impersonate after the STS exchange"),
        Spec("gcpServiceAccountDelegates", "delegation chain for that impersonation (JSON or comma list)"),
    ),
    fields=(
        Spec(
            "resourceName",
            "projects/<p>/[locations/<l>/]secrets/<s>/versions/<v>, or a Parameter Manager version "
            "projects/<p>/locations/<l or global>/parameters/<n>/versions/<v>",
            marker=True,
        ),
        Spec("extractJSONKey", "write only this top-level string of a JSON payload"),
        Spec("extractYAMLKey", "write only this top-level string of a YAML payload"),
        selectors.spec(
            "labels",
            "whose id starts with the prefix in resourceName projects/<p>/[locations/<l>/]secrets/<prefix> "
            "(ListSecrets, latest versions)",
        ),
    ),
    object_markers=(Marker("resourceName"),),
    spc_rules=(_identity, _provider_adc),
    object_rules=(selectors.rule("labels", (), _selector), _object),
)
