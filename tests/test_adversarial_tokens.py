"""Hostile service-account tokens and issuer keys, each through a real Mount.

The issuer is the local Kubernetes API stand-in (OIDC discovery and JWKS over HTTPS); tokens are
signed with real keys, among them keys too weak to trust. Every refusal checks the keygate code,
the reason, and that neither the secret nor the token appears in the message.
"""

from __future__ import annotations

import hmac
import json
import time
from hashlib import sha256
from typing import Any

import pytest

from provider.errors import KeygateError
from tests.adversarial import (
    HostileKey,
    b64url,
    claims_for,
    make_key,
    refused,
    released,
    request_for,
    sign,
    sign_raw,
)
from tests.kubeapi import DevCluster, make_pod

UNAUTH = "Unauthenticated"
NOW = int(time.time())
FUTURE = NOW + 3600


def _deny(d: Any, kube: DevCluster, node_key: Any, token: str, *fragments: str) -> str:
    pod = make_pod(kube)
    details = refused(
        d, request_for(node_key, pod, token), UNAUTH, *fragments, hidden=(token.split(".")[-1],)
    )
    assert kube.hits["pod"] == 0, "the Pod must not be read for an unauthenticated mount"
    return details


# --- time claims: JSON numbers only ------------------------------------------------------------

TIME_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("exp_string_future_epoch", {"exp": str(FUTURE)}, "has 'exp' as a string"),
    ("exp_string_float", {"exp": f"{FUTURE}.0"}, "has 'exp' as a string"),
    ("exp_string_iso", {"exp": "2099-01-01T00:00:00Z"}, "has 'exp' as a string"),
    ("exp_true", {"exp": True}, "has 'exp' as a boolean"),
    ("exp_false", {"exp": False}, "has 'exp' as a boolean"),
    ("exp_null", {"exp": None}, "has 'exp' as null"),
    ("exp_list", {"exp": [FUTURE]}, "has 'exp' as an array"),
    ("exp_object", {"exp": {"$numberLong": str(FUTURE)}}, "has 'exp' as an object"),
    ("exp_huge_float", {"exp": 1e300}, "has 'exp' out of range"),
    ("exp_huge_int", {"exp": 10**30}, "has 'exp' out of range"),
    ("exp_year_10000", {"exp": 253402300800}, "has 'exp' out of range"),
    ("exp_negative", {"exp": -1}, "has 'exp' out of range"),
    ("nbf_string", {"nbf": str(NOW)}, "has 'nbf' as a string"),
    ("nbf_true", {"nbf": True}, "has 'nbf' as a boolean"),
    ("nbf_null", {"nbf": None}, "has 'nbf' as null"),
    ("nbf_empty_list", {"nbf": []}, "has 'nbf' as an array"),
    ("nbf_huge", {"nbf": 1e308}, "has 'nbf' out of range"),
    ("iat_string", {"iat": str(NOW)}, "has 'iat' as a string"),
    ("iat_false", {"iat": False}, "has 'iat' as a boolean"),
    ("iat_null", {"iat": None}, "has 'iat' as null"),
    ("iat_object", {"iat": {}}, "has 'iat' as an object"),
    ("iat_list_of_string", {"iat": [str(NOW)]}, "has 'iat' as an array"),
    ("iat_negative_float", {"iat": -0.5}, "has 'iat' out of range"),
]


@pytest.mark.parametrize(("case", "changes", "fragment"), TIME_CASES, ids=[c[0] for c in TIME_CASES])
def test_time_claim_types(attest_daemon, kube: DevCluster, node_key, case, changes, fragment):
    d = attest_daemon()
    pod = make_pod(kube)
    _deny(d, kube, node_key, sign(claims_for(kube, pod, **changes), kube.keys[0]), fragment)


