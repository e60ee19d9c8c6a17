"""Every cache keygate keeps stays within its entry cap and byte budget, whatever is inserted,
and inputs are bounded before they are parsed (see docs/operate.md, "Memory and limits")."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keygate_dev.devcluster import k8s_key_id
from keygate_dev.driver_client import Pod, mount_request
from provider import spc, spc_memo
from provider.attest import tokens
from provider.bounded_cache import BoundedCache, approx_size, bounded_memo
from provider.errors import InvalidRequest, InvalidSPC, Unauthenticated
from provider.request import (
    MAX_ATTRIBUTES_BYTES,
    MAX_SECRETS_BYTES,
    MAX_TOKEN_BYTES,
    MountInput,
    PodAttributes,
    parse,
)
from provider.spc_memo import ObjectsMemo
from providers.common import extract
from providers.common.runtime import ClientCache
from providers.registry import Registry
from providers.sealed import envelope as sealed_format

KiB = 1024
MiB = 1024 * KiB
SEALED = sealed_format.seal(b"v", "default", "db", [sealed_format.generate_key().public_key()])


def within(cache: BoundedCache[object, object]) -> None:
    assert len(cache) <= cache.max_entries
    assert cache.bytes <= cache.max_bytes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the cache type ------------------------------------------------------------------------


def test_many_distinct_entries_stay_within_entries_and_bytes():
    cache: BoundedCache[str, str] = BoundedCache("t", max_entries=100, max_bytes=32 * KiB)
    for i in range(5000):
        cache.put(f"key-{i}", os.urandom(200).hex())
        within(cache)
    assert len(cache) < 100, "the byte budget, not the entry cap, should bind for 400-byte values"
    assert cache.evictions > 4000
    small: BoundedCache[int, int] = BoundedCache("t", max_entries=10, max_bytes=MiB)
    for i in range(1000):
        small.put(i, i)
    assert len(small) == 10 and small.get(999) == 999 and small.get(0) is None


def test_least_recently_used_goes_first():
    cache: BoundedCache[int, str] = BoundedCache("t", max_entries=3, max_bytes=MiB)
    for i in range(3):
        cache.put(i, str(i))
    assert cache.get(0) == "0"
    cache.put(3, "3")
    assert cache.get(1) is None and cache.get(0) == "0" and cache.get(3) == "3"


def test_an_entry_above_the_per_entry_limit_is_not_kept():
    cache: BoundedCache[str, str] = BoundedCache("t", max_entries=10, max_bytes=MiB, max_entry_bytes=KiB)
    assert cache.put("small", "x" * 100)
    assert not cache.put("big", "x" * 10 * KiB)
    assert cache.get("big") is None and cache.get("small") == "x" * 100
    assert cache.refused == 1 and cache.bytes < KiB
    assert not cache.put("small", "y" * 10 * KiB), "replacing with an oversized value drops the key"
    assert cache.get("small") is None and cache.bytes == 0


def test_ttl_and_per_entry_deadlines_expire_entries():
    clock = FakeClock()
    cache: BoundedCache[str, int] = BoundedCache("t", max_entries=10, max_bytes=MiB, ttl=30, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2, expires=clock.now + 5)
    clock.now += 10
    assert cache.get("a") == 1 and cache.get("b") is None
    clock.now += 25
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_expired_entries_are_evicted_before_live_ones():
    clock = FakeClock()
    cache: BoundedCache[int, int] = BoundedCache("t", max_entries=3, max_bytes=MiB, clock=clock)
    cache.put(0, 0, expires=clock.now + 1)
    cache.put(1, 1)
    cache.put(2, 2)
    clock.now += 2
    cache.put(3, 3)
    assert [cache.get(i) for i in range(4)] == [None, 1, 2, 3]


def test_approx_size_counts_shared_objects_once_and_stops_at_the_limit():
    leaf = ["x" * 1000] * 9
    tree: object = leaf
    for _ in range(9):
        tree = [tree] * 9  # 9**9 leaves if expanded, ten distinct lists in memory
    assert approx_size(tree) < 10 * KiB
    huge = ["y" * 1000 for _ in range(10_000)]
    assert approx_size(huge, limit=50 * KiB) > 50 * KiB
    assert approx_size("z" * 5000) >= 5000


def test_bounded_memo_caps_entries_bytes_and_skips_large_arguments_and_errors():
    calls: list[str] = []

    @bounded_memo("t", max_entries=50, max_bytes=32 * KiB, max_entry_bytes=2 * KiB)
    def upper(text: str) -> str:
        calls.append(text)
        if text.startswith("bad"):
            raise ValueError("refused")
        return text.upper()

    cache = upper.cache  # type: ignore[attr-defined]
    for i in range(2000):
        assert upper(f"v{i}-" + "a" * 300) == f"V{i}-" + "A" * 300
        within(cache)
    calls.clear()
    assert upper("v1999-" + "a" * 300) and not calls, "the most recent entry is a hit"
    big = "b" * 4 * KiB
    upper(big)
    upper(big)
    assert calls.count(big) == 2, "arguments above the per-entry limit are recomputed, not kept"
    for _ in range(2):
        with pytest.raises(ValueError):
            upper("bad")
    assert calls.count("bad") == 2, "errors are not cached"


# --- the caches keygate keeps ---------------------------------------------------------------


def test_resolved_spc_cache_is_bounded_skips_huge_spcs_and_keeps_no_refusal():
    """The one SPC cache (:mod:`provider.spc_memo`): bounded, nothing kept for a refused or huge
    SPC, and nothing below it keeps the parsed text of an SPC that resolution then refuses."""
    memo = ObjectsMemo(Registry({}))
    cache = memo._cache
    for i in range(3000):
        objects = "".join(f"- objectName: o{i}-{j}\n  sealed: {SEALED}\n" for j in range(3))
        assert len(memo.parse({"objects": objects})) == 3
        within(cache)
    assert len(cache) <= cache.max_entries and cache.bytes <= cache.max_bytes
    before = (len(cache), cache.bytes)
    refused = [{"objectName": f"r{j}", "sealed": os.urandom(300).hex()} for j in range(5)]
    with pytest.raises(InvalidSPC):
        memo.parse({"objects": json.dumps(refused)})
    huge = "".join(f"- objectName: h{j}\n  sealed: {SEALED}\n" for j in range(400))
    assert len(huge) > spc_memo.MAX_ENTRY_BYTES
    assert len(memo.parse({"objects": huge})) == 400
    assert (len(cache), cache.bytes) == before, "a refused SPC and a 100+ KB SPC are not remembered"
    assert (cache.max_entries, cache.max_bytes, cache.max_entry_bytes) == (256, MiB, 64 * KiB)


def test_opened_envelope_cache_is_bounded_and_keeps_only_opened_ones():
    key = sealed_format.generate_key()
    keys = sealed_format.NodeKeys([key])
    opened = sealed_format.OpenedEnvelopes()
    cache = opened._cache
    for i in range(300):
        text = sealed_format.seal(os.urandom(8_000), "ns", f"o{i}", [key.public_key()])
        assert opened.open(text, "ns", f"o{i}", keys)[0].name == f"o{i}"
        within(cache)
    assert cache.bytes > cache.max_bytes // 2, "300 distinct 11 KB envelopes fill the byte budget"
    before = (len(cache), cache.bytes)
    big = sealed_format.seal(os.urandom(200_000), "ns", "big", [key.public_key()])
    assert opened.open(big, "ns", "big", keys)[1]
    other_name = sealed_format.seal(b"v", "ns", "a", [key.public_key()])
    other_key = sealed_format.seal(b"v", "ns", "b", [sealed_format.generate_key().public_key()])
    for text, name in ((other_name, "elsewhere"), (other_key, "b")):
        for _ in range(2):
            with pytest.raises(sealed_format.SealError):
                opened.open(text, "ns", name, keys)
    assert (len(cache), cache.bytes) == before, "a 270 KB envelope and refused ones are not remembered"
    assert (cache.max_entries, cache.max_bytes, cache.max_entry_bytes) == (2048, MiB, 32 * KiB)


def test_jmespath_cache_is_bounded():
    cache = extract.compile_jmes.cache  # type: ignore[attr-defined]
    cache.clear()
    for i in range(2000):
        extract.compile_jmes(f"a{i}.b.c")
        within(cache)
    assert len(cache) == cache.max_entries
    long_expression = ".".join(f"f{i}" for i in range(5000))
    extract.compile_jmes(long_expression)
    assert cache.get((long_expression,)) is None


AUDIENCE = "keygate"
ISSUER = "https://issuer.test"
POD = PodAttributes(namespace="ns", name="app-0", uid=str(uuid.uuid4()), service_account="app")


def _verifier(tmp_path: Path) -> tuple[tokens.TokenVerifier, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    keys = tokens.StaticKeys([str(pem)], [])
    return tokens.TokenVerifier(audience=AUDIENCE, issuer=ISSUER, keys=keys), key


def _token(key: ec.EllipticCurvePrivateKey, pad: int = 0) -> str:
    now = int(time.time())
    claims = {
        "aud": [AUDIENCE],
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "sub": f"system:serviceaccount:{POD.namespace}:{POD.service_account}",
        "kubernetes.io": {
            "namespace": POD.namespace,
            "pod": {"name": POD.name, "uid": POD.uid},
            "serviceaccount": {"name": POD.service_account, "uid": str(uuid.uuid4())},
        },
    }
    if pad:
        claims["pad"] = "p" * pad
    kid = k8s_key_id(key.public_key())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def test_verified_token_memo_is_bounded(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_MAX", 40)
    monkeypatch.setattr(tokens, "VERIFIED_MAX_BYTES", 256 * KiB)
    verifier, key = _verifier(tmp_path)
    memo = verifier._verified

    async def run() -> None:
        for _ in range(300):
            got = await verifier.verify(_token(key), POD)
            assert got.pod_uid == POD.uid
            within(memo)  # type: ignore[arg-type]
        assert len(memo) == 40
        entry = memo.bytes // len(memo)
        fat = _token(key, pad=tokens.VERIFIED_ENTRY_BYTES)
        assert (await verifier.verify(fat, POD)).pod_name == POD.name
        assert len(memo) == 40 and memo.bytes // len(memo) <= entry + 16, (
            "a token's other claims (here 8 KiB of padding) are never kept: only what it proves"
        )
        assert entry < 1024

    asyncio.run(run())


def test_a_token_refused_for_its_pod_is_never_remembered(tmp_path: Path):
    """Replaying real tokens of other pods costs a verification each time, never memory."""
    verifier, key = _verifier(tmp_path)
    memo = verifier._verified
    elsewhere = PodAttributes(
        namespace=POD.namespace, name="other", uid=str(uuid.uuid4()), service_account="app"
    )

    async def run() -> None:
        for _ in range(50):
            with pytest.raises(Unauthenticated, match="belongs to pod 'app-0'"):
                await verifier.verify(_token(key), elsewhere)
        assert len(memo) == 0 and memo.bytes == 0
        token = _token(key)
        assert (await verifier.verify(token, POD)).pod_uid == POD.uid
        assert len(memo) == 1
        with pytest.raises(Unauthenticated, match="belongs to pod 'app-0'"):
            await verifier.verify(token, elsewhere)  # a remembered token is still bound to its pod

    asyncio.run(run())


def test_verified_token_memo_has_byte_and_entry_bounds_by_default(tmp_path: Path):
    verifier, _ = _verifier(tmp_path)
    memo = verifier._verified
    assert memo.max_entries == tokens.VERIFIED_MAX and memo.max_bytes == tokens.VERIFIED_MAX_BYTES
    assert memo.max_entry_bytes == tokens.VERIFIED_ENTRY_BYTES


def test_client_cache_is_bounded_and_leaves_no_locks_behind():
    async def run() -> None:
        cache: ClientCache[tuple[str, ...], object] = ClientCache(
            max_entries=50, max_bytes=400 * KiB, entry_bytes=4 * KiB, max_key_bytes=KiB
        )
        deadline = time.monotonic() + 3600

        async def build() -> tuple[object, float]:
            return object(), deadline

        async def fail() -> tuple[object, float]:
            raise RuntimeError("login refused")

        for i in range(2000):
            await cache.get(("https://vault", f"token-digest-{i}"), build)
            assert len(cache) <= 50 and cache.bytes <= 400 * KiB
            with pytest.raises(RuntimeError):
                await cache.get(("https://vault", f"refused-{i}"), fail)
        assert cache.in_flight == 0, "per-key build locks are dropped once the build is done"
        huge = ("https://" + "v" * 10 * KiB, "x")
        first = await cache.get(huge, build)
        assert await cache.get(huge, build) is not first, "a key above max_key_bytes is not kept"
        builds = []

        async def slow() -> tuple[object, float]:
            builds.append(1)
            await asyncio.sleep(0.01)
            return object(), deadline

        got = await asyncio.gather(*(cache.get(("same",), slow) for _ in range(20)))
        assert len(builds) == 1 and all(g is got[0] for g in got)
        assert cache.in_flight == 0

    asyncio.run(run())


def test_client_cache_honours_credential_expiry_and_margin():
    async def run() -> None:
        cache: ClientCache[str, int] = ClientCache(margin=60.0)
        counter = [0]

        async def short() -> tuple[int, float]:
            counter[0] += 1
            return counter[0], time.monotonic() + 30  # inside the margin: never reused

        assert await cache.get("k", short) == 1
        assert await cache.get("k", short) == 2

        async def long() -> tuple[int, float]:
            counter[0] += 1
            return counter[0], time.monotonic() + 3600

        assert await cache.get("l", long) == 3
        assert await cache.get("l", long) == 3
        cache.invalidate("l")
        assert await cache.get("l", long) == 4

    asyncio.run(run())


# --- input bounds ---------------------------------------------------------------------------


def _request(**kw: object) -> MountInput:
    base = mount_request("spc", {"objects": "- objectName: a"}, Pod(tokens={AUDIENCE: "t.t.t"}))
    values = {
        "attributes": base.attributes,
        "secrets": base.secrets,
        "target_path": base.target_path,
        "permission": base.permission,
        "current_object_version": {},
    }
    values.update(kw)
    return MountInput(**values)  # type: ignore[arg-type]


def _refused(request: MountInput, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(request)
    assert fragment in info.value.message, info.value.message


def test_oversized_request_fields_are_refused_before_parsing():
    attrs = json.loads(_request().attributes)
    assert parse(_request()).pod.name == "app-0"
    big = json.dumps({**attrs, "junk": "j" * MAX_ATTRIBUTES_BYTES})
    _refused(_request(attributes=big), f"at most {MAX_ATTRIBUTES_BYTES // KiB} KiB")
    wide = json.dumps({**attrs, "junk": "é" * (MAX_ATTRIBUTES_BYTES // 2)}, ensure_ascii=False)
    _refused(_request(attributes=wide), "attributes are 2048 KiB")
    _refused(_request(secrets=json.dumps({"k": "s" * MAX_SECRETS_BYTES})), "a Kubernetes Secret")
    token = json.dumps({AUDIENCE: {"token": "t" * (MAX_TOKEN_BYTES + 1)}})
    _refused(
        _request(attributes=json.dumps({**attrs, "csi.storage.k8s.io/serviceAccount.tokens": token})), "KiB"
    )
    many = json.dumps({f"aud{i}": {"token": "t.t.t"} for i in range(100)})
    _refused(
        _request(attributes=json.dumps({**attrs, "csi.storage.k8s.io/serviceAccount.tokens": many})),
        "audiences",
    )
    _refused(_request(target_path="/" + "p" * 5000), "PATH_MAX")
    _refused(_request(permission="4" * 100), "is not a file mode")
    _refused(_request(current_object_version={f"o{i}": "v" for i in range(5000)}), "at most 4096")
    _refused(_request(current_object_version={"o": "v" * 5000}), "longer than 4096")
    deep = _request().attributes[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    _refused(_request(attributes=deep), "nest too deeply")


def test_oversized_attributes_get_a_clear_code_from_the_daemon(start_daemon):
    d = start_daemon()
    request = mount_request("spc", {"objects": "- objectName: a", "junk": "j" * (3 * MiB)}, Pod())
    with pytest.raises(Exception) as info:
        d.client.mount(request)
    assert "[InvalidRequest] attributes are 3072 KiB; keygate accepts at most 2048 KiB" in str(info.value)
    assert d.client.version().runtime_name == "keygate"


BOMB = "\n".join(
    ["- objectName: a", "  x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"  x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    + ["- objectName: b", "  x: *a9"]
)


def test_yaml_aliases_node_floods_and_deep_nesting_are_refused():
    with pytest.raises(InvalidSPC, match=r"uses the YAML alias \*a0 at line 3, column 12"):
        spc.raw_items({"objects": BOMB})
    with pytest.raises(InvalidSPC, match=f"more than {spc.MAX_YAML_NODES} YAML nodes"):
        spc.raw_items({"objects": "[" + ", ".join(["{objectName: a}"] * 30_000) + "]"})
    with pytest.raises(InvalidSPC, match=f"nests deeper than {spc.MAX_YAML_DEPTH} levels"):
        spc.raw_items({"objects": "- " * 40 + "x"})
    with pytest.raises(InvalidSPC, match="alias"):
        spc.raw_items({"objects": "array:\n  - |\n    objectName: &n a\n    objectAlias: *n\n"})
    anchors_only = "- &first\n  objectName: a\n- objectName: b\n"
    assert [item["objectName"] for _, item in spc.raw_items({"objects": anchors_only})] == ["a", "b"]


def test_lint_refuses_the_alias_bomb_like_the_daemon(tmp_path: Path, capsys, start_daemon, node_key):
    from provider.cli import main

    objects = "\n".join("      " + line for line in BOMB.splitlines())
    (tmp_path / "spc.yaml").write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata:\n  name: bomb\n  namespace: ns\nspec:\n  provider: keygate\n"
        f"  parameters:\n    objects: |\n{objects}\n"
    )
    code = main(["lint", str(tmp_path / "spc.yaml")])
    out = capsys.readouterr()
    assert code != 0
    assert "uses the YAML alias *a0" in out.out + out.err
    d = start_daemon()
    with pytest.raises(Exception) as info:
        d.client.mount(mount_request("bomb", {"objects": BOMB}, Pod()))
    assert "[InvalidSecretProviderClass] parameter 'objects' uses the YAML alias *a0" in str(info.value)


def test_heap_trimmer_runs_after_large_requests_and_periodically_only():
    from provider.memory import HeapTrimmer, release_free_memory

    clock = FakeClock()

    async def run() -> None:
        trimmer = HeapTrimmer(after_bytes=MiB, every=30.0, delay=0.01, min_gap=0.0, clock=clock)
        for _ in range(100):
            trimmer.note(10 * KiB)
        await asyncio.sleep(0.05)
        assert trimmer.trims == 0, "1000 KB of small requests within 30 s need no trim"
        trimmer.note(100 * KiB)
        await asyncio.sleep(0.05)
        assert trimmer.trims == 1
        trimmer.note(KiB)
        await asyncio.sleep(0.05)
        assert trimmer.trims == 1
        clock.now += 31
        trimmer.note(KiB)
        await asyncio.sleep(0.05)
        assert trimmer.trims == 2

    if not release_free_memory():
        pytest.skip("the C library has no malloc_trim")
    asyncio.run(run())


def test_heap_trimmer_is_not_stuck_on_a_closed_loop():
    from provider.memory import HeapTrimmer, release_free_memory

    if not release_free_memory():
        pytest.skip("the C library has no malloc_trim")
    trimmer = HeapTrimmer(after_bytes=KiB, delay=0.01, min_gap=0.0)

    async def big() -> None:
        trimmer.note(2 * KiB)

    asyncio.run(big())  # the loop ends before the trim fires

    async def again() -> None:
        trimmer.note(2 * KiB)
        await asyncio.sleep(0.05)

    asyncio.run(again())
    assert trimmer.trims == 1


def test_a_jwks_with_too_many_keys_is_refused_whole():
    """The issuer's key set is bounded too: a flood of keys is refused, not kept."""
    from provider.attest.issuer_keys import MAX_JWKS_KEYS, KeyRules, keys_from_jwks
    from provider.errors import KeygateError

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    few = {"keys": [{**jwk, "kid": f"k{i}", "use": "sig"} for i in range(MAX_JWKS_KEYS)]}
    assert len(keys_from_jwks(few, "jwks", KeyRules()).keys) == MAX_JWKS_KEYS
    flood = {"keys": [{**jwk, "kid": f"k{i}", "use": "sig"} for i in range(MAX_JWKS_KEYS + 1)]}
    with pytest.raises(KeygateError, match=f"reads at most {MAX_JWKS_KEYS}"):
        keys_from_jwks(flood, "jwks", KeyRules())


