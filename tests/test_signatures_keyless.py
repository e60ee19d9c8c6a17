"""Sigstore keyless image signatures in the release policy, through real attested Mounts.

The Sigstore instance (Fulcio-like CA, CT log key, Rekor key and the trusted_root.json naming
them) is made by tests/sigstore_fakes.py; the bundles it issues are verified by the real
sigstore-python Verifier inside the daemon, offline. Bundles are attached to the images in the
test registry as OCI 1.1 referrers, as cosign's new bundle format does.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sigstore")

from keygate_dev.oci_registry import OCIRegistry, running_registry
from keygate_dev.signing import CosignKey
from tests.adversarial import refused, released
from tests.sigstore_fakes import BUNDLE_V03, FakeCA, FakeSigstore
from tests.test_signatures import Env

DENIED = "PermissionDenied"
REPO = "acme/app"
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
GITHUB = "https://token.actions.githubusercontent.com"


@pytest.fixture
def registry(short_tmp: Path) -> Iterator[OCIRegistry]:
    with running_registry(short_tmp) as reg:
        yield reg


@pytest.fixture
def sigstore() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def env(attest_daemon, kube, registry, short_tmp, node_key) -> Env:
    return Env(kube, registry, CosignKey.generate(), short_tmp, attest_daemon, node_key)


def keyless(env: Env, sigstore: FakeSigstore, **identity: Any) -> dict[str, Any]:
    sigstore.write_trusted_root(env.tmp / "trusted_root.json")
    rule = {"trustedRoot": "trusted_root.json", "issuer": GITHUB}
    rule.update(identity or {"subject": WORKFLOW})
    return {"name": "release-workflow", "keyless": rule}


def signed_image(
    env: Env, sigstore: FakeSigstore, *, tag_index: bool = False, statement: Any = None, **bundle: Any
) -> str:
    digest = env.registry.push_image(REPO)
    repository = f"{env.registry.host}/{REPO}"
    body = statement(digest, repository) if callable(statement) else sigstore.statement(digest, repository)
    raw = sigstore.bundle(body, **bundle)
    env.registry.push_referrer(REPO, digest, BUNDLE_V03, raw, tag_index=tag_index)
    return f"{repository}@{digest}"


def test_keyless_signed_image_is_released(env: Env, sigstore: FakeSigstore):
    d = env.daemon(keyless(env, sigstore))
    released(d, env.request(env.pod(images={"app": signed_image(env, sigstore)})))
    assert any("/referrers/sha256:" in path for _, path in env.registry.hits)


def test_referrers_tag_fallback(env: Env, sigstore: FakeSigstore):
    env.registry.referrers_api = False
    d = env.daemon(keyless(env, sigstore))
    released(d, env.request(env.pod(images={"app": signed_image(env, sigstore, tag_index=True)})))


def test_subject_regexp(env: Env, sigstore: FakeSigstore):
    d = env.daemon(
        keyless(
            env,
            sigstore,
            subjectRegExp=r"https://github\.com/acme/[^/]+/\.github/workflows/release\.yml@refs/heads/main",
        )
    )
    released(d, env.request(env.pod(images={"app": signed_image(env, sigstore)})))


def test_email_identity(env: Env, sigstore: FakeSigstore):
    d = env.daemon(keyless(env, sigstore, subject="release@acme.example"))
    image = signed_image(env, sigstore, identity="release@acme.example")
    released(d, env.request(env.pod(images={"app": image})))


def test_keyless_and_key_requirements_together(env: Env, sigstore: FakeSigstore):
    from keygate_dev.signing import cosign_sign

    env.key.write_public(env.tmp / "cosign.pub")
    d = env.daemon(keyless(env, sigstore), {"name": "ci-key", "publicKeys": ["cosign.pub"]})
    image = signed_image(env, sigstore)
    pod = env.pod(images={"app": image})
    refused(d, env.request(pod), DENIED, "requirement 'ci-key'", "has no signature")
    cosign_sign(env.registry, REPO, image.rpartition("@")[2], env.key)
    released(d, env.request(pod))


def _other_ca(sigstore: FakeSigstore) -> dict[str, Any]:
    return {"ca": FakeCA.make("evil-fulcio", sigstore.now)}


def _expired(sigstore: FakeSigstore) -> dict[str, Any]:
    return {"lifetime": dt.timedelta(minutes=10), "integrated_after": dt.timedelta(minutes=20)}


def _not_yet_valid(sigstore: FakeSigstore) -> dict[str, Any]:
    return {"integrated_after": dt.timedelta(seconds=-60)}


def _other_digest(sigstore: FakeSigstore) -> dict[str, Any]:
    return {"statement": lambda digest, repo: sigstore.statement("sha256:" + "ab" * 32, repo)}


def _provenance(sigstore: FakeSigstore) -> dict[str, Any]:
    return {
        "statement": lambda digest, repo: sigstore.statement(
            digest, repo, predicateType="https://slsa.dev/provenance/v1"
        )
    }


KEYLESS_REFUSALS: list[tuple[str, Any, dict[str, Any], str, str]] = [
    (
        "other_subject",
        lambda s: {"identity": "https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main"},
        {},
        "signature_identity_mismatch",
        "is signed by 'https://github.com/evil",
    ),
    (
        "other_issuer",
        lambda s: {"issuer": "https://accounts.google.com"},
        {},
        "signature_identity_mismatch",
        "OIDC issuer 'https://accounts.google.com'",
    ),
    (
        "regexp_prefix_only",
        lambda s: {"identity": WORKFLOW + "-evil"},
        {"subjectRegExp": r"https://github\.com/acme/app/.*main"},
        "signature_identity_mismatch",
        "is signed by",
    ),
    ("untrusted_ca", _other_ca, {}, "certificate_untrusted", "does not vouch for"),
    ("expired_certificate", _expired, {}, "certificate_untrusted", "does not vouch for"),
    ("logged_before_certificate", _not_yet_valid, {}, "certificate_untrusted", "does not vouch for"),
    ("other_digest", _other_digest, {}, "signature_digest_mismatch", "not for the running digest"),
    (
        "provenance_not_signature",
        _provenance,
        {},
        "signature_invalid",
        "predicate type 'https://slsa.dev/provenance/v1'",
    ),
    ("tampered_payload", lambda s: {"tamper_payload": True}, {}, "signature_invalid", "does not verify"),
]


@pytest.mark.parametrize(
    ("case", "change", "policy", "reason", "fragment"), KEYLESS_REFUSALS, ids=[c[0] for c in KEYLESS_REFUSALS]
)
def test_keyless_refused(env: Env, sigstore: FakeSigstore, case, change, policy, reason, fragment):
    d = env.daemon(keyless(env, sigstore, **(policy or {"subject": WORKFLOW})))
    image = signed_image(env, sigstore, **change(sigstore))
    details = refused(
        d, env.request(env.pod(images={"app": image})), DENIED, "container `app`", image, fragment
    )
    assert "requirement 'release-workflow'" in details
    record = d.audit_records()[-1]
    assert record["denial_reason"] == reason, record


def test_bundle_from_another_sigstore(env: Env, sigstore: FakeSigstore):
    d = env.daemon(keyless(env, sigstore))
    image = signed_image(env, FakeSigstore())
    refused(d, env.request(env.pod(images={"app": image})), DENIED, "does not vouch for")


def test_no_bundle(env: Env, sigstore: FakeSigstore):
    d = env.daemon(keyless(env, sigstore))
    image = f"{env.registry.host}/{REPO}@{env.registry.push_image(REPO)}"
    details = refused(
        d, env.request(env.pod(images={"app": image})), DENIED, "has no Sigstore signature bundle"
    )
    assert "cosign sign --new-bundle-format" in details


def test_garbage_bundle(env: Env, sigstore: FakeSigstore):
    d = env.daemon(keyless(env, sigstore))
    digest = env.registry.push_image(REPO)
    env.registry.push_referrer(
        REPO, digest, BUNDLE_V03, b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'
    )
    refused(
        d, env.request(env.pod(images={"app": f"{env.registry.host}/{REPO}@{digest}"})), DENIED, "not valid"
    )


def test_one_good_bundle_among_bad_ones(env: Env, sigstore: FakeSigstore):
    d = env.daemon(keyless(env, sigstore))
    digest = env.registry.push_image(REPO)
    repository = f"{env.registry.host}/{REPO}"
    env.registry.push_referrer(
        REPO,
        digest,
        BUNDLE_V03,
        sigstore.bundle(sigstore.statement(digest, repository), identity="https://evil"),
    )
    env.registry.push_referrer(
        REPO, digest, BUNDLE_V03, sigstore.bundle(sigstore.statement(digest, repository))
    )
    released(d, env.request(env.pod(images={"app": f"{repository}@{digest}"})))


KEYLESS_POLICY_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "missing_root",
        {"trustedRoot": "absent.json", "issuer": GITHUB, "subject": WORKFLOW},
        "cannot read trusted root",
    ),
    (
        "not_a_root",
        {"trustedRoot": "bad.json", "issuer": GITHUB, "subject": WORKFLOW},
        "not a usable Sigstore trusted root",
    ),
    (
        "both_subjects",
        {"trustedRoot": "bad.json", "issuer": GITHUB, "subject": "a", "subjectRegExp": "b"},
        "exactly one of subject",
    ),
    ("no_issuer", {"trustedRoot": "bad.json", "subject": WORKFLOW}, "issuer is required"),
    (
        "bad_regexp",
        {"trustedRoot": "bad.json", "issuer": GITHUB, "subjectRegExp": "("},
        "not a valid regular expression",
    ),
    (
        "unknown_key",
        {"trustedRoot": "bad.json", "issuer": GITHUB, "subject": "a", "san": "x"},
        "unknown keys san",
    ),
]


@pytest.mark.parametrize(
    ("case", "rule", "fragment"), KEYLESS_POLICY_ERRORS, ids=[c[0] for c in KEYLESS_POLICY_ERRORS]
)
def test_keyless_policy_errors(short_tmp: Path, case, rule, fragment):
    from provider.attest.policy import PolicyError, parse_policy

    (short_tmp / "bad.json").write_text(json.dumps({"mediaType": "nonsense"}))
    text = json.dumps(
        {"rules": [{"name": "r", "namespaces": ["*"], "images": {"signatures": [{"keyless": rule}]}}]}
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, str(short_tmp / "policy.yaml"))
    assert fragment in caught.value.message
