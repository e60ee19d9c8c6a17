"""Pod attestation end to end: real tokens, a real local Kubernetes API, real Mounts over the socket.

Every negative case asserts the gRPC status *and* the reason a user would act on.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import grpc
import jwt
import pytest

from keygate_dev.driver_client import mount_request
from tests.kubeapi import (
    AUDIENCE,
    DevCluster,
    PodSpec,
    SigningKey,
    b64url,
    driver_pod,
    hs256_with_public_key,
    make_pod,
    pinned,
    raw_token,
    unsigned_token,
)

SECRET = b"s3cr3t-value-never-logged-9f8e7d"
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def spc(
    node_key: Any, namespace: str = "default", names: tuple[str, ...] = ("db-password",)
) -> dict[str, str]:
    items = [f"- objectName: {n}\n  sealed: {node_key.seal(SECRET, namespace, n)}" for n in names]
    return {"objects": "\n".join(items)}


def refused(d: Any, request: Any, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        d.client.mount(request)
    err = caught.value
    details = err.details() or ""
    assert err.code() == code, details
    for fragment in fragments:
        assert fragment in details, details
    return details


def mount(d: Any, node_key: Any, pod: PodSpec, token: str | None, **kw: Any) -> Any:
    return d.client.mount(
        mount_request("app-secrets", spc(node_key, pod.namespace, **kw), driver_pod(pod, token))
    )


def request_for(node_key: Any, pod: PodSpec, token: str | None) -> Any:
    return mount_request("app-secrets", spc(node_key, pod.namespace), driver_pod(pod, token))


# --- positive -----------------------------------------------------------------------------------


def test_rs256_token_and_pinned_pod_release(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    resp = mount(d, node_key, pod, kube.mint(pod))
    assert [(f.path, f.contents) for f in resp.files] == [("db-password", SECRET)]
    assert kube.hits["pod"] == 1 and kube.hits["discovery"] == 1 and kube.hits["jwks"] == 1


def test_es256_issuer_key(attest_daemon, kube: DevCluster, node_key):
    kube.keys[:] = [SigningKey.generate("ec")]
    d = attest_daemon()
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod)).files[0].contents == SECRET


def test_key_rotation_two_keys_in_jwks(attest_daemon, kube: DevCluster, node_key):
    old, new = kube.keys[0], kube.add_key("ec")
    d = attest_daemon()
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod, key=old)).files
    assert mount(d, node_key, pod, kube.mint(pod, key=new)).files
    assert kube.hits["jwks"] == 1


def test_jwks_refresh_on_new_kid(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod)).files
    assert kube.hits["jwks"] == 1
    rotated = kube.add_key("rsa")
    assert mount(d, node_key, pod, kube.mint(pod, key=rotated)).files
    assert kube.hits["jwks"] == 2


def test_unknown_kid_refresh_is_rate_limited(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(jwks_min_refresh=3600.0)
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod)).files
    stranger = SigningKey.generate("rsa")
    for _ in range(5):
        refused(
            d, request_for(node_key, pod, kube.mint(pod, key=stranger)), UNAUTH, "not among the issuer's keys"
        )
    assert kube.hits["jwks"] == 1


def test_static_pem_issuer_key_file(attest_daemon, kube: DevCluster, node_key, short_tmp):
    pem = short_tmp / "sa.pub"
    pem.write_bytes(kube.keys[0].public_pem())
    d = attest_daemon(issuer_key_file=(str(pem),))
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod)).files
    assert kube.hits["jwks"] == 0 and kube.hits["discovery"] == 0


def test_static_jwks_file(attest_daemon, kube: DevCluster, node_key, short_tmp):
    ec_key = kube.add_key("ec")
    path = short_tmp / "jwks.json"
    path.write_text(json.dumps(kube.jwks()))
    d = attest_daemon(jwks_file=(str(path),))
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod, key=ec_key)).files
    assert kube.hits["jwks"] == 0


def test_token_review_mode(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(token_review=True, issuer="")
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod)).files
    assert kube.hits["tokenreview"] == 1 and kube.hits["jwks"] == 0


def test_jwks_url_without_discovery(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(jwks_url=f"{kube.url}/openid/v1/jwks")
    pod = make_pod(kube)
    assert mount(d, node_key, pod, kube.mint(pod)).files
    assert kube.hits["discovery"] == 0 and kube.hits["jwks"] == 1


def test_all_container_kinds_pinned_release(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(
        kube,
        images={"app": pinned("ghcr.io/acme/app"), "sidecar": pinned("nginx")},
        init_images={"migrate": pinned("ghcr.io/acme/migrate")},
        ephemeral_images={"debug": pinned("busybox:1.36")},
    )
    assert mount(d, node_key, pod, kube.mint(pod)).files


# --- negative: the token ------------------------------------------------------------------------


def _claims(cluster: DevCluster, spec: PodSpec, /, **changes: Any) -> dict[str, Any]:
    claims = cluster.claims(spec, AUDIENCE)
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _k8s(cluster: DevCluster, spec: PodSpec, /, **changes: Any) -> dict[str, Any]:
    claims = cluster.claims(spec, AUDIENCE)
    k8s = claims["kubernetes.io"]
    for key, value in changes.items():
        if value is None:
            k8s.pop(key, None)
        else:
            k8s[key] = value
    return claims


NOW = int(time.time())

TOKEN_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    (
        "expired",
        lambda k, p: k.sign(_claims(k, p, exp=NOW - 600, iat=NOW - 4200, nbf=NOW - 4200)),
        ("has expired",),
    ),
    ("not_yet_valid", lambda k, p: k.sign(_claims(k, p, nbf=NOW + 900, iat=NOW)), ("not valid yet",)),
    ("issued_in_future", lambda k, p: k.sign(_claims(k, p, iat=NOW + 900, nbf=None)), ("not valid yet",)),
    (
        "wrong_issuer",
        lambda k, p: k.sign(_claims(k, p, iss="https://evil.example")),
        ("issued by 'https://evil.example'",),
    ),
    (
        "wrong_audience",
        lambda k, p: k.sign(_claims(k, p, aud=["vault"])),
        ("audience(s) ['vault'], not 'keygate'",),
    ),
    ("no_audience", lambda k, p: k.sign(_claims(k, p, aud=None)), ("has no audience",)),
    ("empty_audience", lambda k, p: k.sign(_claims(k, p, aud=[])), ("has no audience",)),
    ("alg_none", lambda k, p: unsigned_token(_claims(k, p), k.keys[0].kid), ("algorithm 'none'",)),
    (
        "hs256_public_key",
        lambda k, p: hs256_with_public_key(_claims(k, p), k.keys[0]),
        ("algorithm 'HS256'",),
    ),
    (
        "unknown_kid",
        lambda k, p: k.sign(_claims(k, p), SigningKey.generate("rsa")),
        ("not among the issuer's keys",),
    ),
    (
        "attacker_key_claims_known_kid",
        lambda k, p: jwt_with_kid(SigningKey.generate("rsa"), k.keys[0].kid, _claims(k, p)),
        ("signature does not verify",),
    ),
    ("tampered_payload", lambda k, p: tamper(k.mint(p)), ("signature does not verify",)),
    ("truncated", lambda k, p: k.mint(p)[:-21], ("truncated",)),
    ("two_parts_only", lambda k, p: k.mint(p).rsplit(".", 1)[0], ("malformed",)),
    ("not_a_jwt", lambda k, p: "bm90.YS1qd3Q.c2ln", ("malformed",)),
    ("alg_kty_mismatch", lambda k, p: es256_header_on_rsa_kid(k, p), ("not among the issuer's keys",)),
    (
        "other_pod_uid",
        lambda k, p: k.sign(_k8s(k, p, pod={"name": p.name, "uid": "ffffffff-0000"})),
        ("pod UID 'ffffffff-0000'",),
    ),
    (
        "other_pod_name",
        lambda k, p: k.sign(_k8s(k, p, pod={"name": "intruder-0", "uid": p.uid})),
        ("belongs to pod 'intruder-0'",),
    ),
    (
        "other_namespace",
        lambda k, p: k.sign(
            _k8s(k, p, namespace="kube-system")
            | {"sub": f"system:serviceaccount:kube-system:{p.service_account}"}
        ),
        ("namespace 'kube-system'",),
    ),
    (
        "other_service_account",
        lambda k, p: k.sign(
            _k8s(k, p, serviceaccount={"name": "admin", "uid": "x"})
            | {"sub": f"system:serviceaccount:{p.namespace}:admin"}
        ),
        ("service account 'admin'",),
    ),
    (
        "missing_kubernetes_io",
        lambda k, p: k.sign(_claims(k, p, **{"kubernetes.io": None})),
        ("lacks the 'kubernetes.io' claims",),
    ),
    ("not_pod_bound", lambda k, p: k.sign(_k8s(k, p, pod=None)), ("not bound to a pod",)),
    (
        "sub_mismatch",
        lambda k, p: k.sign(_claims(k, p, sub="system:serviceaccount:default:other")),
        ("subject does not match",),
    ),
    ("missing_exp", lambda k, p: k.sign(_claims(k, p, exp=None)), ("required claim 'exp'",)),
    ("other_node", lambda k, p: k.sign(_k8s(k, p, node={"name": "node-z", "uid": "u"})), ("node 'node-z'",)),
    ("duplicate_claims", lambda k, p: duplicate_member_token(k, p), ("duplicate member 'kubernetes.io'",)),
]


def jwt_with_kid(key: SigningKey, kid: str, claims: dict[str, Any]) -> str:
    """Signed by ``key`` but claiming another key's id (an attacker key posing as the issuer's)."""
    return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": kid})


def tamper(token: str) -> str:
    """Change one claim and re-encode the payload, keeping the original signature."""
    header, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["exp"] += 1
    return f"{header}.{b64url(json.dumps(data).encode())}.{sig}"


def es256_header_on_rsa_kid(kube: DevCluster, pod: PodSpec) -> str:
    ec_key = SigningKey.generate("ec")
    return jwt_with_kid(ec_key, kube.keys[0].kid, _claims(kube, pod))


def duplicate_member_token(kube: DevCluster, pod: PodSpec) -> str:
    claims = _claims(kube, pod)
    other = dict(claims["kubernetes.io"], namespace="kube-system")
    body = json.dumps(claims)[:-1] + ', "kubernetes.io": ' + json.dumps(other) + "}"
    return raw_token(body.encode(), kube.keys[0])


@pytest.mark.parametrize(("case", "make", "fragments"), TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
def test_token_rejected(attest_daemon, kube: DevCluster, node_key, case, make, fragments):
    d = attest_daemon()
    pod = make_pod(kube)
    refused(d, request_for(node_key, pod, make(kube, pod)), UNAUTH, *fragments)
    assert kube.hits["pod"] == 0, "the Pod must not be read for an unauthenticated mount"
    assert d.audit_records()[-1]["decision"] == "deny"


def test_missing_tokens_attribute_tells_how_to_fix(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    refused(
        d,
        request_for(node_key, pod, None),
        UNAUTH,
        "tokenRequests: [{audience: keygate}]",
        "secrets-store.csi.k8s.io",
    )


def test_token_for_other_audience_only(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    request = mount_request("s", spc(node_key), driver_pod(pod, kube.mint(pod, "vault"), audience="vault"))
    refused(d, request, UNAUTH, "no token for audience 'keygate'", "'vault'", "tokenRequests")


def test_valid_token_of_another_pod_is_rejected(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    victim = make_pod(kube, name="payments-0", uid="11111111-2222-3333-4444-555555555555")
    attacker = make_pod(kube, name="app-0")
    request = mount_request("s", spc(node_key), driver_pod(victim, kube.mint(attacker)))
    refused(d, request, UNAUTH, "belongs to pod 'app-0'")


def test_issuer_unreachable_fails_closed(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(issuer="https://127.0.0.1:9")
    pod = make_pod(kube)
    token = kube.sign(kube.claims(pod, AUDIENCE) | {"iss": "https://127.0.0.1:9"})
    refused(d, request_for(node_key, pod, token), UNAVAILABLE, "cannot reach the token issuer")


def test_token_review_rejects_foreign_token(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(token_review=True, issuer="")
    pod = make_pod(kube)
    refused(
        d,
        request_for(node_key, pod, kube.mint(pod, key=SigningKey.generate("rsa"))),
        UNAUTH,
        "rejected by the API server's TokenReview",
    )


def test_token_review_token_of_another_pod(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(token_review=True, issuer="")
    victim = make_pod(kube, name="payments-0", uid="11111111-2222-3333-4444-555555555555")
    attacker = make_pod(kube)
    request = mount_request("s", spc(node_key), driver_pod(victim, kube.mint(attacker)))
    refused(d, request, UNAUTH, "belongs to pod 'app-0'")


# --- negative: the Pod and its images -----------------------------------------------------------


IMAGE_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "tag_only",
        {"images": {"app": "nginx:1.27"}},
        ("container `app` image `nginx:1.27` is not pinned by digest",),
    ),
    (
        "no_tag_no_digest",
        {"images": {"app": "ghcr.io/acme/app"}},
        ("container `app` image `ghcr.io/acme/app` is not pinned",),
    ),
    (
        "unpinned_init_container",
        {"init_images": {"migrate": "ghcr.io/acme/migrate:v2"}},
        ("initContainer `migrate` image `ghcr.io/acme/migrate:v2` is not pinned by digest",),
    ),
    (
        "unpinned_ephemeral_container",
        {"ephemeral_images": {"debugger": "busybox:latest"}},
        ("ephemeralContainer `debugger` image `busybox:latest` is not pinned by digest",),
    ),
    ("malformed_digest", {"images": {"app": "ghcr.io/acme/app@sha256:abc"}}, ("malformed digest",)),
    (
        "second_container_unpinned",
        {"images": {"app": pinned("ghcr.io/acme/app"), "proxy": "envoy:v1"}},
        ("container `proxy`",),
    ),
]


@pytest.mark.parametrize(("case", "pod_kw", "fragments"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_image_rejected(attest_daemon, kube: DevCluster, node_key, case, pod_kw, fragments):
    d = attest_daemon()
    pod = make_pod(kube, **pod_kw)
    refused(d, request_for(node_key, pod, kube.mint(pod)), DENIED, *fragments)


def test_pod_uid_mismatch_with_api(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    make_pod(kube, uid="99999999-aaaa-bbbb-cccc-dddddddddddd")
    claimed = make_pod(kube, register=False)
    refused(
        d, request_for(node_key, claimed, kube.mint(claimed)), DENIED, "has UID '99999999-", "was replaced"
    )


def test_pod_not_found(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    ghost = make_pod(kube, register=False)
    refused(d, request_for(node_key, ghost, kube.mint(ghost)), DENIED, "pod default/app-0 does not exist")


def test_pod_service_account_differs_in_api(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    make_pod(kube, service_account="builder")
    claimed = make_pod(kube, register=False)
    refused(
        d, request_for(node_key, claimed, kube.mint(claimed)), DENIED, "runs as service account 'builder'"
    )


def test_pod_on_another_node(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(node_name="node-b")
    api_pod = make_pod(kube, node_name="node-c")
    token = kube.mint(dataclasses.replace(api_pod, node_name="node-b"))
    refused(d, request_for(node_key, api_pod, token), DENIED, "scheduled on node 'node-c'")


def test_api_unreachable_fails_closed(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(kube_api_url="https://127.0.0.1:9")
    pod = make_pod(kube)
    refused(d, request_for(node_key, pod, kube.mint(pod)), UNAVAILABLE, "unreachable", "fail closed")


def test_api_rejects_daemon_credentials(attest_daemon, kube: DevCluster, node_key, short_tmp):
    wrong = short_tmp / "wrong-token"
    wrong.write_text("not-the-daemon-token")
    d = attest_daemon(kube_token_file=str(wrong))
    pod = make_pod(kube)
    refused(
        d,
        request_for(node_key, pod, kube.mint(pod)),
        UNAVAILABLE,
        "may not read pod default/app-0 (HTTP 401)",
    )


def test_api_with_untrusted_certificate_fails_closed(attest_daemon, kube: DevCluster, node_key, short_tmp):
    from keygate_dev.devcluster import make_tls

    other_ca = short_tmp / "other-ca.crt"
    other_ca.write_bytes(make_tls().ca_pem)
    d = attest_daemon(kube_ca=str(other_ca), issuer_key_file=(str(_pem(kube, short_tmp)),))
    pod = make_pod(kube)
    refused(d, request_for(node_key, pod, kube.mint(pod)), UNAVAILABLE, "unreachable")


def _pem(kube: DevCluster, tmp: Any) -> Any:
    path = tmp / "sa.pub"
    path.write_bytes(kube.keys[0].public_pem())
    return path


def test_bearer_token_not_sent_to_foreign_issuer(kube: DevCluster):
    from provider.attest.tokens import HTTPSettings, OIDCKeys

    keys = OIDCKeys("https://issuer.example", HTTPSettings(api_url=kube.url, token_file=str(kube.token_file)))
    assert keys._headers("https://issuer.example/openid/v1/jwks") == {}
    assert keys._headers(kube.url + "/openid/v1/jwks") == {"Authorization": f"Bearer {kube.api_token}"}


def test_insecure_skip_image_check_is_explicit(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(insecure_skip_image_check=True)
    pod = make_pod(kube, images={"app": "nginx:1.27"})
    assert mount(d, node_key, pod, kube.mint(pod)).files
    assert kube.hits["pod"] == 0
    assert "INSECURE" in d.log_text()


def test_expired_key_cache_survives_issuer_outage(attest_daemon, kube: DevCluster, node_key, monkeypatch):
    from provider.attest import tokens

    d = attest_daemon(insecure_skip_image_check=True)
    pod = make_pod(kube)
    token = kube.mint(pod)
    assert mount(d, node_key, pod, token).files
    monkeypatch.setattr(tokens, "JWKS_TTL", 0.0)
    monkeypatch.setattr(tokens, "VERIFIED_TTL", 0.0)
    kube.stop()
    assert mount(d, node_key, pod, token).files
    assert "issuer key refresh failed; using cached keys" in d.log_text()


def test_a_verified_token_is_not_reverified_but_its_binding_and_expiry_are(
    attest_daemon, kube: DevCluster, node_key, monkeypatch
):
    from provider.attest import tokens

    d = attest_daemon(insecure_skip_image_check=True, clock_skew=0.1)
    pod = make_pod(kube)
    token = kube.mint(pod)
    calls = []
    real = tokens.TokenVerifier._decode

    async def counting(self, tok):
        calls.append(tok)
        return await real(self, tok)

    monkeypatch.setattr(tokens.TokenVerifier, "_decode", counting)
    for _ in range(3):
        assert mount(d, node_key, pod, token).files
    assert len(calls) == 1
    other = make_pod(kube, name="app-1", uid="99999999-8888-4777-8666-555555555555")
    refused(d, request_for(node_key, other, token), UNAUTH, "belongs to pod 'app-0'")
    expiring = kube.sign(kube.claims(pod, AUDIENCE, lifetime=1))
    assert mount(d, node_key, pod, expiring).files
    time.sleep(1.3)
    refused(d, request_for(node_key, pod, expiring), UNAUTH, "has expired")
