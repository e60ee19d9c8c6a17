"""The release policy: the cluster owner's rules on who may receive what.

The SPC (app team) says what to mount; this file (security team, mounted from a ConfigMap in the
daemon's namespace) says who may receive it. The first rule whose namespaces and service
accounts match the pod decides; objects outside its ``backends``/``objects`` are refused, so an
SPC can only narrow the policy. No rule matching -> ``default`` (``allow``: the SPC decides;
``deny``: refuse). Digest pinning is always required; ``images.signatures`` (per rule) also
requires signed images (:mod:`provider.attest.signatures`, docs/signatures.md).

``nodeIdentity`` (per rule, default none) lists the backends that may read *as the node* for the
pods the rule covers: Azure's VM managed identity (``useVMManagedIdentity``) and GCP's
``auth: provider-adc``. Those identities are shared by every pod on the node, so they are only
ever used where the policy grants them by name; no rule, or a rule without the key, refuses.

``revocation`` (per rule, ``remove`` or ``empty``, default unset) says what an object the pod
holds becomes when a rotation takes it back (:mod:`provider.revocation`); set, it overrides the
SPC's own ``revocation`` parameter. :meth:`Policy.refusals` asks "may this pod have these
objects" after attestation, without raising.

The file is re-read when it changes (checked with one ``stat`` per Mount). An invalid file stops
the daemon at start-up; an invalid edit later is logged and the last good policy stays in force.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provider.attest.entries import entry_name, known_mapping
from provider.attest.images import DIGEST_RE, ImageRules
from provider.attest.signatures.requirements import RequirementError, parse_requirements
from provider.domain import SecretObject
from provider.errors import KeygateError, PermissionDenied
from provider.health import Readiness

log = logging.getLogger("keygate.attest")

REF_FIELDS = ("secretPath", "resourceName")
RULE_KEYS = {
    "name",
    "namespaces",
    "serviceAccounts",
    "backends",
    "objects",
    "images",
    "nodeIdentity",
    "revocation",
}
REVOCATION_MODES = ("remove", "empty")
NODE_IDENTITY_KEY = "nodeIdentity"
NODE_IDENTITY_BACKENDS = ("azure", "gcp")
IMAGE_KEYS = {"allowedDigests", "allowedRepositories", "signatures"}


class PolicyError(KeygateError):
    """The release policy file is unusable."""


def object_ref(obj: SecretObject) -> str:
    """What a rule's object pattern is matched against: the field that selects the secret upstream.

    Vault's ``secretPath`` and GCP's ``resourceName`` name the secret; elsewhere ``objectName``
    does. A file alias chosen by the app team is never what is matched.
    """
    for key in REF_FIELDS:
        value = obj.spec.get(key)
        if isinstance(value, str) and value:
            return value
    return obj.name


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    namespaces: tuple[str, ...]
    service_accounts: tuple[str, ...] = ("*",)
    backends: tuple[str, ...] = ("*",)
    objects: tuple[str, ...] = ("*",)
    images: ImageRules = field(default_factory=ImageRules)
    node_identity: frozenset[str] = frozenset()
    revocation: str | None = None

    def covers(self, namespace: str, service_account: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces) and any(
            fnmatch.fnmatchcase(service_account, p) for p in self.service_accounts
        )

    def check_object(self, obj: SecretObject, namespace: str) -> None:
        if not any(fnmatch.fnmatchcase(obj.backend, p) for p in self.backends):
            raise PermissionDenied(
                f"release policy rule {self.name!r} does not allow backend {obj.backend!r} "
                f"(object {obj.name!r}; allowed backends: {', '.join(self.backends)})"
            )
        ref = object_ref(obj)
        patterns = [p.replace("{namespace}", namespace) for p in self.objects]
        if not any(fnmatch.fnmatchcase(ref, p) for p in patterns):
            raise PermissionDenied(
                f"release policy rule {self.name!r} does not allow object {ref!r} "
                f"(allowed: {', '.join(patterns)})"
            )


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default: str = "allow"
    source: str = "built-in default"

    def rule_for(self, namespace: str, service_account: str) -> Rule | None:
        for rule in self.rules:
            if rule.covers(namespace, service_account):
                return rule
        if self.default == "deny":
            raise PermissionDenied(
                f"no release policy rule covers service account {service_account!r} in namespace "
                f"{namespace!r}, and the policy's default is deny ({self.source})"
            )
        return None

    def refusals(
        self, namespace: str, service_account: str, objects: Sequence[SecretObject]
    ) -> dict[int, PermissionDenied]:
        """May this pod have these objects: the refusal per object index (empty: all allowed)."""
        return {
            obj.index: exc
            for obj, exc in zip(objects, self.refused_each(namespace, service_account, objects), strict=True)
            if exc is not None
        }

    def refused_each(
        self, namespace: str, service_account: str, objects: Sequence[SecretObject]
    ) -> list[PermissionDenied | None]:
        """The refusal of each object, in order (None: allowed); objects may share an index, as
        a selector's expansion does."""
        try:
            rule = self.rule_for(namespace, service_account)
        except PermissionDenied as exc:
            return [exc for _ in objects]
        if rule is None:
            return [None for _ in objects]
        out: list[PermissionDenied | None] = []
        for obj in objects:
            try:
                rule.check_object(obj, namespace)
                out.append(None)
            except PermissionDenied as exc:
                out.append(exc)
        return out

    def revocation_for(self, namespace: str, service_account: str) -> str | None:
        """The covering rule's ``revocation`` mode, or None where the policy leaves it to the SPC."""
        rule = next((r for r in self.rules if r.covers(namespace, service_account)), None)
        return rule.revocation if rule is not None else None


