"""cosign key-based image signatures in the release policy, through real attested Mounts.

The images, keys and signatures are made here and pushed to a real HTTPS OCI registry
(keygate_dev/oci_registry.py); the Pod comes from the local Kubernetes API; the daemon reads the
signature artifact, verifies it and releases or refuses. Each negative case builds exactly the
artifact an attacker (or a careless pipeline) could push.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keygate_dev.devcluster import PodSpec
from keygate_dev.oci_registry import OCIRegistry, running_registry
from keygate_dev.signing import (
    CosignKey,
    cosign_sign,
    layer,
    payload,
    push_signatures,
    signature_tag,
)
from tests.adversarial import refused, released, request_for
from tests.kubeapi import DevCluster, make_pod

DENIED = "PermissionDenied"
UNAVAILABLE = "BackendUnavailable"
REPO = "acme/app"


@pytest.fixture
def registry(short_tmp: Path) -> Iterator[OCIRegistry]:
    with running_registry(short_tmp) as reg:
        yield reg


@pytest.fixture
def cosign_key() -> CosignKey:
    return CosignKey.generate("p256")


def policy_text(*requirements: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    rule: dict[str, Any] = {
        "name": "signed",
        "namespaces": ["default"],
        "images": {"signatures": list(requirements)},
    }
    rule.update(extra or {})
    return json.dumps({"default": "deny", "rules": [rule]})


@dataclass
class Env:
    kube: DevCluster
    registry: OCIRegistry
    key: CosignKey
    tmp: Path
    start: Callable[..., Any]
    node_key: Any

    def write_policy(self, *requirements: dict[str, Any], **extra: Any) -> Path:
        path = self.tmp / "policy.yaml"
        path.write_text(policy_text(*requirements, extra=extra or None))
        return path

    def daemon(self, *requirements: dict[str, Any], **overrides: Any) -> Any:
        if not requirements:
            self.key.write_public(self.tmp / "cosign.pub")
            requirements = ({"name": "release-key", "publicKeys": ["cosign.pub"]},)
        settings: dict[str, Any] = {
            "release_policy": str(self.write_policy(*requirements)),
            "signature_registry_ca": str(self.registry.ca_file),
        }
        settings.update(overrides)
        return self.start(**settings)

    def image(self, name: str = REPO, *, sign: bool = True, **critical: Any) -> str:
        digest = self.registry.push_image(name)
        if sign:
            cosign_sign(self.registry, name, digest, self.key, **critical)
        return f"{self.registry.host}/{name}@{digest}"

    def pod(self, **kwargs: Any) -> PodSpec:
        return make_pod(self.kube, **kwargs)

    def request(self, pod: PodSpec) -> Any:
        return request_for(self.node_key, pod, self.kube.mint(pod))


@pytest.fixture
def env(attest_daemon, kube, registry, cosign_key, short_tmp, node_key) -> Env:
    return Env(kube, registry, cosign_key, short_tmp, attest_daemon, node_key)


def digest_of(image: str) -> str:
    return image.rpartition("@")[2]


# -- releases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048", "rsa3072"])
def test_signed_image_is_released(env: Env, kind: str):
    env.key = CosignKey.generate(kind)
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    released(d, env.request(pod))
    record = d.audit_records()[-1]
    assert record["decision"] == "release"


def test_every_container_kind_signed_is_released(env: Env):
    d = env.daemon()
    app, init, debug = env.image("acme/app"), env.image("acme/migrate"), env.image("acme/debug")
    pod = env.pod(
        images={"app": app, "sidecar": app}, init_images={"migrate": init}, ephemeral_images={"dbg": debug}
    )
    released(d, env.request(pod))
    sig_reads = [p for m, p in env.registry.hits if p.endswith(".sig")]
    assert len(sig_reads) == 3, "each distinct image's signature is read once"


def test_one_valid_signature_among_several_layers_passes(env: Env):
    d = env.daemon()
    digest = env.registry.push_image(REPO)
    other = CosignKey.generate()
    good = payload(f"{env.registry.host}/{REPO}", digest)
    layers = [
        layer(env.registry, REPO, good, other.sign(good)),
        layer(env.registry, REPO, good, env.key.sign(good)),
    ]
    push_signatures(env.registry, REPO, digest, layers)
    released(d, env.request(env.pod(images={"app": f"{env.registry.host}/{REPO}@{digest}"})))


def test_inline_pem_and_key_rotation(env: Env):
    old, new = CosignKey.generate(), env.key
    d = env.daemon({"name": "rotating", "publicKeys": [old.public_pem().decode(), new.public_pem().decode()]})
    released(d, env.request(env.pod(images={"app": env.image()})))


def test_requirement_scoped_to_repositories(env: Env):
    env.key.write_public(env.tmp / "cosign.pub")
    d = env.daemon(
        {"name": "ours", "publicKeys": ["cosign.pub"], "repositories": [f"{env.registry.host}/acme"]}
    )
    vendor = env.image("vendor/proxy", sign=False)
    released(d, env.request(env.pod(images={"app": env.image(), "proxy": vendor})))


def test_every_requirement_applies(env: Env):
    second = CosignKey.generate()
    env.key.write_public(env.tmp / "ci.pub")
    second.write_public(env.tmp / "qa.pub")
    d = env.daemon({"name": "ci", "publicKeys": ["ci.pub"]}, {"name": "qa", "publicKeys": ["qa.pub"]})
    image = env.image()
    pod = env.pod(images={"app": image})
    details = refused(d, env.request(pod), DENIED, "requirement 'qa'", "not signed by the policy's key")
    assert "container `app`" in details
    # a second signature by the QA key, appended as cosign does
    digest = digest_of(image)
    data = payload(f"{env.registry.host}/{REPO}", digest)
    push_signatures(
        env.registry,
        REPO,
        digest,
        [
            layer(env.registry, REPO, data, env.key.sign(data)),
            layer(env.registry, REPO, data, second.sign(data)),
        ],
    )
    released(d, env.request(pod))


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_pull_credentials_from_docker_config(
    short_tmp: Path, attest_daemon, kube, cosign_key, node_key, auth: str
):
    with running_registry(short_tmp, auth=auth) as reg:
        e = Env(kube, reg, cosign_key, short_tmp, attest_daemon, node_key)
        config = reg.docker_config(short_tmp / "config.json")
        d = e.daemon(signature_docker_config=str(config))
        released(d, e.request(e.pod(images={"app": e.image()})))
        assert "puller" not in d.log_text() and reg.password not in d.log_text()


def test_rule_without_signatures_reads_no_registry(env: Env):
    path = env.tmp / "policy.yaml"
    path.write_text(json.dumps({"rules": [{"name": "plain", "namespaces": ["default"]}]}))
    d = env.start(release_policy=str(path))
    released(d, env.request(env.pod(images={"app": env.image(sign=False)})))
    assert not [h for h in env.registry.hits if h[1].endswith(".sig")]


# -- refusals -----------------------------------------------------------------------------------


def _other_digest_signature(env: Env) -> str:
    image = env.image(sign=False)
    other = env.registry.push_image(REPO, tag="other")
    signed = payload(f"{env.registry.host}/{REPO}", other)
    push_signatures(
        env.registry, REPO, digest_of(image), [layer(env.registry, REPO, signed, env.key.sign(signed))]
    )
    return image


def _another_key(env: Env) -> str:
    digest = env.registry.push_image(REPO)
    cosign_sign(env.registry, REPO, digest, CosignKey.generate())
    return f"{env.registry.host}/{REPO}@{digest}"


def _tampered_blob(env: Env) -> str:
    image = env.image()
    data = payload(f"{env.registry.host}/{REPO}", digest_of(image))
    from keygate_dev.oci_registry import digest_of as blob_digest

    env.registry.blob_override[blob_digest(data)] = data.replace(b"cosign container", b"cosign-container")
    return image


def _tampered_payload(env: Env) -> str:
    image = env.image(sign=False)
    digest = digest_of(image)
    original = payload(f"{env.registry.host}/{REPO}", digest)
    changed = payload(f"{env.registry.host}/{REPO}", digest, optional_note="x")
    push_signatures(env.registry, REPO, digest, [layer(env.registry, REPO, changed, env.key.sign(original))])
    return image


def _tampered_signature(env: Env) -> str:
    image = env.image(sign=False)
    digest = digest_of(image)
    data = payload(f"{env.registry.host}/{REPO}", digest)
    signature = bytearray(env.key.sign(data))
    signature[-3] ^= 0x01
    push_signatures(env.registry, REPO, digest, [layer(env.registry, REPO, data, bytes(signature))])
    return image


def _signature_not_base64(env: Env) -> str:
    image = env.image(sign=False)
    data = payload(f"{env.registry.host}/{REPO}", digest_of(image))
    push_signatures(env.registry, REPO, digest_of(image), [layer(env.registry, REPO, data, "not base64!!")])
    return image


def _duplicate_keys(env: Env) -> str:
    image = env.image(sign=False)
    digest = digest_of(image)
    good = payload(f"{env.registry.host}/{REPO}", digest).decode()
    data = ('{"critical":{"type":"other"},' + good[1:]).encode()
    push_signatures(env.registry, REPO, digest, [layer(env.registry, REPO, data, env.key.sign(data))])
    return image


def _index_at_sig_tag(env: Env) -> str:
    image = env.image(sign=False)
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    )
    env.registry.push_manifest(
        REPO, body.encode(), "application/vnd.oci.image.index.v1+json", tag=signature_tag(digest_of(image))
    )
    return image


def _no_signing_layers(env: Env) -> str:
    image = env.image(sign=False)
    blob = b"not a signature"
    push_signatures(
        env.registry,
        REPO,
        digest_of(image),
        [
            {
                "mediaType": "application/octet-stream",
                "digest": env.registry.push_blob(REPO, blob),
                "size": len(blob),
            }
        ],
    )
    return image


def _too_many_layers(env: Env) -> str:
    image = env.image(sign=False)
    data = payload(f"{env.registry.host}/{REPO}", digest_of(image))
    other = CosignKey.generate()
    push_signatures(
        env.registry, REPO, digest_of(image), [layer(env.registry, REPO, data, other.sign(data))] * 33
    )
    return image


def _missing_payload_blob(env: Env) -> str:
    image = env.image(sign=False)
    data = payload(f"{env.registry.host}/{REPO}", digest_of(image))
    entry = layer(env.registry, REPO, data, env.key.sign(data))
    env.registry.repo(REPO).blobs.pop(entry["digest"])
    push_signatures(env.registry, REPO, digest_of(image), [entry])
    return image


def _unknown_repository(env: Env) -> str:
    return f"{env.registry.host}/acme/never-pushed@sha256:{'ab' * 32}"


REFUSALS: list[tuple[str, Callable[[Env], str], str, tuple[str, ...]]] = [
    (
        "unsigned",
        lambda e: e.image(sign=False),
        "signature_missing",
        ("has no signature", "cosign sign --key"),
    ),
    ("unknown_repository", _unknown_repository, "signature_missing", ("has no signature",)),
    ("another_key", _another_key, "signature_invalid", ("not signed by the policy's key",)),
    ("another_digest", _other_digest_signature, "signature_digest_mismatch", ("for image digest sha256:",)),
    ("tampered_blob", _tampered_blob, "signature_invalid", ("does not match its digest",)),
    ("tampered_payload", _tampered_payload, "signature_invalid", ("not signed by the policy's key",)),
    ("tampered_signature", _tampered_signature, "signature_invalid", ("not signed by the policy's key",)),
    ("signature_not_base64", _signature_not_base64, "signature_missing", ("no simple-signing layer",)),
    (
        "wrong_type",
        lambda e: e.image(type="cosign container image attestation"),
        "signature_invalid",
        ("of type",),
    ),
    ("no_type", lambda e: e.image(type=...), "signature_invalid", ("of type 'None'",)),
    ("no_digest", lambda e: e.image(image={}), "signature_digest_mismatch", ("for image digest None",)),
    (
        "other_repository",
        lambda e: e.image(identity={"docker-reference": "ghcr.io/evil/app"}),
        "signature_identity_mismatch",
        ("made for repository 'ghcr.io/evil/app'",),
    ),
    (
        "repository_prefix_only",
        lambda e: e.image(identity={"docker-reference": f"{e.registry.host}/acme"}),
        "signature_identity_mismatch",
        ("made for repository",),
    ),
    (
        "no_identity",
        lambda e: e.image(identity=...),
        "signature_identity_mismatch",
        ("made for repository 'None'",),
    ),
    ("duplicate_keys", _duplicate_keys, "signature_invalid", ("not valid JSON",)),
    ("index_at_sig_tag", _index_at_sig_tag, "signature_invalid", ("not an OCI image manifest",)),
    ("no_signing_layers", _no_signing_layers, "signature_missing", ("no simple-signing layer",)),
    ("too_many_layers", _too_many_layers, "signature_invalid", ("over keygate's limit of 32",)),
    ("missing_payload_blob", _missing_payload_blob, "signature_invalid", ("is missing",)),
]


@pytest.mark.parametrize(("case", "build", "reason", "fragments"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused(env: Env, case: str, build: Callable[[Env], str], reason: str, fragments: tuple[str, ...]):
    d = env.daemon()
    image = build(env)
    pod = env.pod(images={"app": image})
    details = refused(
        d, env.request(pod), DENIED, "container `app`", image, "requirement 'release-key'", *fragments
    )
    assert "pod default/app-0" in details
    record = d.audit_records()[-1]
    assert record["decision"] == "deny" and record["denial_reason"] == reason, record
    assert record["image"] == image and record["container"] == "app"


def test_one_container_of_several_unsigned(env: Env):
    d = env.daemon()
    unsigned = env.image("acme/sidecar", sign=False)
    pod = env.pod(images={"app": env.image(), "sidecar": unsigned})
    refused(d, env.request(pod), DENIED, "container `sidecar`", unsigned, "has no signature")


def test_init_container_unsigned(env: Env):
    d = env.daemon()
    unsigned = env.image("acme/migrate", sign=False)
    pod = env.pod(images={"app": env.image()}, init_images={"migrate": unsigned})
    refused(d, env.request(pod), DENIED, "initContainer `migrate`", "has no signature")


def test_ephemeral_container_unsigned(env: Env):
    d = env.daemon()
    unsigned = env.image("acme/debug", sign=False)
    pod = env.pod(images={"app": env.image()}, ephemeral_images={"debug": unsigned})
    refused(d, env.request(pod), DENIED, "ephemeralContainer `debug`", "has no signature")


def test_signature_removed_is_refused_after_cache_expiry(env: Env):
    d = env.daemon(signature_cache_ttl=0.3)
    image = env.image()
    pod = env.pod(images={"app": image})
    released(d, env.request(pod))
    env.registry.delete_tag(REPO, signature_tag(digest_of(image)))
    time.sleep(0.4)
    refused(d, env.request(pod), DENIED, "has no signature")


# -- the registry failing -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_registry_error_status_fails_closed(env: Env, status: int):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    env.registry.fail_status = status
    details = refused(d, env.request(pod), UNAVAILABLE, "container `app`", f"answered HTTP {status}")
    assert d.audit_records()[-1]["denial_reason"] == "registry_unreachable"
    assert "requirement 'release-key'" in details


def test_registry_timeout_fails_closed(env: Env):
    d = env.daemon(signature_registry_timeout=0.5)
    pod = env.pod(images={"app": env.image()})
    env.registry.delay = 1.5
    refused(d, env.request(pod), UNAVAILABLE, "did not answer within 0.5s")


def test_registry_tls_untrusted_fails_closed(env: Env):
    d = env.daemon(signature_registry_ca="")
    pod = env.pod(images={"app": env.image()})
    refused(d, env.request(pod), UNAVAILABLE, "TLS verification failed", "signature_registry_ca")


def test_registry_down_fails_closed(env: Env):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    env.registry.stop()
    refused(d, env.request(pod), UNAVAILABLE, "cannot reach registry")


def test_oversize_manifest_refused(env: Env):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    env.registry.oversize = 300 * 1024
    refused(d, env.request(pod), DENIED, "over keygate's limit of 256 KiB")


def test_cached_verification_survives_outage(env: Env):
    d = env.daemon(signature_cache_ttl=60)
    pod = env.pod(images={"app": env.image()})
    released(d, env.request(pod))
    env.registry.fail_status = 503
    released(d, env.request(pod))


def test_expired_cached_verification_refused_during_outage(env: Env):
    d = env.daemon(signature_cache_ttl=0.3)
    pod = env.pod(images={"app": env.image()})
    released(d, env.request(pod))
    env.registry.fail_status = 503
    time.sleep(0.4)
    refused(d, env.request(pod), UNAVAILABLE, "answered HTTP 503")


def test_cache_is_per_key(env: Env):
    """A verification under one key says nothing about another: a policy edit re-verifies."""
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    released(d, env.request(pod))
    CosignKey.generate().write_public(env.tmp / "cosign.pub")
    policy = env.tmp / "policy.yaml"
    policy.write_text(policy.read_text() + "\n")
    refused(d, env.request(pod), DENIED, "not signed by the policy's key")


def test_bearer_registry_without_credentials(short_tmp: Path, attest_daemon, kube, cosign_key, node_key):
    with running_registry(short_tmp, auth="bearer") as reg:
        e = Env(kube, reg, cosign_key, short_tmp, attest_daemon, node_key)
        d = e.daemon()
        refused(
            d, e.request(e.pod(images={"app": e.image()})), UNAVAILABLE, "token service answered HTTP 401"
        )


def test_wrong_registry_password(short_tmp: Path, attest_daemon, kube, cosign_key, node_key):
    with running_registry(short_tmp, auth="basic") as reg:
        e = Env(kube, reg, cosign_key, short_tmp, attest_daemon, node_key)
        config = reg.docker_config(short_tmp / "config.json", password="wrong-password")
        d = e.daemon(signature_docker_config=str(config))
        details = refused(
            d, e.request(e.pod(images={"app": e.image()})), UNAVAILABLE, "refused keygate's credentials"
        )
        assert "wrong-password" not in details and "wrong-password" not in d.log_text()


def test_denials_are_counted(env: Env):
    from provider import metrics

    def count() -> float:
        return metrics.ATTESTATION_DENIALS.labels(reason="signature_missing")._value.get()

    before = count()
    d = env.daemon()
    refused(d, env.request(env.pod(images={"app": env.image(sign=False)})), DENIED, "has no signature")
    assert count() == before + 1


# -- the policy -----------------------------------------------------------------------------------


POLICY_ERRORS: list[tuple[str, Any, str]] = [
    ("missing_key_file", {"publicKeys": ["absent.pub"]}, "cannot read public key"),
    (
        "not_pem",
        {"publicKeys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]},
        "not a PEM public key",
    ),
    ("both_kinds", {"publicKeys": ["a.pub"], "keyless": {}}, "exactly one of publicKeys and keyless"),
    ("neither", {"name": "x"}, "exactly one of publicKeys and keyless"),
    ("unknown_key", {"publicKeys": ["a.pub"], "pubkey": "x"}, "unknown keys pubkey"),
    ("empty_list", {"publicKeys": []}, "non-empty list"),
]


@pytest.mark.parametrize(("case", "entry", "fragment"), POLICY_ERRORS, ids=[c[0] for c in POLICY_ERRORS])
def test_policy_errors(short_tmp: Path, case: str, entry: Any, fragment: str):
    from provider.attest.policy import PolicyError, parse_policy

    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_text(entry), str(short_tmp / "policy.yaml"))
    assert fragment in caught.value.message
    assert "rules[0].images.signatures[0]" in caught.value.message


@pytest.mark.parametrize("kind", ["p521", "rsa1024"])
def test_weak_or_unsupported_keys_refused(short_tmp: Path, kind: str):
    from provider.attest.policy import PolicyError, parse_policy

    CosignKey.generate(kind).write_public(short_tmp / "k.pub")
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_text({"publicKeys": ["k.pub"]}), str(short_tmp / "policy.yaml"))
    assert "use P-256 or P-384" in caught.value.message or "2048 or more" in caught.value.message


def test_signatures_need_the_pod(env: Env):
    d = env.daemon(insecure_skip_image_check=True)
    refused(d, env.request(env.pod(images={"app": env.image()})), DENIED, "cannot be verified")


def test_cache_ttl_is_bounded(kube):
    from dataclasses import replace

    from provider.app import build_attestor
    from provider.config import Config
    from provider.errors import KeygateError
    from tests.kubeapi import attest_settings

    config = replace(Config(), **attest_settings(kube), signature_cache_ttl=86401.0)
    with pytest.raises(KeygateError, match="at most 86400"):
        build_attestor(config)


def test_blob_redirect_to_storage_is_followed(env: Env):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    env.registry.blob_redirect = "https"
    released(d, env.request(pod))
    assert any(path.startswith("/storage/") for _, path in env.registry.hits)


def test_blob_redirect_to_plain_http_refused(env: Env):
    d = env.daemon()
    pod = env.pod(images={"app": env.image()})
    env.registry.blob_redirect = "http"
    refused(d, env.request(pod), UNAVAILABLE, "redirected the signature payload to a non-HTTPS URL")
    assert not any(path.startswith("/storage/") for _, path in env.registry.hits)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"auths": ["not", "a", "mapping"]}', "not a docker config.json"),
        (None, "cannot read the registry credentials file"),
        ('{"auths": {"HOST": {"auth": "bm8tY29sb24="}}}', "not base64 of user:password"),
    ],
    ids=["malformed", "missing", "auth_without_colon"],
)
def test_unusable_docker_config_refuses(
    short_tmp: Path, attest_daemon, kube, cosign_key, node_key, content, fragment
):
    """Credentials are read when a registry asks for them; unusable ones refuse, never go anonymous."""
    with running_registry(short_tmp, auth="bearer") as reg:
        e = Env(kube, reg, cosign_key, short_tmp, attest_daemon, node_key)
        config = short_tmp / "config.json"
        if content is not None:
            config.write_text(content.replace("HOST", reg.host))
        d = e.daemon(signature_docker_config=str(config))
        refused(d, e.request(e.pod(images={"app": e.image()})), UNAVAILABLE, fragment)


@pytest.mark.parametrize(
    ("auths", "host", "expected"),
    [
        ({"https://index.docker.io/v1/": {"auth": "dTpw"}}, "registry-1.docker.io", ("u", "p")),
        ({"docker.io": {"username": "u", "password": "p"}}, "registry-1.docker.io", ("u", "p")),
        ({"ghcr.io": {"auth": "dTpw"}}, "ghcr.io", ("u", "p")),
        ({"ghcr.io": {"auth": "dTpw"}}, "quay.io", None),
        ({"ghcr.io.evil.example": {"auth": "dTpw"}}, "ghcr.io", None),
    ],
)
def test_docker_config_lookup(tmp_path: Path, auths, host, expected):
    from provider.attest.signatures.registry import read_docker_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    assert read_docker_config(str(path), host) == expected


@pytest.mark.parametrize(
    ("reference", "repository", "ok"),
    [
        ("index.docker.io/library/nginx", "docker.io/library/nginx", True),
        ("docker.io/library/nginx", "docker.io/library/nginx", True),
        ("nginx", "docker.io/library/nginx", True),
        ("Registry.Example.com/acme/app", "registry.example.com/acme/app", True),
        ("registry.example.com/acme/app:v1", "registry.example.com/acme/app", True),
        ("registry.example.com/acme/app-evil", "registry.example.com/acme/app", False),
        ("registry.example.com/acme", "registry.example.com/acme/app", False),
        ("registry.example.com/acme/app\n", "registry.example.com/acme/app", False),
    ],
)
def test_docker_reference_matching(reference: str, repository: str, ok: bool):
    from provider.attest.signatures.cosign import reference_matches

    assert reference_matches(reference, repository) is ok


def test_hostile_payload_text_is_escaped(env: Env):
    d = env.daemon()
    image = env.image(image={"docker-manifest-digest": "sha256:\nINFO forged\x1b[2K"})
    details = refused(d, env.request(env.pod(images={"app": image})), DENIED, "for image digest")
    assert "\n" not in details and "\x1b" not in details
    assert "\n" not in d.audit_records()[-1]["reason"]