RAW_NUMBER_CASES = [
    ("exp_nan", "exp", "NaN", "non-standard JSON constant NaN"),
    ("exp_infinity", "exp", "Infinity", "non-standard JSON constant Infinity"),
    ("nbf_minus_infinity", "nbf", "-Infinity", "non-standard JSON constant -Infinity"),
    ("iat_nan", "iat", "NaN", "non-standard JSON constant NaN"),
    ("exp_overflows_to_inf", "exp", "1e400", "has 'exp' out of range"),
    ("exp_4400_digits", "exp", "9" * 4400, "malformed"),
]


@pytest.mark.parametrize(
    ("case", "claim", "literal", "fragment"), RAW_NUMBER_CASES, ids=[c[0] for c in RAW_NUMBER_CASES]
)
def test_time_claim_literals(attest_daemon, kube: DevCluster, node_key, case, claim, literal, fragment):
    d = attest_daemon()
    pod = make_pod(kube)
    body = json.dumps(claims_for(kube, pod, **{claim: "@@"})).replace('"@@"', literal).encode()
    _deny(
        d, kube, node_key, sign_raw({"alg": "RS256", "kid": kube.keys[0].kid}, body, kube.keys[0]), fragment
    )


@pytest.mark.parametrize(
    "changes",
    [{"exp": FUTURE + 0.5}, {"iat": NOW - 0.25, "nbf": NOW - 0.25}, {"nbf": ...}],
    ids=["float_exp", "float_iat_nbf", "no_nbf"],
)
def test_well_typed_time_claims_release(attest_daemon, kube: DevCluster, node_key, changes):
    d = attest_daemon()
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod, **changes), kube.keys[0])))


# --- issuer: compared exactly ------------------------------------------------------------------


def _issuer_variants(issuer: str) -> list[tuple[str, Any, str]]:
    return [
        ("trailing_slash", issuer + "/", "was issued by"),
        ("two_trailing_slashes", issuer + "//", "was issued by"),
        ("upper_case_scheme", "HTTPS" + issuer[5:], "was issued by"),
        ("http_scheme", "http" + issuer[5:], "was issued by"),
        ("leading_space", " " + issuer, "was issued by"),
        ("trailing_space", issuer + " ", "was issued by"),
        ("trailing_newline", issuer + "\n", "was issued by"),
        ("trailing_nul", issuer + "\x00", "was issued by"),
        ("dot_path", issuer + "/.", "was issued by"),
        ("empty_query", issuer + "?", "was issued by"),
        ("empty_fragment", issuer + "#", "was issued by"),
        ("userinfo", issuer.replace("https://", "https://evil@"), "was issued by"),
        ("fullwidth_digit_lookalike", issuer.replace("1", "\uff11", 1), "was issued by"),
        ("one_dot_leader_lookalike", issuer.replace(".", "\u2024", 1), "was issued by"),
        ("zero_width_space", issuer + "\u200b", "was issued by"),
        ("empty", "", "was issued by ''"),
        ("number", 12345, "has 'iss' as a number"),
        ("list", [issuer], "has 'iss' as an array"),
        ("object", {"iss": issuer}, "has 'iss' as an object"),
        ("null", None, "has 'iss' as null"),
        ("missing", ..., "lacks the required claim 'iss'"),
    ]


ISSUER_IDS = [c[0] for c in _issuer_variants("https://x")]


@pytest.mark.parametrize("case", ISSUER_IDS)
def test_issuer_compared_exactly(attest_daemon, kube: DevCluster, node_key, case):
    d = attest_daemon()
    pod = make_pod(kube)
    _, iss, fragment = next(c for c in _issuer_variants(kube.issuer) if c[0] == case)
    _deny(d, kube, node_key, sign(claims_for(kube, pod, iss=iss), kube.keys[0]), fragment)


def test_configured_issuer_with_slash_matches_only_itself(
    attest_daemon, kube: DevCluster, node_key, short_tmp
):
    jwks = short_tmp / "jwks.json"
    jwks.write_text(json.dumps(kube.jwks()))
    d = attest_daemon(issuer=kube.issuer + "/", jwks_file=(str(jwks),))
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod, iss=kube.issuer + "/"), kube.keys[0])))
    refused(d, request_for(node_key, pod, kube.mint(pod)), UNAUTH, "was issued by", "compared exactly")