DEFAULT_POLICY = Policy()


def node_identity_refused(backend: str, what: str, namespace: str, service_account: str) -> PermissionDenied:
    """The refusal for a node identity the release policy does not grant, naming the key to set."""
    return PermissionDenied(
        f"{what} is the node's identity, shared by every pod on the node; the release policy does not "
        f"grant it to service account {service_account!r} in namespace {namespace!r}. A cluster admin "
        f"can allow it with `{NODE_IDENTITY_KEY}: [{backend}]` in the release policy rule covering "
        "that namespace; otherwise use the pod's workload identity"
    )


def _str_list(value: Any, where: str, *, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where} must be a non-empty list of strings")
    return tuple(value)


def parse_policy(text: str, source: str, base_dir: Path | None = None) -> Policy:
    """Parse and validate a policy document; raises PolicyError naming the first problem.

    Relative file names in it (signature keys, trust roots) are read from ``base_dir``, by
    default the directory of ``source`` (the ConfigMap's mount, where they sit beside it).
    """
    if base_dir is None:
        base_dir = Path(source).parent
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"release policy {source} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"release policy {source} must be a mapping with 'rules' (and optional 'default')")
    unknown = sorted(set(data) - {"apiVersion", "kind", "default", "rules"})
    if unknown:
        raise PolicyError(f"release policy {source}: unknown keys {', '.join(map(str, unknown))}")
    default = data.get("default", "allow")
    if default not in ("allow", "deny"):
        raise PolicyError(f"release policy {source}: default must be 'allow' or 'deny', not {default!r}")
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise PolicyError(f"release policy {source}: rules must be a list")
    rules: list[Rule] = []
    names: set[str] = set()
    for index, item in enumerate(raw_rules):
        where = f"release policy {source}: rules[{index}]"
        item = known_mapping(item, where, "a mapping", RULE_KEYS, PolicyError)
        name = entry_name(item, where, f"rules[{index}]", PolicyError)
        if name in names:
            raise PolicyError(f"{where}: rule name {name!r} is used twice")
        names.add(name)
        if "namespaces" not in item:
            raise PolicyError(f"{where} ({name}): 'namespaces' is required")
        images = item.get("images") or {}
        if not isinstance(images, dict):
            raise PolicyError(f"{where}: images must be a mapping")
        bad = sorted(set(map(str, images)) - IMAGE_KEYS)
        if bad:
            raise PolicyError(
                f"{where}: unknown image keys {', '.join(bad)} (allowed: {', '.join(sorted(IMAGE_KEYS))})"
            )
        node_identity = _str_list(item.get(NODE_IDENTITY_KEY), f"{where}.{NODE_IDENTITY_KEY}", default=())
        bad = sorted(set(node_identity) - set(NODE_IDENTITY_BACKENDS))
        if bad:
            raise PolicyError(
                f"{where}.{NODE_IDENTITY_KEY}: {', '.join(bad)} cannot read as the node "
                f"(backends with a node identity: {', '.join(NODE_IDENTITY_BACKENDS)})"
            )
        revocation = item.get("revocation")
        if revocation is not None and revocation not in REVOCATION_MODES:
            raise PolicyError(
                f"{where}.revocation must be one of {', '.join(REVOCATION_MODES)}, not {revocation!r}"
            )
        digests = _str_list(images.get("allowedDigests"), f"{where}.images.allowedDigests", default=())
        clean_digests = set()
        for digest in digests:
            value = digest.rpartition("@")[2] if "@" in digest else digest
            if not DIGEST_RE.fullmatch(value):
                raise PolicyError(f"{where}.images.allowedDigests: {digest!r} is not sha256:<64 hex>")
            clean_digests.add(value)
        try:
            signatures = parse_requirements(images.get("signatures"), f"{where}.images.signatures", base_dir)
        except RequirementError as exc:
            raise PolicyError(exc.message) from None
        rules.append(
            Rule(
                name=name,
                namespaces=_str_list(item.get("namespaces"), f"{where}.namespaces", default=()),
                service_accounts=_str_list(
                    item.get("serviceAccounts"), f"{where}.serviceAccounts", default=("*",)
                ),
                backends=_str_list(item.get("backends"), f"{where}.backends", default=("*",)),
                objects=_str_list(item.get("objects"), f"{where}.objects", default=("*",)),
                images=ImageRules(
                    allowed_digests=frozenset(clean_digests),
                    allowed_repositories=_str_list(
                        images.get("allowedRepositories"), f"{where}.images.allowedRepositories", default=()
                    ),
                    signatures=signatures,
                ),
                node_identity=frozenset(node_identity),
                revocation=revocation,
            )
        )
    return Policy(rules=tuple(rules), default=default, source=source)


