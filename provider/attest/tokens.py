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
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import jwt

from provider.attest.reasons import Denial, tag
from provider.errors import BackendUnavailable, KeygateError, Unauthenticated
from provider.request import PodAttributes

if TYPE_CHECKING:
    import httpx2

    from provider.attest.kube import KubeAPI

log = logging.getLogger("keygate.attest")

ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
ASYMMETRIC_KTY = frozenset({"RSA", "EC"})
JWKS_TTL = 3600.0


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
    """Where the issuer's public keys come from; ``keys_for`` returns candidates for a kid."""

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]: ...

    async def aclose(self) -> None: ...


def _reject(why: str, reason: Denial = Denial.TOKEN_INVALID) -> Unauthenticated:
    return tag(Unauthenticated(f"the service-account token {why}"), reason)


def _mismatch(why: str) -> Unauthenticated:
    return _reject(why, Denial.TOKEN_POD_MISMATCH)


def _kty_for(alg: str) -> str:
    return "EC" if alg.startswith("ES") else "RSA"


def _keys_from_jwks(data: Any, source: str) -> dict[str, tuple[str, Any, str | None]]:
    """kid -> (kty, public key, alg or None) for the asymmetric signing keys of a JWKS."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeygateError(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
    keys: dict[str, tuple[str, Any, str | None]] = {}
    for index, item in enumerate(data["keys"]):
        if not isinstance(item, dict) or item.get("kty") not in ASYMMETRIC_KTY:
            continue
        if item.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(item)
        except jwt.PyJWTError:
            log.warning("skipping an unusable JWKS key", extra={"source": source, "index": index})
            continue
        kid = str(item.get("kid") or f"#{index}")
        alg = item.get("alg") if isinstance(item.get("alg"), str) else None
        keys[kid] = (str(item["kty"]), jwk.key, alg)
    return keys


def _kid_for_pem(public_key: Any) -> str:
    """The key id the API server gives its key: base64url(SHA-256(DER SubjectPublicKeyInfo))."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _select(keys: Mapping[str, tuple[str, Any, str | None]], kid: str | None, alg: str) -> list[Any]:
    kty = _kty_for(alg)
    if kid is not None:
        entry = keys.get(kid)
        if entry is None:
            return []
        return [entry[1]] if entry[0] == kty and entry[2] in (None, alg) else []
    return [key for t, key, a in keys.values() if t == kty and a in (None, alg)]