def test_discovery_must_name_the_configured_issuer_exactly(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon(issuer=kube.issuer + "/", kube_api_url=kube.url)
    pod = make_pod(kube)
    token = sign(claims_for(kube, pod, iss=kube.issuer + "/"), kube.keys[0])
    refused(d, request_for(node_key, pod, token), "BackendUnavailable", "names issuer", "not the configured")


# --- audience: a string or a list of strings, matched exactly ----------------------------------

AUD_RELEASED: list[tuple[str, Any]] = [
    ("plain_string", "keygate"),
    ("list_of_one", ["keygate"]),
    ("list_with_others", ["vault", "keygate"]),
    ("listed_twice", ["keygate", "keygate"]),
]


@pytest.mark.parametrize(("case", "aud"), AUD_RELEASED, ids=[c[0] for c in AUD_RELEASED])
def test_audience_forms_released(attest_daemon, kube: DevCluster, node_key, case, aud):
    d = attest_daemon()
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod, aud=aud), kube.keys[0])))


@pytest.mark.parametrize("aud", ["keygate", ["keygate"]], ids=["plain_string", "list"])
def test_audience_forms_released_by_token_review(attest_daemon, kube: DevCluster, node_key, aud):
    d = attest_daemon(token_review=True, issuer="")
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod, aud=aud), kube.keys[0])))


AUD_REFUSED: list[tuple[str, Any, str]] = [
    ("other_string", "vault", "is for audience(s) ['vault'], not 'keygate'"),
    ("superstring", "keygatex", "is for audience(s) ['keygatex']"),
    ("substring", "keyga", "is for audience(s) ['keyga']"),
    ("upper_case", "KEYGATE", "is for audience(s) ['KEYGATE']"),
    ("leading_space", " keygate", "is for audience(s) [' keygate']"),
    ("trailing_newline", "keygate\n", "is for audience(s)"),
    ("list_with_padded", ["keygate "], "is for audience(s) ['keygate ']"),
    ("empty_string", "", "is for audience(s) ['']"),
    ("empty_list", [], "has no audience"),
    ("null", None, "has no audience"),
    ("missing", ..., "has no audience"),
    ("list_with_number", ["keygate", 5], "neither a string nor a list of strings"),
    ("list_with_null", [None], "neither a string nor a list of strings"),
    ("nested_list", [["keygate"]], "neither a string nor a list of strings"),
    ("object", {"keygate": True}, "neither a string nor a list of strings"),
    ("number", 5, "neither a string nor a list of strings"),
    ("boolean", True, "neither a string nor a list of strings"),
]


@pytest.mark.parametrize(("case", "aud", "fragment"), AUD_REFUSED, ids=[c[0] for c in AUD_REFUSED])
def test_audience_forms_refused(attest_daemon, kube: DevCluster, node_key, case, aud, fragment):
    d = attest_daemon()
    pod = make_pod(kube)
    _deny(d, kube, node_key, sign(claims_for(kube, pod, aud=aud), kube.keys[0]), fragment)


# --- kid, alg and other header tricks ----------------------------------------------------------


def _attacker() -> HostileKey:
    return make_key("rsa2048")