class PolicyStore:
    """The policy in force; re-reads its file when the file's identity or mtime changes."""

    def __init__(self, path: str = "", readiness: Readiness | None = None) -> None:
        self.path = path
        self.policy = DEFAULT_POLICY
        self.stamp: tuple[int, int, int, int] | None = None
        self.last_error = ""
        self.reloads = 0
        self.readiness = readiness
        self._ready(False, "loading")
        if path:
            stamp = self._stat()
            if stamp is None:
                raise PolicyError(
                    f"release policy file {path} does not exist (remove release_policy to use the default)"
                )
            self.policy = self._read()
            self.stamp = stamp
        self._ready(True, "")

    def _ready(self, ok: bool, problem: str) -> None:
        """The ``policy`` readiness condition: ready once a policy is loaded, and it stays ready.

        A failed reload leaves the last good policy enforced, so the daemon keeps serving; the
        detail says so, next to the log line, until a good file replaces it.
        """
        if self.readiness is None:
            return
        if problem and ok:
            detail = f"enforcing the last good policy ({self.policy.source}); {problem}"
        else:
            detail = problem or f"loaded from {self.policy.source}"
        self.readiness.set("policy", ok, detail)

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> Policy:
        try:
            text = Path(self.path).read_text()
        except OSError as exc:
            raise PolicyError(
                f"cannot read release policy {self.path}: {os.strerror(exc.errno or 0)}"
            ) from None
        return parse_policy(text, self.path)

    def current(self) -> Policy:
        if not self.path:
            return self.policy
        stamp = self._stat()
        if stamp is not None and self.last_error == "missing" and stamp == self.stamp:
            self.last_error = ""
            self._ready(True, "")
        if stamp is None or stamp == self.stamp:
            if stamp is None and self.last_error != "missing":
                self.last_error = "missing"
                log.error(
                    "release policy file vanished; keeping the last good policy", extra={"path": self.path}
                )
                self._ready(True, "the file is missing")
            return self.policy
        self.stamp = stamp
        try:
            self.policy = self._read()
        except PolicyError as exc:
            self.last_error = exc.message
            log.error(
                "release policy reload failed; keeping the last good policy",
                extra={"path": self.path, "error": exc.message},
            )
            self._ready(True, f"reload failed: {exc.message}")
        else:
            self.last_error = ""
            self.reloads += 1
            self._ready(True, "")
            log.info("release policy reloaded", extra={"path": self.path, "rules": len(self.policy.rules)})
        return self.policy
