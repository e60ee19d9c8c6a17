"""Wire a :class:`Config` into a ready :class:`Mounter` (the one place that knows all parts)."""

from __future__ import annotations

import logging

from provider.attest import Attestor, InsecureTrustAttributes
from provider.config import Config, describe, local_alternatives
from provider.errors import KeygateError
from provider.health import Readiness
from provider.mount import Mounter
from provider.target import TargetRules
from provider.versions import Versioner
from providers.registry import Registry

log = logging.getLogger("keygate")


def build_attestor(config: Config, readiness: Readiness | None = None) -> Attestor:
    """The pod attestor the config describes; refuses to start on a config that cannot verify.

    ``readiness`` receives the release policy's ``policy`` condition.
    """
    if config.insecure_skip_attestation:
        log.warning(
            "INSECURE: attestation is off (insecure_skip_attestation); any pod on this node "
            "can receive any secret its SPC names"
        )
        return InsecureTrustAttributes()
    from provider.attest.attestor import PodAttestor
    from provider.attest.issuer_keys import KeyRules
    from provider.attest.kube import KubeAPI
    from provider.attest.policy import PolicyStore
    from provider.attest.tokens import HTTPSettings, KeySource, OIDCKeys, StaticKeys, TokenVerifier

    if config.pod_watch and not config.node_name:
        raise KeygateError(
            f"pod_watch needs node_name: set {describe('node_name')} from the downward API (spec.nodeName)"
        )
    policy = PolicyStore(config.release_policy, readiness)
    need_kube = config.token_review or not config.insecure_skip_image_check
    kube = (
        KubeAPI(
            config.kube_api_url,
            config.kube_ca,
            config.kube_token_file,
            timeout=min(5.0, config.mount_timeout),
            watch_node=config.node_name if config.pod_watch else "",
        )
        if need_kube
        else None
    )
    keys: KeySource | None = None
    rules = KeyRules(allow_ed25519=config.token_allow_ed25519)
    if not config.token_review:
        if config.jwks_file or config.issuer_key_file:
            keys = StaticKeys(config.issuer_key_file, config.jwks_file, rules)
        elif config.issuer or config.jwks_url:
            http = (
                HTTPSettings(ca_file=kube.ca_file, api_url=kube.server, token_file=kube.token_file)
                if kube is not None
                else HTTPSettings(config.kube_ca, config.kube_api_url, config.kube_token_file)
            )
            keys = OIDCKeys(
                config.issuer,
                http,
                jwks_url=config.jwks_url,
                min_refresh=config.jwks_min_refresh,
                rules=rules,
            )
        else:
            raise KeygateError(
                f"attestation needs the service-account issuer: set {describe('issuer')} (the value "
                f"of kube-apiserver --service-account-issuer), or verify with the API server's "
                f"TokenReview: {describe('token_review')}; {local_alternatives()}"
            )
        if not config.issuer:
            raise KeygateError(
                f"set {describe('issuer')}: it is required with jwks_url, jwks_file or issuer_key_file "
                "(tokens' iss claim must match it)"
            )
    else:
        assert kube is not None
    verifier = TokenVerifier(
        audience=config.token_audience,
        issuer=config.issuer,
        keys=keys,
        kube=kube if config.token_review else None,
        clock_skew=config.clock_skew,
        node_name=config.node_name,
    )
    if config.insecure_skip_image_check:
        log.warning("INSECURE: the Pod is not read from the API; image digests are not checked")
    from provider.attest.signatures.checker import SignatureChecker
    from provider.attest.signatures.registry import RegistrySettings

    signatures = SignatureChecker(
        RegistrySettings(
            ca_file=config.signature_registry_ca,
            docker_config=config.signature_docker_config,
            timeout=min(config.signature_registry_timeout, config.mount_timeout / 2),
        ),
        cache_ttl=config.signature_cache_ttl,
    )
    return PodAttestor(
        verifier,
        policy,
        None if config.insecure_skip_image_check else kube,
        node_name=config.node_name,
        signatures=signatures,
    )


def build_mounter(config: Config, attestor: Attestor | None = None) -> Mounter:
    """Construct everything a Mount needs; fails fast (at start-up) on unreadable keys or an
    invalid release policy, so /readyz only ever reports a daemon that can serve."""
    from provider.attest.audit import AuditLog

    readiness = Readiness()
    readiness.set("keys", False, "loading")
    registry = Registry(config.backend_settings())
    if config.backend_settings()["sealed"]["keys"]:
        registry.get("sealed")
    versioner = (
        Versioner.from_file(config.version_key_file) if config.version_key_file else Versioner.random()
    )
    readiness.set("keys", True)
    if config.write_files and config.insecure_allow_write_files_off_tmpfs:
        log.warning("INSECURE: --write-files may write secrets into a target_path that is not on tmpfs")
    from provider.attest.service_accounts import ServiceAccounts

    service_accounts = ServiceAccounts(
        config.kube_api_url, config.kube_ca, config.kube_token_file, timeout=min(5.0, config.mount_timeout)
    )
    return Mounter(
        registry,
        attestor or build_attestor(config, readiness),
        versioner,
        timeout=config.mount_timeout,
        selector_max_objects=config.selector_max_objects,
        write_files=config.write_files,
        target_rules=TargetRules(
            config.kubelet_root_dir, allow_off_tmpfs=config.insecure_allow_write_files_off_tmpfs
        ),
        audit=AuditLog(config.audit_sink, config.node_name),
        readiness=readiness,
        service_accounts=service_accounts,
    )