HEADER_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("kid_empty", lambda k, c: sign(c, k.keys[0], kid=""), ("'kid' header that is not a string",)),
    ("kid_number", lambda k, c: sign(c, k.keys[0], kid=5), ("'kid' header that is not a string",)),
    ("kid_list", lambda k, c: sign(c, k.keys[0], kid=[k.keys[0].kid]), ("'kid' header",)),
    ("kid_object", lambda k, c: sign(c, k.keys[0], kid={}), ("'kid' header",)),
    ("kid_300_chars", lambda k, c: sign(c, k.keys[0], kid="k" * 300), ("1 to 256 characters",)),
    ("kid_trailing_space", lambda k, c: sign(c, k.keys[0], kid=k.keys[0].kid + " "), ("not among",)),
    ("kid_trailing_newline", lambda k, c: sign(c, k.keys[0], kid=k.keys[0].kid + "\n"), ("not among",)),
    ("kid_path_traversal", lambda k, c: sign(c, _attacker(), kid="../../openid/v1/jwks"), ("not among",)),
    ("kid_synthetic_index", lambda k, c: sign(c, _attacker(), kid="#0"), ("not among",)),
    (
        "kid_of_issuer_signed_by_attacker",
        lambda k, c: sign(c, _attacker(), kid=k.keys[0].kid),
        ("does not verify",),
    ),
    ("no_kid_signed_by_attacker", lambda k, c: sign(c, _attacker(), kid=None), ("does not verify",)),
    (
        "jku_to_attacker",
        lambda k, c: sign(c, (a := _attacker()), jku="https://evil.example/jwks", kid=a.kid),
        ("not among",),
    ),
    ("embedded_jwk", lambda k, c: sign(c, (a := _attacker()), jwk=a.jwk(), kid=a.kid), ("not among",)),
    (
        "x5u_to_attacker",
        lambda k, c: sign(c, (a := _attacker()), x5u="https://evil.example/c", kid=a.kid),
        ("not among",),
    ),
    ("alg_none", lambda k, c: _unsigned(c, "none", k), ("algorithm 'none'",)),
    ("alg_None", lambda k, c: _unsigned(c, "None", k), ("algorithm 'None'",)),
    ("alg_NONE", lambda k, c: _unsigned(c, "NONE", k), ("algorithm 'NONE'",)),
    ("alg_hs256_public_key", lambda k, c: _hs256(c, k), ("algorithm 'HS256'",)),
    ("alg_trailing_space", lambda k, c: sign(c, k.keys[0], alg="RS256 "), ("algorithm 'RS256 '",)),
    ("alg_lower_case", lambda k, c: sign(c, k.keys[0], alg="rs256"), ("algorithm 'rs256'",)),
    ("alg_missing", lambda k, c: sign(c, k.keys[0], alg=None), ("has no 'alg' header",)),
    (
        "alg_number",
        lambda k, c: _header({"alg": 256, "kid": k.keys[0].kid}, c, k),
        ("has 'alg' as a number",),
    ),
    (
        "alg_list",
        lambda k, c: _header({"alg": ["RS256"], "kid": k.keys[0].kid}, c, k),
        ("has 'alg' as an array",),
    ),
    ("alg_es256k", lambda k, c: sign(c, make_key("secp256k1"), alg="ES256K"), ("algorithm 'ES256K'",)),
    ("alg_eddsa_not_enabled", lambda k, c: sign(c, make_key("ed25519")), ("algorithm 'EdDSA'",)),
    ("alg_ps256_for_rs256_key", lambda k, c: _pss(c, k), ("not among the issuer's keys",)),
    ("crit_header", lambda k, c: sign(c, k.keys[0], crit=["exp"]), ("'crit' or 'b64'",)),
    ("b64_false", lambda k, c: sign(c, k.keys[0], b64=False, crit=["b64"]), ("'crit' or 'b64'",)),
    ("duplicate_alg_member", lambda k, c: _duplicate_header(c, k), ("duplicate member 'alg'",)),
    ("duplicate_exp_member", lambda k, c: _duplicate_exp(c, k), ("duplicate member 'exp'",)),
    ("header_is_array", lambda k, c: _raw_parts(b"[]", json.dumps(c).encode()), ("must be JSON objects",)),
    (
        "payload_is_string",
        lambda k, c: _raw_parts(b'{"alg":"RS256"}', b'"claims"'),
        ("must be JSON objects",),
    ),
    (
        "payload_deeply_nested",
        lambda k, c: _raw_parts(b'{"alg":"RS256"}', b"[" * 5000 + b"]" * 5000),
        ("malformed",),
    ),
    ("trailing_newline", lambda k, c: k.sign(c) + "\n", ("malformed",)),
    ("leading_space", lambda k, c: " " + k.sign(c), ("malformed",)),
    ("base64_padding", lambda k, c: k.sign(c) + "==", ("malformed",)),
    ("four_parts", lambda k, c: k.sign(c) + ".e30", ("malformed",)),
    ("non_ascii", lambda k, c: k.sign(c).replace(".", ".\u00e9", 1), ("malformed",)),
    ("oversized", lambda k, c: k.sign(c | {"pad": "x" * 20000}), ("longer than 16384",)),
]