def test_pooled_clients_are_bounded_and_closed_when_dropped():
    """Long-lived clients (vault sessions, gRPC channels) live in the one bounded cache type."""
    from providers.common.runtime import Pooled

    closed: list[str] = []
    pool: Pooled[str, str] = Pooled(lambda key: f"client-{key}", closed.append, max_entries=2)
    assert pool.get("a") == "client-a" and pool.get("a") == "client-a"
    pool.get("b")
    pool.get("a")  # a is now the most recently used
    pool.get("c")
    assert closed == ["client-b"] and len(pool) == 2
    huge = "h" * (64 * KiB)
    assert pool.get(huge) == f"client-{huge}"  # built and used, never kept
    assert len(pool) == 2
    pool.close()
    assert sorted(closed) == ["client-a", "client-b", "client-c"]


def test_client_cache_closes_its_clients_on_clear_only():
    """Azure keeps its SDK clients only here (bounded), closed at shutdown; one dropped before
    is left to the garbage collector, since a concurrent Mount may still be using it."""
    closed: list[str] = []
    cache: ClientCache[str, str] = ClientCache(max_entries=2, margin=0.0, close=closed.append)

    async def fill() -> None:
        for key in ("a", "b", "c"):
            assert await cache.get(key, _factory(f"client-{key}")) == f"client-{key}"
        cache.invalidate("b")

    asyncio.run(fill())
    assert len(cache) == 1 and closed == []
    cache.clear()
    assert closed == ["client-c"] and len(cache) == 0


def _factory(client: str):
    async def build() -> tuple[str, float]:
        return client, time.monotonic() + 3600

    return build
