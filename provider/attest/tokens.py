"""Verify the pod's projected service-account token and bind it to the Mount's pod.

The token is the only thing in a MountRequest that the pod cannot forge: the kubelet asks the
API server for it on the pod's behalf. Everything else in the attributes is the kubelet's word,
so the token's ``kubernetes.io`` claims must name exactly the pod the request names.

Keys come from one of three places: static PEM/JWKS files, OIDC discovery at the issuer (cached,
refreshed on an unknown ``kid`` at most once per ``min_refresh`` seconds), or no local keys at
all in TokenReview mode, where the API server verifies the token. PyJWT does the JWS work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import jwt

from provider.attest.issuer_keys import KeyRules, KeySet, key_problem, keys_from_jwks, keys_from_pem
from provider.attest.reasons import Denial, tag
from provider.bounded_cache import BoundedCache
from provider.errors import BackendUnavailable, KeygateError, Unauthenticated
from provider.request import PodAttributes
from provider.strict_json import unique_members

if TYPE_CHECKING:
    import httpx2

    from provider.attest.kube import KubeAPI

log = logging.getLogger("keygate.attest")

ALLOWED_ALGORITHMS = KeyRules().algorithms()
JWKS_TTL = 3600.0
MAX_ISSUER_DOCUMENT = 512 * 1024
MAX_TOKEN_CHARS = 16384
MAX_KID_CHARS = 256
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z
TIME_CLAIMS = ("exp", "nbf", "iat")
COMPACT_JWS = re.compile(r"\A[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token proves: who the pod is, and (if the token says) which node it is on."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str
    node_name: str | None
    expires: float | None


class KeySource(Protocol):
    """Where the issuer's public keys come from; ``keys_for`` returns candidates for a kid.

    ``rules`` is the key-strength rule the source applied; ``refusal`` says why a kid the
    source has seen is not used (None if it is not refused).
    """

    rules: KeyRules

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]: ...

    def refusal(self, kid: str) -> str | None: ...

    async def aclose(self) -> None: ...


def _reject(why: str, reason: Denial = Denial.TOKEN_INVALID) -> Unauthenticated:
    return tag(Unauthenticated(f"the service-account token {why}"), reason)


def _mismatch(why: str) -> Unauthenticated:
    return _reject(why, Denial.TOKEN_POD_MISMATCH)


class StaticKeys:
    """Keys from files: PEM public keys (kid as the API server derives it) and/or JWKS documents.

    A file is the operator's own statement of the issuer's keys, so any key in it that keygate
    would not use (too weak, wrong type, unreadable) stops start-up with the file and kid named.
    """

    def __init__(
        self, pem_files: Sequence[str], jwks_files: Sequence[str], rules: KeyRules | None = None
    ) -> None:
        self.rules = rules or KeyRules()
        self.keys = KeySet()
        for path in jwks_files:
            try:
                data = json.loads(Path(path).read_text(), parse_constant=_no_constant)
            except OSError as exc:
                raise KeygateError(f"cannot read jwks_file {path}: {os.strerror(exc.errno or 0)}") from None
            except (ValueError, RecursionError):
                raise KeygateError(f"jwks_file {path} is not valid JSON") from None
            self._take(keys_from_jwks(data, f"jwks_file {path}", self.rules), f"jwks_file {path}")
        for path in pem_files:
            try:
                pem = Path(path).read_bytes()
            except OSError as exc:
                raise KeygateError(
                    f"cannot read issuer_key_file {path}: {os.strerror(exc.errno or 0)}"
                ) from None
            self._take(keys_from_pem(pem, path, self.rules), f"issuer_key_file {path}")
        if not self.keys.keys:
            raise KeygateError("the issuer key files hold no RSA or EC signing key")

    def _take(self, found: KeySet, where: str) -> None:
        if found.refused:
            kid, reason = next(iter(found.refused.items()))
            more = f" (and {len(found.refused) - 1} more)" if len(found.refused) > 1 else ""
            raise KeygateError(
                f"{where}: issuer key {kid!r} {reason}{more}; remove it from the file "
                "(keygate does not start with a key it would refuse to use)"
            )
        self.keys.update(found)

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]:
        return self.keys.select(kid, alg)

    def refusal(self, kid: str) -> str | None:
        return self.keys.refused.get(kid)

    async def aclose(self) -> None:
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    """How to reach the issuer: extra CA (e.g. the cluster CA) and a bearer token for the API origin."""

    ca_file: str = ""
    api_url: str = ""
    token_file: str = ""
    timeout: float = 5.0


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


class OIDCKeys:
    """Keys by OIDC discovery at the issuer, cached for an hour and refreshed on an unknown kid.

    An unknown kid triggers a refresh at most once per ``min_refresh`` seconds, so a stream of
    tokens with invented kids cannot turn the daemon into a load generator against the API.
    A published key keygate would not use (too weak, unreadable) is left out with a warning
    naming its kid; the other keys keep working, and a token naming it is refused with the reason.
    """

    def __init__(
        self,
        issuer: str,
        http: HTTPSettings,
        *,
        jwks_url: str = "",
        min_refresh: float = 10.0,
        rules: KeyRules | None = None,
    ) -> None:
        self.issuer = issuer
        self.http = http
        self.jwks_url = jwks_url
        self.min_refresh = min_refresh
        self.rules = rules or KeyRules()
        self.keys = KeySet()
        self.fetched_at = 0.0
        self.attempted_at = -1e18
        self.fetches = 0
        self._lock: asyncio.Lock | None = None
        self._client: httpx2.AsyncClient | None = None

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            import httpx2

            ctx = ssl.create_default_context()
            if self.http.ca_file:
                ctx.load_verify_locations(self.http.ca_file)
            self._client = httpx2.AsyncClient(verify=ctx, timeout=self.http.timeout, trust_env=False)
        return self._client

    def _headers(self, url: str) -> dict[str, str]:
        """The daemon's own token goes only to the Kubernetes API's origin, never elsewhere."""
        if self.http.token_file and self.http.api_url and _origin(url) == _origin(self.http.api_url):
            try:
                return {"Authorization": "Bearer " + Path(self.http.token_file).read_text().strip()}
            except OSError:
                return {}
        return {}

    async def _get_json(self, url: str) -> Any:
        """GET a discovery or JWKS document of at most MAX_ISSUER_DOCUMENT bytes (the key set is
        kept for an hour, so its size is what the JWKS cache holds)."""
        import httpx2

        body = bytearray()
        try:
            async with self._http().stream("GET", url, headers=self._headers(url)) as response:
                if response.status_code != 200:
                    raise BackendUnavailable(
                        f"the token issuer answered {url} with HTTP {response.status_code}"
                    )
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ISSUER_DOCUMENT:
                        raise BackendUnavailable(
                            f"the token issuer's {url} is larger than {MAX_ISSUER_DOCUMENT // 1024} KiB; "
                            "a key set is a few KiB"
                        )
        except httpx2.HTTPError as exc:
            raise BackendUnavailable(
                f"cannot reach the token issuer at {url} ({type(exc).__name__}); no token can be verified"
            ) from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise BackendUnavailable(f"the token issuer's {url} is not JSON") from None

    async def _discover(self, base: str) -> str:
        """The jwks_uri of the openid-configuration at ``base``, if it speaks for our issuer."""
        discovery = await self._get_json(base + "/.well-known/openid-configuration")
        if not isinstance(discovery, dict) or not isinstance(discovery.get("jwks_uri"), str):
            raise BackendUnavailable(f"the openid-configuration at {base} has no jwks_uri")
        if discovery.get("issuer") != self.issuer:
            raise BackendUnavailable(
                f"the openid-configuration at {base} names issuer {discovery.get('issuer')!r}, "
                f"not the configured {self.issuer!r}"
            )
        return str(discovery["jwks_uri"])

    async def _jwks_url(self) -> str:
        """Where the keys are: the API server itself when it vouches for the issuer, else the issuer.

        In a pod the issuer (e.g. ``https://kubernetes.default.svc.cluster.local``) and the
        published ``jwks_uri`` (the API server's external address) are other origins than the
        in-cluster API address, so the daemon's credentials would not go there and discovery,
        which needs ``system:service-account-issuer-discovery``, would be refused. The API
        server serves discovery for its own issuer and its keys at ``/openid/v1/jwks``; asked
        over the cluster CA with the daemon's token it is the authoritative source. If it does
        not vouch for the configured issuer (another issuer, discovery off), the issuer is asked.
        """
        api = self.http.api_url.rstrip("/")
        if api and _origin(api) != _origin(self.issuer):
            try:
                await self._discover(api)
            except BackendUnavailable as exc:
                log.info("API server discovery did not vouch for the issuer", extra={"error": exc.message})
            else:
                return api + "/openid/v1/jwks"
        return await self._discover(self.issuer.rstrip("/"))

    async def refresh(self) -> None:
        self.attempted_at = time.monotonic()
        url = self.jwks_url or await self._jwks_url()
        try:
            keys = keys_from_jwks(await self._get_json(url), url, self.rules)
        except KeygateError as exc:
            raise BackendUnavailable(exc.message) from None
        self.keys = keys
        self.fetched_at = time.monotonic()
        self.fetches += 1
        for kid, reason in keys.refused.items():
            log.warning(
                "issuer key refused; tokens it signs are rejected",
                extra={"jwks_url": url, "kid": kid, "reason": reason},
            )
        log.info("issuer keys fetched", extra={"jwks_url": url, "key_ids": sorted(keys.keys)})

    def refusal(self, kid: str) -> str | None:
        return self.keys.refused.get(kid)

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        now = time.monotonic()
        if not self.fetches or now - self.fetched_at > JWKS_TTL:
            async with self._lock:
                if not self.fetches:
                    await self.refresh()
                elif time.monotonic() - self.fetched_at > JWKS_TTL:
                    try:
                        await self.refresh()
                    except BackendUnavailable as exc:
                        # Keys a day old are still the cluster's keys; an issuer blip must not
                        # stop every mount. Retry after min_refresh.
                        self.fetched_at = time.monotonic() - JWKS_TTL + max(self.min_refresh, 1.0)
                        log.warning(
                            "issuer key refresh failed; using cached keys", extra={"error": exc.message}
                        )
        found = self.keys.select(kid, alg)
        if found or kid is None or kid in self.keys.refused:
            return found
        async with self._lock:
            found = self.keys.select(kid, alg)
            if not found and time.monotonic() - self.attempted_at >= self.min_refresh:
                await self.refresh()
                found = self.keys.select(kid, alg)
        return found

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JOSE header and the claims, after checking both for duplicate members.

    Duplicates are refused because parsers disagree on which one wins, and so are the
    non-standard constants ``NaN`` and ``Infinity``. The header is read here only to pick the
    key; PyJWT then verifies the whole token (including that ``alg`` is the one we chose the key
    for).
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise _reject(f"is longer than {MAX_TOKEN_CHARS} characters; it is not a service-account token")
    if not COMPACT_JWS.fullmatch(token):
        raise _reject(
            "is malformed (a JWS has three dot-separated base64url parts and nothing else; "
            "truncated, padded or re-encoded?)"
        )
    parsed: list[Any] = []
    for segment in token.split(".")[:2]:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            parsed.append(json.loads(raw, object_pairs_hook=unique_members, parse_constant=_no_constant))
        except binascii.Error:
            raise _reject("is malformed (bad base64url; truncated or not a JWT)") from None
        except (ValueError, RecursionError) as exc:
            raise _reject(f"is malformed ({str(exc)[:120]}; truncated or not a JWT)") from None
    if not isinstance(parsed[0], dict) or not isinstance(parsed[1], dict):
        raise _reject("is malformed (header and payload must be JSON objects)")
    return parsed[0], parsed[1]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a number"


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    """Time claims are JSON numbers (RFC 7519 NumericDate), ``iss`` a string, ``aud`` a string or
    a list of strings. PyJWT would coerce ``"exp": "9999999999"`` with ``int()``; keygate reads
    the claims exactly as the API server writes them."""
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _reject(
                f"has {name!r} as {_json_type(value)}; it must be a JSON number (seconds since the epoch)"
            )
        if not math.isfinite(value) or not 0 <= value <= MAX_NUMERIC_DATE:
            raise _reject(f"has {name!r} out of range; a NumericDate is between 0 and {MAX_NUMERIC_DATE}")
    for name in ("iss", "sub"):
        if name in claims and not isinstance(claims[name], str):
            raise _reject(f"has {name!r} as {_json_type(claims[name])}; it must be a string")
    aud = claims.get("aud")
    if not (
        aud is None
        or isinstance(aud, str)
        or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        raise _reject("has an 'aud' that is neither a string nor a list of strings")


def claim_audiences(claims: Mapping[str, Any]) -> list[str]:
    """RFC 7519 4.1.3: ``aud`` is one string or a list of strings (types checked before)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return list(aud) if isinstance(aud, list) else []


def _str_claim(container: Mapping[str, Any], name: str, what: str) -> str:
    value = container.get(name)
    if not isinstance(value, str) or not value:
        raise _reject(f"has no string {what} claim")
    return value


VERIFIED_TTL = 30.0
VERIFIED_MAX = 4096
VERIFIED_MAX_BYTES = 1024 * 1024
VERIFIED_ENTRY_BYTES = 8 * 1024


class TokenVerifier:
    """Verifies one audience's token for the pod a Mount names."""

    def __init__(
        self,
        *,
        audience: str,
        issuer: str,
        keys: KeySource | None,
        kube: KubeAPI | None = None,
        clock_skew: float = 30.0,
        node_name: str = "",
    ) -> None:
        if keys is None and kube is None:
            raise KeygateError("token verification needs issuer keys or TokenReview")
        self.audience = audience
        self.issuer = issuer
        self.keys = keys
        self.kube = kube
        self.clock_skew = clock_skew
        self.node_name = node_name
        self._verified: BoundedCache[bytes, tuple[float, VerifiedToken, float]] = BoundedCache(
            "verified tokens",
            max_entries=VERIFIED_MAX,
            max_bytes=VERIFIED_MAX_BYTES,
            max_entry_bytes=VERIFIED_ENTRY_BYTES,
        )

    async def verify(self, token: str, pod: PodAttributes) -> VerifiedToken:
        """What ``token`` proves, if it proves exactly ``pod``.

        The kubelet re-sends the same token on every rotation poll until it renews it, and
        parsing plus verifying a JWS dominates a Mount's CPU. So a token that verified and
        matched its pod within the last ``VERIFIED_TTL`` seconds is not re-verified; its time
        window and the pod binding are still checked on every call, and keys are cached for far
        longer than this anyway, so no revocation is delayed by it. Only tokens that passed
        everything are remembered (another pod's token, replayed, costs its verification every
        time, never memory), and only what they prove (a :class:`VerifiedToken` and its
        not-before time), so every entry is small whatever else a token carries.
        """
        if self.keys is None:
            assert self.kube is not None
            return await self._review(token, pod)
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        got = self._remembered(digest, now)
        if got is not None:
            self._compare(got, pod)
            return got
        claims = await self._decode(token)
        got = self._proves(claims)
        self._compare(got, pod)
        start = claims.get("nbf", claims.get("iat"))
        if got.expires is not None and isinstance(start, int | float):
            self._verified.put(digest, (now, got, float(start)), expires=time.monotonic() + VERIFIED_TTL)
        return got

    def _remembered(self, digest: bytes, now: float) -> VerifiedToken | None:
        hit = self._verified.get(digest)
        if hit is None or now - hit[0] >= VERIFIED_TTL:
            return None
        _, got, not_before = hit
        if (
            got.expires is not None
            and now - self.clock_skew < got.expires
            and now + self.clock_skew >= not_before
        ):
            return got
        self._verified.pop(digest)
        return None

    async def _decode(self, token: str) -> dict[str, Any]:
        assert self.keys is not None
        header, payload = _segments(token)
        allowed = self.keys.rules.algorithms()
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in allowed:
            what = (
                f"uses algorithm {alg[:40]!r}"
                if isinstance(alg, str)
                else "has no 'alg' header"
                if alg is None
                else f"has 'alg' as {_json_type(alg)}"
            )
            raise _reject(f"{what}; only asymmetric signatures are accepted ({', '.join(sorted(allowed))})")
        if "crit" in header or "b64" in header:
            raise _reject("has a 'crit' or 'b64' header (JWS extensions keygate does not implement)")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS):
            raise _reject(f"has a 'kid' header that is not a string of 1 to {MAX_KID_CHARS} characters")
        _check_claim_types(payload)
        candidates = await self.keys.keys_for(kid, alg)
        refused = self.keys.refusal(kid) if kid is not None else None
        if refused is not None:
            raise _reject(f"is signed with issuer key {kid!r}, which keygate refuses: that key {refused}")
        if not candidates:
            raise _reject(
                f"is signed with key id {kid!r} ({alg}), which is not among the issuer's keys"
                if kid is not None
                else f"has no key id and no {alg} issuer key exists"
            )
        last: Exception | None = None
        for key in candidates:
            if key_problem(key, self.keys.rules) is not None:
                continue  # a key source that skipped the strength rule still cannot verify with it
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    leeway=self.clock_skew,
                    options={
                        "verify_aud": False,
                        "verify_iss": False,
                        "require": ["exp", "iat", "iss", "sub"],
                        "enforce_minimum_key_length": True,
                    },
                )
                break
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.ExpiredSignatureError:
                raise _reject(
                    "has expired (the kubelet renews it when the CSIDriver sets requiresRepublish: true)",
                    Denial.TOKEN_EXPIRED,
                ) from None
            except jwt.ImmatureSignatureError:
                raise _reject(
                    f"is not valid yet (nbf/iat in the future beyond the {self.clock_skew:g}s clock skew)"
                ) from None
            except jwt.MissingRequiredClaimError as exc:
                raise _reject(f"lacks the required claim {exc.claim!r}") from None
            except jwt.DecodeError:
                raise _reject("is malformed (cannot be decoded; truncated or re-encoded?)") from None
            except jwt.PyJWTError as exc:
                raise _reject(f"is invalid ({type(exc).__name__})") from None
        else:
            raise _reject(f"signature does not verify with issuer key {kid!r}") from last
        iss = claims.get("iss")
        if iss != self.issuer:
            raise _reject(
                f"was issued by {str(iss)[:200]!r}, not the configured issuer {self.issuer!r} "
                "(issuers are compared exactly, as the API server does)"
            )
        audiences = claim_audiences(claims)
        if not audiences:
            raise _reject(f"has no audience; keygate accepts only tokens for audience {self.audience!r}")
        if self.audience not in audiences:
            shown = repr(audiences) if len(repr(audiences)) <= 200 else repr(audiences)[:200] + "..."
            raise _reject(f"is for audience(s) {shown}, not {self.audience!r}")
        return claims

    def _proves(self, claims: Mapping[str, Any]) -> VerifiedToken:
        """The pod identity a verified token's claims state (refused unless pod-bound and consistent)."""
        k8s = claims.get("kubernetes.io")
        if not isinstance(k8s, dict):
            raise _reject("lacks the 'kubernetes.io' claims; it is not a pod-bound service-account token")
        pod_claim = k8s.get("pod") if isinstance(k8s.get("pod"), dict) else None
        sa_claim = k8s.get("serviceaccount") if isinstance(k8s.get("serviceaccount"), dict) else None
        if pod_claim is None:
            raise _reject(
                "is not bound to a pod (no kubernetes.io.pod claim); keygate needs a pod-bound token"
            )
        if sa_claim is None or not isinstance(k8s.get("namespace"), str):
            raise _reject("lacks kubernetes.io namespace/serviceaccount claims")
        node = k8s.get("node")
        got = VerifiedToken(
            namespace=k8s["namespace"],
            service_account=_str_claim(sa_claim, "name", "kubernetes.io.serviceaccount.name"),
            pod_name=_str_claim(pod_claim, "name", "kubernetes.io.pod.name"),
            pod_uid=_str_claim(pod_claim, "uid", "kubernetes.io.pod.uid"),
            node_name=_str_claim(node, "name", "kubernetes.io.node.name") if isinstance(node, dict) else None,
            expires=float(claims["exp"]) if isinstance(claims.get("exp"), int | float) else None,
        )
        if claims.get("sub") != f"system:serviceaccount:{got.namespace}:{got.service_account}":
            raise _reject("subject does not match its kubernetes.io namespace and service account")
        return got

    def _compare(self, got: VerifiedToken, pod: PodAttributes) -> None:
        if got.namespace != pod.namespace:
            raise _mismatch(f"belongs to namespace {got.namespace!r}, but the mount is for {pod.namespace!r}")
        if got.service_account != pod.service_account:
            raise _mismatch(
                f"belongs to service account {got.service_account!r}, "
                f"but the pod runs as {pod.service_account!r}"
            )
        if got.pod_name != pod.name:
            raise _mismatch(f"belongs to pod {got.pod_name!r}, but the mount is for pod {pod.name!r}")
        if got.pod_uid != pod.uid:
            raise _mismatch(f"belongs to pod UID {got.pod_uid!r}, but the mount is for pod UID {pod.uid!r}")
        if self.node_name and got.node_name is not None and got.node_name != self.node_name:
            raise _mismatch(
                f"was minted for a pod on node {got.node_name!r}, not this node {self.node_name!r}"
            )

    async def _review(self, token: str, pod: PodAttributes) -> VerifiedToken:
        assert self.kube is not None
        status = await self.kube.token_review(token, self.audience)
        if not status.get("authenticated"):
            error = str(status.get("error") or "not authenticated")[:200]
            raise _reject(f"was rejected by the API server's TokenReview: {error}")
        audiences = status.get("audiences") or []
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise _reject(
                f"is not valid for audience {self.audience!r} (TokenReview audiences {audiences!r})"
            )
        user = status.get("user") or {}
        username = str(user.get("username", ""))
        prefix = "system:serviceaccount:"
        if not username.startswith(prefix) or username.count(":") != 3:
            raise _reject(f"does not belong to a service account (user {username!r})")
        namespace, service_account = username[len(prefix) :].split(":", 1)
        extra = user.get("extra") or {}

        def one(key: str) -> str:
            values = extra.get(key)
            if not isinstance(values, list) or len(values) != 1:
                raise _reject(f"is not bound to a pod (TokenReview user.extra lacks {key})")
            return str(values[0])

        got = VerifiedToken(
            namespace=namespace,
            service_account=service_account,
            pod_name=one("authentication.kubernetes.io/pod-name"),
            pod_uid=one("authentication.kubernetes.io/pod-uid"),
            node_name=None,
            expires=None,
        )
        self._compare(got, pod)
        return got

    async def aclose(self) -> None:
        if self.keys is not None:
            await self.keys.aclose()