def _unsigned(claims: dict[str, Any], alg: str, kube: DevCluster) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kube.keys[0].kid}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def _hs256(claims: dict[str, Any], kube: DevCluster) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": kube.keys[0].kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(kube.keys[0].public_pem(), signing_input.encode(), sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _header(header: dict[str, Any], claims: dict[str, Any], kube: DevCluster) -> str:
    body = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return body + "." + sign(claims, kube.keys[0]).split(".")[2]


def _pss(claims: dict[str, Any], kube: DevCluster) -> str:
    import jwt as pyjwt

    return pyjwt.encode(claims, kube.keys[0].private, algorithm="PS256", headers={"kid": kube.keys[0].kid})


def _raw_parts(header: bytes, payload: bytes) -> str:
    return f"{b64url(header)}.{b64url(payload)}.c2ln"


def _duplicate_header(claims: dict[str, Any], kube: DevCluster) -> str:
    key = kube.keys[0]
    header = b'{"alg":"RS256","kid":"' + key.kid.encode() + b'","alg":"RS256"}'
    signing_input = f"{b64url(header)}.{b64url(json.dumps(claims).encode())}"
    from tests.adversarial import _raw_sign

    return f"{signing_input}.{b64url(_raw_sign(key.private, 'RS256', signing_input.encode()))}"


def _duplicate_exp(claims: dict[str, Any], kube: DevCluster) -> str:
    body = json.dumps(claims)[:-1] + f', "exp": {FUTURE + 10**6}}}'
    return sign_raw({"alg": "RS256", "kid": kube.keys[0].kid}, body.encode(), kube.keys[0])


@pytest.mark.parametrize(("case", "make", "fragments"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_header_tricks(attest_daemon, kube: DevCluster, node_key, case, make, fragments):
    d = attest_daemon()
    pod = make_pod(kube)
    _deny(d, kube, node_key, make(kube, claims_for(kube, pod)), *fragments)


def test_token_without_kid_from_the_issuer_releases(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod), kube.keys[0], kid=None)))


# --- the pod binding claims must be strings -----------------------------------------------------


def _k8s(kube: DevCluster, pod: Any, section: str, name: str, value: Any) -> dict[str, Any]:
    claims = claims_for(kube, pod)
    if section:
        claims["kubernetes.io"][section][name] = value
    else:
        claims["kubernetes.io"][name] = value
    return claims


BINDING_CASES = [
    ("pod_name_number", "pod", "name", 0, "has no string kubernetes.io.pod.name claim"),
    ("pod_name_empty", "pod", "name", "", "has no string kubernetes.io.pod.name claim"),
    ("pod_uid_list", "pod", "uid", ["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"], "kubernetes.io.pod.uid"),
    ("service_account_null", "serviceaccount", "name", None, "kubernetes.io.serviceaccount.name"),
    ("node_name_number", "node", "name", 7, "kubernetes.io.node.name"),
    ("namespace_number", "", "namespace", 1, "lacks kubernetes.io namespace/serviceaccount claims"),
]


@pytest.mark.parametrize(
    ("case", "section", "name", "value", "fragment"), BINDING_CASES, ids=[c[0] for c in BINDING_CASES]
)
def test_binding_claim_types(attest_daemon, kube: DevCluster, node_key, case, section, name, value, fragment):
    d = attest_daemon()
    pod = make_pod(kube)
    _deny(d, kube, node_key, sign(_k8s(kube, pod, section, name, value), kube.keys[0]), fragment)


def test_sub_must_be_the_exact_string(attest_daemon, kube: DevCluster, node_key):
    d = attest_daemon()
    pod = make_pod(kube)
    sub = ["system:serviceaccount:default:app"]
    _deny(d, kube, node_key, sign(claims_for(kube, pod, sub=sub), kube.keys[0]), "has 'sub' as an array")