class StaticKeys:
    """Keys from files: PEM public keys (kid as the API server derives it) and/or JWKS documents."""

    def __init__(self, pem_files: Sequence[str], jwks_files: Sequence[str]) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        self.keys: dict[str, tuple[str, Any, str | None]] = {}
        for path in jwks_files:
            try:
                data = json.loads(Path(path).read_text())
            except OSError as exc:
                raise KeygateError(f"cannot read jwks_file {path}: {os.strerror(exc.errno or 0)}") from None
            except ValueError:
                raise KeygateError(f"jwks_file {path} is not valid JSON") from None
            self.keys.update(_keys_from_jwks(data, path))
        for path in pem_files:
            try:
                pem = Path(path).read_bytes()
            except OSError as exc:
                raise KeygateError(
                    f"cannot read issuer_key_file {path}: {os.strerror(exc.errno or 0)}"
                ) from None
            blocks = [b + b"-----END PUBLIC KEY-----\n" for b in pem.split(b"-----END PUBLIC KEY-----")[:-1]]
            if not blocks:
                raise KeygateError(f"issuer_key_file {path} holds no PEM 'PUBLIC KEY' block")
            for block in blocks:
                try:
                    key = load_pem_public_key(block.strip() + b"\n")
                except ValueError:
                    raise KeygateError(f"issuer_key_file {path}: unreadable PEM public key") from None
                if isinstance(key, rsa.RSAPublicKey):
                    self.keys[_kid_for_pem(key)] = ("RSA", key, None)
                elif isinstance(key, ec.EllipticCurvePublicKey):
                    self.keys[_kid_for_pem(key)] = ("EC", key, None)
                else:
                    raise KeygateError(f"issuer_key_file {path}: only RSA and EC keys can sign tokens")
        if not self.keys:
            raise KeygateError("the issuer key files hold no RSA or EC signing key")

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]:
        return _select(self.keys, kid, alg)

    async def aclose(self) -> None:
        return None


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
    """

    def __init__(
        self, issuer: str, http: HTTPSettings, *, jwks_url: str = "", min_refresh: float = 10.0
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.http = http
        self.jwks_url = jwks_url
        self.min_refresh = min_refresh
        self.keys: dict[str, tuple[str, Any, str | None]] = {}
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
        import httpx2

        try:
            response = await self._http().get(url, headers=self._headers(url))
        except httpx2.HTTPError as exc:
            raise BackendUnavailable(
                f"cannot reach the token issuer at {url} ({type(exc).__name__}); no token can be verified"
            ) from None
        if response.status_code != 200:
            raise BackendUnavailable(f"the token issuer answered {url} with HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise BackendUnavailable(f"the token issuer's {url} is not JSON") from None

    async def _discover(self, base: str) -> str:
        """The jwks_uri of the openid-configuration at ``base``, if it speaks for our issuer."""
        discovery = await self._get_json(base + "/.well-known/openid-configuration")
        if not isinstance(discovery, dict) or not isinstance(discovery.get("jwks_uri"), str):
            raise BackendUnavailable(f"the openid-configuration at {base} has no jwks_uri")
        if str(discovery.get("issuer", "")).rstrip("/") != self.issuer:
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
        return await self._discover(self.issuer)

    async def refresh(self) -> None:
        self.attempted_at = time.monotonic()
        url = self.jwks_url or await self._jwks_url()
        try:
            keys = _keys_from_jwks(await self._get_json(url), url)
        except KeygateError as exc:
            raise BackendUnavailable(exc.message) from None
        self.keys = keys
        self.fetched_at = time.monotonic()
        self.fetches += 1
        log.info("issuer keys fetched", extra={"jwks_url": url, "key_ids": sorted(keys)})

    async def keys_for(self, kid: str | None, alg: str) -> list[Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        now = time.monotonic()
        if not self.keys or now - self.fetched_at > JWKS_TTL:
            async with self._lock:
                if not self.keys:
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
        found = _select(self.keys, kid, alg)
        if found or kid is None:
            return found
        async with self._lock:
            found = _select(self.keys, kid, alg)
            if not found and time.monotonic() - self.attempted_at >= self.min_refresh:
                await self.refresh()
                found = _select(self.keys, kid, alg)
        return found

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate member {key!r}")
        seen[key] = value
    return seen


def _segments(token: str) -> dict[str, Any]:
    """The JOSE header, after checking header and payload for duplicate members.

    Duplicates are refused because parsers disagree on which one wins. The header is read here
    only to pick the key; PyJWT then verifies the whole token (including that ``alg`` is the one
    we chose the key for).
    """
    parsed: list[Any] = []
    for segment in token.split(".")[:2]:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            parsed.append(json.loads(raw, object_pairs_hook=_no_duplicates))
        except binascii.Error:
            raise _reject("is malformed (bad base64url; truncated or not a JWT)") from None
        except ValueError as exc:
            raise _reject(f"is malformed ({exc}; truncated or not a JWT)") from None
    if not isinstance(parsed[0], dict) or not isinstance(parsed[1], dict):
        raise _reject("is malformed (header and payload must be JSON objects)")
    return parsed[0]


VERIFIED_TTL = 30.0
VERIFIED_MAX = 4096


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
        self.issuer = issuer.rstrip("/")
        self.keys = keys
        self.kube = kube
        self.clock_skew = clock_skew
        self.node_name = node_name
        self._verified: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()

    async def verify(self, token: str, pod: PodAttributes) -> VerifiedToken:
        if self.keys is None:
            assert self.kube is not None
            return await self._review(token, pod)
        claims = await self._decoded(token)
        return self._bind(claims, pod)

    async def _decoded(self, token: str) -> dict[str, Any]:
        """Signature, issuer and audience checks, remembered for a short while per token.

        The kubelet re-sends the same token on every rotation poll until it renews it, and
        parsing plus verifying a JWS dominates a Mount's CPU. A token that verified within the
        last ``VERIFIED_TTL`` seconds is not re-verified, but its time claims are re-checked on
        every call and the pod binding is always checked by the caller; keys are cached for far
        longer than this anyway, so no revocation is delayed by it.
        """
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        hit = self._verified.get(digest)
        if hit is not None and now - hit[0] < VERIFIED_TTL:
            claims = hit[1]
            if now - self.clock_skew < float(claims["exp"]) and now + self.clock_skew >= float(
                claims.get("nbf", claims["iat"])
            ):
                return claims
            self._verified.pop(digest, None)
        claims = await self._decode(token)
        if isinstance(claims.get("exp"), int | float) and isinstance(claims.get("iat"), int | float):
            self._verified[digest] = (now, claims)
            if len(self._verified) > VERIFIED_MAX:
                self._verified.popitem(last=False)
        return claims

    async def _decode(self, token: str) -> dict[str, Any]:
        assert self.keys is not None
        if token.count(".") != 2:
            raise _reject("is malformed (a JWS has three dot-separated parts; truncated?)")
        header = _segments(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise _reject(
                f"uses algorithm {alg!r}; only asymmetric signatures are accepted "
                f"({', '.join(sorted(ALLOWED_ALGORITHMS))})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _reject("has a non-string 'kid' header")
        candidates = await self.keys.keys_for(kid, alg)
        if not candidates:
            raise _reject(
                f"is signed with key id {kid!r} ({alg}), which is not among the issuer's keys"
                if kid
                else f"has no key id and no {alg} issuer key exists"
            )
        last: Exception | None = None
        for key in candidates:
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
        if not isinstance(iss, str) or iss.rstrip("/") != self.issuer:
            raise _reject(f"was issued by {iss!r}, not the configured issuer {self.issuer!r}")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not audiences:
            raise _reject(f"has no audience; keygate accepts only tokens for audience {self.audience!r}")
        if self.audience not in audiences:
            raise _reject(f"is for audience(s) {audiences!r}, not {self.audience!r}")
        return claims

    def _bind(self, claims: Mapping[str, Any], pod: PodAttributes) -> VerifiedToken:
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
        got = VerifiedToken(
            namespace=k8s["namespace"],
            service_account=str(sa_claim.get("name", "")),
            pod_name=str(pod_claim.get("name", "")),
            pod_uid=str(pod_claim.get("uid", "")),
            node_name=str(k8s["node"].get("name")) if isinstance(k8s.get("node"), dict) else None,
            expires=float(claims["exp"]) if isinstance(claims.get("exp"), int | float) else None,
        )
        if claims.get("sub") != f"system:serviceaccount:{got.namespace}:{got.service_account}":
            raise _reject("subject does not match its kubernetes.io namespace and service account")
        self._compare(got, pod)
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
        if self.audience not in audiences:
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
