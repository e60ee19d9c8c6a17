"""Benchmark 7: the daemon's memory under a stream of hostile Mounts, and whether it comes back.

    PYTHONPATH=$PWD python bench/hostile_rss.py [--mounts 10000] [--clients 8]

A real ``keygate serve`` (attestation on, pod watch on, the Kubernetes API stand-in of
:mod:`keygate_dev.devcluster` in this process) receives a mix of Mounts an attacker with access to
the socket, or a hostile SPC author, could send. Every hostile request has fresh random content,
so any cache keyed by request input would grow with it:

* garbage, forged (another key, the issuer's kid), expired and wrong-pod tokens (the last are
  signed by the real issuer, so they pass the signature check and reach the verified-token memo);
* oversized tokens and 1-10 MB attributes (above the gRPC limit the transport refuses them);
* YAML alias bombs, deeply nested YAML and JSON, attribute maps with thousands of keys;
* many distinct SPC texts, including structurally valid sealed envelopes of up to 256 KB;
* valid Mounts mixed in (about one in ten), which must keep succeeding.

RSS is read from ``/proc/<pid>/status`` (VmRSS) before, every 1000 Mounts, right after, and after
two idle seconds (keygate returns freed memory to the kernel shortly after large requests, see
provider/memory.py). Prints the series and one markdown row in bench/run.py's format; also
``python bench/run.py --only hostile``. ``--only KIND`` sends one kind (plus the valid ones);
``HOSTILE_SMAPS=1`` prints the daemon's largest resident mappings at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import Env, Row, daemon, rss_mb  # noqa: E402

from keygate_dev.devcluster import DevCluster, PodSpec, SigningKey, pinned, running  # noqa: E402
from keygate_dev.driver_client import Pod, mount_request  # noqa: E402
from provider.wire import service_pb2 as pb  # noqa: E402
from provider.wire import service_pb2_grpc as pb_grpc  # noqa: E402
from providers.sealed.envelope import generate_key, private_pem, seal  # noqa: E402

TARGET_MB = 80.0
NODE = "bench-node"
POD_SPEC = PodSpec(
    "bench", "bench-0", str(uuid.uuid4()), "bench", {"app": pinned("ghcr.io/acme/app")}, node_name=NODE
)


def _rand_text(n: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(n * 3 // 4 + 3)).decode()[:n]


class Hostile:
    """Builds one request of each kind; every call makes new random content."""

    def __init__(self, env: Env, kube: DevCluster) -> None:
        self.env = env
        self.kube = kube
        self.rogue = SigningKey.generate("rsa")
        self.valid_objects = env.sealed_objects(1)

    def _pod(self, token: str, spec: PodSpec = POD_SPEC) -> Pod:
        return Pod(spec.namespace, spec.name, spec.uid, spec.service_account, {"keygate": token})

    def _mount(self, token: str, parameters: dict[str, str] | None = None) -> pb.MountRequest:
        params = {"objects": self.valid_objects} if parameters is None else parameters
        return mount_request("bench", params, self._pod(token))

    def valid(self) -> pb.MountRequest:
        return self._mount(self.kube.mint(POD_SPEC))

    def garbage_token(self) -> pb.MountRequest:
        n = random.randint(64, 4000)
        parts = [_rand_text(n // 3) for _ in range(random.choice((1, 3, 3, 5)))]
        return self._mount(".".join(parts))

    def huge_token(self) -> pb.MountRequest:
        return self._mount(".".join(_rand_text(random.randint(30_000, 300_000)) for _ in range(3)))

    def forged_token(self) -> pb.MountRequest:
        claims = self.kube.claims(POD_SPEC, "keygate") | {"pad": _rand_text(random.randint(10, 2000))}
        return self._mount(self.kube.sign(claims, self.rogue, kid=self.kube.keys[0].kid))

    def expired_token(self) -> pb.MountRequest:
        past = int(time.time()) - random.randint(7200, 10**6)
        claims = self.kube.claims(POD_SPEC, "keygate") | {"exp": past, "iat": past - 3600, "nbf": past - 3600}
        return self._mount(self.kube.sign(claims))

    def wrong_pod_token(self) -> pb.MountRequest:
        other = PodSpec("bench", "bench-0", str(uuid.uuid4()), "bench", {}, node_name=NODE)
        claims = self.kube.claims(other, "keygate") | {"pad": _rand_text(random.randint(10, 8000))}
        return self._mount(self.kube.sign(claims))

    def big_attributes(self) -> pb.MountRequest:
        size = (
            random.randint(1_000_000, 4_000_000)
            if random.random() < 0.5
            else random.randint(4_000_000, 10_000_000)
        )
        return self._mount(
            self.kube.mint(POD_SPEC), {"objects": self.valid_objects, "junk": _rand_text(size)}
        )

    def big_objects(self) -> pb.MountRequest:
        n = random.randint(200, 1000)
        items = [{"objectName": f"o{i}", "backend": "nope", "note": _rand_text(1000)} for i in range(n)]
        return self._mount(self.kube.mint(POD_SPEC), {"objects": json.dumps(items)})

    def alias_bomb(self) -> pb.MountRequest:
        """Nine levels of nine aliases each: 9**9 leaves once expanded, inside valid objects."""
        lines = [f"- objectName: a-{_rand_text(8)}", f"  x0: &a0 [{', '.join([_rand_text(4)] * 9)}]"]
        for i in range(1, 10):
            lines.append(f"  x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
        lines += [f"- objectName: b{j}\n  x: *a9" for j in range(random.randint(1, 50))]
        return self._mount(self.kube.mint(POD_SPEC), {"objects": "\n".join(lines)})

    def deep_yaml(self) -> pb.MountRequest:
        depth = random.randint(100, 900)
        return self._mount(self.kube.mint(POD_SPEC), {"objects": "- " * depth + _rand_text(8)})

    def deep_json(self) -> pb.MountRequest:
        depth = random.randint(1000, 200_000)
        request = self._mount(self.kube.mint(POD_SPEC))
        attrs = request.attributes[:-1] + f', "deep": {"[" * depth}"{_rand_text(8)}"{"]" * depth}}}'
        request.attributes = attrs
        return request

    def many_keys(self) -> pb.MountRequest:
        params = {"objects": self.valid_objects}
        params.update({_rand_text(12): _rand_text(20) for _ in range(random.randint(1000, 20_000))})
        return self._mount(self.kube.mint(POD_SPEC), params)

    def distinct_spc(self) -> pb.MountRequest:
        items = [
            {"objectName": f"s{i}-{_rand_text(6)}", "sealed": _rand_text(random.randint(100, 4000))}
            for i in range(random.randint(1, 40))
        ]
        return self._mount(self.kube.mint(POD_SPEC), {"objects": json.dumps(items)})

    def sealed_envelopes(self) -> pb.MountRequest:
        """Structurally valid envelopes for names the SPC does not use: parse passes, open fails."""
        items = [
            {
                "objectName": f"e{i}",
                "sealed": seal(
                    os.urandom(random.randint(1000, 256_000)), "bench", _rand_text(8), [self.env.public]
                ),  # type: ignore[list-item]
            }
            for i in range(random.randint(1, 3))
        ]
        return self._mount(self.kube.mint(POD_SPEC), {"objects": json.dumps(items)})


def mix(h: Hostile) -> list[tuple[str, Callable[[], pb.MountRequest], int]]:
    """(kind, builder, weight): mostly cheap refusals, a few large ones, one in ten valid."""
    return [
        ("valid", h.valid, 100),
        ("garbage token", h.garbage_token, 150),
        ("huge token", h.huge_token, 20),
        ("forged token", h.forged_token, 120),
        ("expired token", h.expired_token, 100),
        ("wrong-pod token", h.wrong_pod_token, 150),
        ("1-10 MB attributes", h.big_attributes, 6),
        ("0.2-1 MB objects", h.big_objects, 4),
        ("alias bomb", h.alias_bomb, 50),
        ("deep YAML", h.deep_yaml, 30),
        ("deep JSON", h.deep_json, 30),
        ("many attribute keys", h.many_keys, 10),
        ("distinct SPC text", h.distinct_spc, 200),
        ("sealed envelopes", h.sealed_envelopes, 30),
    ]


async def drive(
    sock: str,
    h: Hostile,
    total: int,
    clients: int,
    on_progress: Callable[[int], None],
    only: frozenset[str] = frozenset(),
) -> tuple[Counter[str], Counter[str]]:
    """Send ``total`` Mounts from ``clients`` concurrent callers; (sent by kind, outcome by kind)."""
    kinds = [k for k in mix(h) if not only or k[0] in only or k[0] == "valid"]
    names = [k for k, _, _ in kinds]
    weights = [w for _, _, w in kinds]
    builders = {k: b for k, b, _ in kinds}
    sent: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    options = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"unix:{sock}", options=options) as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        done = [0]
        remaining = [total]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                kind = random.choices(names, weights)[0]
                request = builders[kind]()
                sent[kind] += 1
                try:
                    await stub.Mount(request, timeout=60)
                    outcomes[f"{kind}: ok"] += 1
                except grpc.aio.AioRpcError as err:
                    outcomes[f"{kind}: {err.code().name}"] += 1
                done[0] += 1
                if done[0] % 1000 == 0:
                    on_progress(done[0])

        await asyncio.gather(*(worker() for _ in range(clients)))
    return sent, outcomes


def smaps_summary(pid: int, top: int = 12) -> str:
    """The largest resident mappings of ``pid`` (to tell heap, thread arenas and libraries apart)."""
    rows: list[tuple[int, str]] = []
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5:
            name = f"{parts[0]} {parts[5] if len(parts) > 5 else '[anon]'}"
        elif parts[0] == "Rss:":
            rows.append((int(parts[1]), name))
    rows.sort(reverse=True)
    return "\n".join(f"{kb / 1024:8.1f} MB  {n}" for kb, n in rows[:top])


def measure(
    env: Env, total: int, clients: int, verbose: bool = True, only: frozenset[str] = frozenset()
) -> dict[str, object]:
    """Run the hostile stream against a fresh daemon; the RSS series and outcome counts."""
    with running(env.tmp, api_token="bench") as kube:
        kube.add_pod(POD_SPEC)
        config = {
            "insecure_skip_attestation": False,
            "issuer": kube.issuer,
            "kube_api_url": kube.url,
            "kube_ca": str(kube.ca_file),
            "kube_token_file": str(kube.token_file),
            "node_name": NODE,
            "pod_watch": True,
            "audit_sink": str(env.tmp / "hostile-audit.jsonl"),
        }
        h = Hostile(env, kube)
        with daemon(env, "hostile", config) as (proc, sock, _):
            warm = [h.valid() for _ in range(200)]

            async def warm_up() -> None:
                async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
                    stub = pb_grpc.CSIDriverProviderStub(channel)
                    for request in warm:
                        await stub.Mount(request, timeout=30)

            asyncio.run(warm_up())
            time.sleep(0.5)
            before = rss_mb(proc.pid)
            series: list[tuple[int, float]] = []

            def progress(n: int) -> None:
                series.append((n, rss_mb(proc.pid)))
                if verbose:
                    print(f"  after {n:6d} mounts: RSS {series[-1][1]:6.1f} MB", file=sys.stderr, flush=True)

            started = time.perf_counter()
            sent, outcomes = asyncio.run(drive(sock, h, total, clients, progress, only))
            elapsed = time.perf_counter() - started
            right_after = rss_mb(proc.pid)
            time.sleep(2.0)
            settled = rss_mb(proc.pid)
            peak = max([before, right_after, settled, *(r for _, r in series)])
            if os.environ.get("HOSTILE_SMAPS"):
                print(smaps_summary(proc.pid), file=sys.stderr)
            alive = proc.poll() is None
    return {
        "before": before,
        "series": series,
        "after": right_after,
        "settled": settled,
        "peak": peak,
        "seconds": elapsed,
        "sent": sent,
        "outcomes": outcomes,
        "alive": alive,
    }


def row(result: dict[str, object], total: int) -> Row:
    before, settled, peak = result["before"], result["settled"], result["peak"]
    assert isinstance(before, float) and isinstance(settled, float) and isinstance(peak, float)
    outcomes = result["outcomes"]
    assert isinstance(outcomes, Counter)
    valid_ok = outcomes["valid: ok"]
    valid_all = sum(n for k, n in outcomes.items() if k.startswith("valid:"))
    met = settled < TARGET_MB and bool(result["alive"]) and valid_ok == valid_all
    return (
        f"7. RSS after {total} hostile Mounts (tokens, bombs, 1-10 MB attributes, distinct SPCs)",
        f"{before:.1f} MB -> {settled:.1f} MB (peak {peak:.1f} MB, {valid_ok}/{valid_all} valid ok)",
        f"target < {TARGET_MB:.0f} MB: " + ("met" if met else "NOT met"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mounts", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", action="append", default=[], help="send only this kind (and valid ones)")
    args = parser.parse_args()
    random.seed(args.seed)
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    with tempfile.TemporaryDirectory(prefix="kgh-") as tmp:
        key = generate_key()
        key_path = Path(tmp) / "node.key"
        key_path.write_bytes(private_pem(key))
        env = Env(Path(tmp), key_path, key.public_key())
        result = measure(env, args.mounts, args.clients, only=frozenset(args.only))
    print(f"RSS before {result['before']:.1f} MB, right after {result['after']:.1f} MB, ", end="")
    print(f"2 s later {result['settled']:.1f} MB, peak {result['peak']:.1f} MB; {result['seconds']:.0f} s")
    print("sent:", dict(sorted(result["sent"].items())))  # type: ignore[attr-defined]
    print("outcomes:", dict(sorted(result["outcomes"].items())))  # type: ignore[attr-defined]
    print("| measurement | result | target / comparison |")
    print("|---|---|---|")
    r = row(result, args.mounts)
    print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