# --- weak and unusable issuer keys from OIDC discovery ------------------------------------------

WEAK_KEYS: list[tuple[str, str, dict[str, Any], str]] = [
    ("rsa_512", "rsa512", {}, "is an RSA key of 512 bits; at least 2048 bits are required"),
    ("rsa_1024", "rsa1024", {}, "is an RSA key of 1024 bits"),
    ("rsa_2040", "rsa2040", {}, "is an RSA key of 2040 bits"),
    ("ec_secp256k1", "secp256k1", {}, "is an EC key on curve 'secp256k1'"),
    ("ec_p192", "p192", {}, "is an EC key on curve 'P-192'"),
    ("ec_p224", "p224", {}, "is an EC key on curve 'P-224'"),
    ("ed448_okp", "ed448", {}, "is an OKP key on curve 'Ed448'"),
    ("ed25519_not_enabled", "ed25519", {}, "Ed25519 key, accepted only when token_allow_ed25519"),
    ("private_material", "rsa2048", {"jwk_overrides": {"d": "AQAB"}}, "holds private key material"),
    ("declared_hmac_alg", "rsa2048", {"jwk_overrides": {"alg": "HS256"}}, "declares alg 'HS256'"),
    ("declared_none_alg", "rsa2048", {"jwk_overrides": {"alg": "none"}}, "declares alg 'none'"),
    (
        "alg_curve_mismatch",
        "p256",
        {"jwk_overrides": {"alg": "ES384"}},
        "declares alg ES384, which does not fit",
    ),
    ("symmetric_key", "rsa2048", {"jwk_overrides": {"kty": "oct", "k": "c2VjcmV0"}}, "has key type 'oct'"),
    ("unreadable_modulus", "rsa2048", {"jwk_overrides": {"n": 12345}}, "cannot be read as a JWK"),
]


@pytest.mark.parametrize(("case", "kind", "options", "reason"), WEAK_KEYS, ids=[c[0] for c in WEAK_KEYS])
def test_weak_key_in_discovered_jwks_never_verifies(
    attest_daemon, kube: DevCluster, node_key, case, kind, options, reason
):
    """One weak key beside a good one: the good key keeps working, the weak one verifies nothing."""
    weak = make_key(kind, **options)
    kube.keys.append(weak)
    d = attest_daemon()
    pod = make_pod(kube)
    token = sign(claims_for(kube, pod), weak, alg="ES256" if weak.alg in ("ES256", "EdDSA") else weak.alg)
    _deny(d, kube, node_key, token, f"issuer key {weak.kid!r}, which keygate refuses", reason)
    released(d, request_for(node_key, pod, kube.mint(pod)))
    assert "issuer key refused" in d.log_text() and weak.kid in d.log_text()


def test_weak_key_is_not_refetched_for_every_token(attest_daemon, kube: DevCluster, node_key):
    weak = make_key("rsa512")
    kube.keys[:] = [weak]
    d = attest_daemon()
    pod = make_pod(kube)
    for _ in range(3):
        _deny(d, kube, node_key, sign(claims_for(kube, pod), weak), "RSA key of 512 bits")
    assert kube.hits["jwks"] == 1


def test_kid_listed_twice_with_different_keys_is_refused(attest_daemon, kube: DevCluster, node_key):
    good = kube.keys[0]
    kube.keys.append(make_key("rsa2048", kid=good.kid))
    d = attest_daemon()
    pod = make_pod(kube)
    _deny(d, kube, node_key, kube.mint(pod), "listed twice with different key material")


def test_jwk_with_non_string_kid_is_left_out(attest_daemon, kube: DevCluster, node_key):
    kube.keys.append(make_key("rsa2048", jwk_overrides={"kid": 7}))
    d = attest_daemon()
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, kube.mint(pod)))
    assert "issuer key refused" in d.log_text()


def test_encryption_key_does_not_verify(attest_daemon, kube: DevCluster, node_key):
    enc = make_key("rsa2048", jwk_overrides={"use": "enc"})
    kube.keys.append(enc)
    d = attest_daemon()
    pod = make_pod(kube)
    _deny(d, kube, node_key, sign(claims_for(kube, pod), enc), "not among the issuer's keys")


def test_weak_key_from_jwks_url(attest_daemon, kube: DevCluster, node_key):
    weak = make_key("rsa1024")
    kube.keys.append(weak)
    d = attest_daemon(jwks_url=f"{kube.url}/openid/v1/jwks")
    pod = make_pod(kube)
    _deny(d, kube, node_key, sign(claims_for(kube, pod), weak), "RSA key of 1024 bits")
    released(d, request_for(node_key, pod, kube.mint(pod)))


# --- Ed25519: only when configured --------------------------------------------------------------


def test_ed25519_issuer_key_when_enabled(attest_daemon, kube: DevCluster, node_key):
    ed = make_key("ed25519")
    kube.keys.append(ed)
    d = attest_daemon(token_allow_ed25519=True)
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod), ed)))
    released(d, request_for(node_key, pod, kube.mint(pod)))


def test_ed448_refused_even_with_ed25519_enabled(attest_daemon, kube: DevCluster, node_key):
    ed = make_key("ed448")
    kube.keys.append(ed)
    d = attest_daemon(token_allow_ed25519=True)
    pod = make_pod(kube)
    _deny(d, kube, node_key, sign(claims_for(kube, pod), ed), "is an OKP key on curve 'Ed448'")


def test_ed25519_pem_file_when_enabled(attest_daemon, kube: DevCluster, node_key, short_tmp):
    ed = make_key("ed25519")
    pem = short_tmp / "ed.pub"
    pem.write_bytes(ed.public_pem())
    d = attest_daemon(issuer_key_file=(str(pem),), token_allow_ed25519=True)
    pod = make_pod(kube)
    released(d, request_for(node_key, pod, sign(claims_for(kube, pod), ed)))


# --- static key files: a key keygate would not use stops start-up ------------------------------

STATIC_CASES = [
    ("jwks_rsa_512", "jwks", "rsa512", "is an RSA key of 512 bits"),
    ("jwks_rsa_1024", "jwks", "rsa1024", "is an RSA key of 1024 bits"),
    ("jwks_p192", "jwks", "p192", "is an EC key on curve 'P-192'"),
    ("jwks_secp256k1", "jwks", "secp256k1", "is an EC key on curve 'secp256k1'"),
    ("jwks_ed25519", "jwks", "ed25519", "accepted only when token_allow_ed25519"),
    ("pem_rsa_1024", "pem", "rsa1024", "is an RSA key of 1024 bits"),
    ("pem_p192", "pem", "p192", "is an EC key on curve secp192r1"),
    ("pem_p224", "pem", "p224", "is an EC key on curve secp224r1"),
    ("pem_secp256k1", "pem", "secp256k1", "is an EC key on curve secp256k1"),
    ("pem_ed25519", "pem", "ed25519", "accepted only when token_allow_ed25519"),
    ("pem_ed448", "pem", "ed448", "cannot verify service-account tokens"),
]


@pytest.mark.parametrize(("case", "form", "kind", "reason"), STATIC_CASES, ids=[c[0] for c in STATIC_CASES])
def test_static_file_with_weak_key_refuses_start(
    attest_daemon, kube: DevCluster, short_tmp, case, form, kind, reason
):
    weak = make_key(kind)
    good = kube.keys[0]
    if form == "jwks":
        path = short_tmp / "keys.json"
        path.write_text(json.dumps({"keys": [good.jwk(), weak.jwk()]}))
        options: dict[str, Any] = {"jwks_file": (str(path),)}
    else:
        path = short_tmp / "keys.pem"
        path.write_bytes(good.public_pem() + weak.public_pem())
        options = {"issuer_key_file": (str(path),)}
    with pytest.raises(KeygateError) as caught:
        attest_daemon(**options)
    message = caught.value.message
    assert str(path) in message and repr(weak.kid) in message and reason in message, message
    assert "remove it from the file" in message
