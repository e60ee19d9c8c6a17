"""Benchmark 6: a node reboot's burst against Vault: 200 pods x 10 kv objects arriving at once.

    PYTHONPATH=$PWD python bench/vault_burst.py [--pods 200] [--objects 10] [--rounds 3]
        [--profile out.svg]

A real ``keygate serve`` process talks TLS to a real OpenBao dev server (started like the tests
do, jwt auth trusting a local RSA "service-account issuer"). Every pod is distinct (its own name,
uid, service account and projected JWT), as after a node reboot: keygate logs in *as each pod*,
so the least it can do is one login per pod, not one per object (10 x more) and not one per
rotation poll. All Mounts are sent at once from a grpc.aio client in this process.

Each round first measures the *floor* (:mod:`bench.vault_floor`): the same logins and reads sent
by a minimal aiohttp client with as many keep-alive TLS connections as keygate's per-endpoint
limit, straight to the same OpenBao; then keygate's burst with new pods. The ratio keygate/floor
of each round is the figure (both under the same load of this shared machine). After the rounds:
the same Mounts again, as the driver's rotation poll would (no login at all), and a burst of 200
replicas of one Deployment (one service account and kubernetes-auth role, so shared reads may
coalesce their reads) with OpenBao's audit log counting the reads that reached it. Logins are counted on the OpenBao side (new token accessors), so nothing in
keygate is trusted for the figures.

Prints one markdown table row in bench/run.py's format.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import vault_floor
from bench._burst import attesting, audited_reads, seed, serve, start_audited_bao, wave
from keygate_dev.driver_client import Pod, mount_request
from provider.wire import service_pb2 as pb
from tests.vault_fixtures import (
    AUDIENCE,
    Issuer,
    TokenReviewServer,
    Vault,
    configure,
    kubernetes_auth,
    start_bao,
)


def vault_settings(workers: int, limits: dict[str, Any]) -> dict[str, Any]:
    """The daemon's Vault client settings for a burst: its connection limit and rate limits."""
    return {"backends": {"vault": {"workers": workers}}, **limits}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accessors(vault: Vault) -> int:
    return len(vault.token_accessors())


def burst_role(vault: Vault) -> None:
    """A role any ``burst-*`` service account may log in with, so every pod is its own identity."""
    vault.root().write(
        "auth/jwt/role/burst",
        role_type="jwt",
        bound_audiences=[AUDIENCE],
        user_claim="sub",
        bound_claims_type="glob",
        bound_claims={"sub": "system:serviceaccount:default:burst-*"},
        token_policies=["app"],
        token_ttl="1h",
        token_max_ttl="2h",
    )


def distinct_pods(issuer: Issuer, n: int, tag: str) -> list[Pod]:
    return [
        issuer.pod(name=f"{tag}-{i}", uid=f"{tag}-0000-0000-0000-{i:012d}", service_account=f"burst-{i}")
        for i in range(n)
    ]


def replicas_burst(
    tmp: Path,
    issuer: Issuer,
    objects: str,
    paths: list[str],
    workers: int,
    pods: int = 200,
    limits: dict[str, Any] | None = None,
) -> tuple[float, int, int]:
    """(seconds, logins, reads that reached OpenBao) for ``pods`` replicas of one Deployment.

    Shared reads key on the verified service account, so this daemon attests every pod (its
    ``keygate`` token checked against the issuer's JWKS), and the role is a kubernetes-auth one
    (granted per service account; a jwt role may bind the pod's name, so jwt reads are shared
    per pod only). OpenBao's audit log counts the reads.
    """
    audited, audit = start_audited_bao(tmp)
    api = TokenReviewServer(issuer)
    proc = None
    try:
        configure(audited, issuer)
        vault = Vault(audited, issuer)
        kubernetes_auth(vault, api)
        assert seed(vault, "burst", len(paths)) == paths
        proc, sock = serve(tmp, "replicas", **attesting(tmp, issuer), **vault_settings(workers, limits or {}))
        params = vault.params(objects, vaultAuthMethod="kubernetes")

        def replica(name: str, uid: str) -> Pod:
            pod = Pod(name=name, uid=uid)
            pod.tokens = {aud: issuer.mint(pod, aud) for aud in (AUDIENCE, "keygate")}
            return pod

        asyncio.run(wave(sock, [mount_request("burst", params, replica("warm", "warm"))], len(paths)))
        replicas = [replica(f"replica-{i}", f"replica-0000-0000-0000-{i:012d}") for i in range(pods)]
        before, seen = accessors(vault), audited_reads(audit, paths)
        seconds = asyncio.run(wave(sock, [mount_request("burst", params, p) for p in replicas], len(paths)))
        return seconds, accessors(vault) - before, audited_reads(audit, paths) - seen
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        api.stop()
        audited.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="floor + keygate bursts, each with new pods")
    parser.add_argument("--workers", type=int, default=16, help="backends.vault.workers of the daemon")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="the daemon's vault_rate (and vault_burst = 2 x rate); 0 keeps its defaults",
    )
    parser.add_argument(
        "--profile",
        help="py-spy the daemon during the bursts into this file (.svg flame graph, else collapsed stacks)",
    )
    args = parser.parse_args()
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = start_bao()
    floors: list[float] = []
    bursts: list[float] = []
    cpus: list[tuple[float, float]] = []
    floor_cpus: list[tuple[float, float]] = []
    logins: list[int] = []
    try:
        configure(server, issuer)
        vault = Vault(server, issuer)
        burst_role(vault)
        paths = seed(vault, "burst", args.objects)
        objects = json.dumps(
            [
                {"objectName": f"s{i}", "secretPath": path, "secretKey": "value"}
                for i, path in enumerate(paths)
            ]
        )
        params = {**vault.params(objects), "roleName": "burst"}
        warm = issuer.pod(name="warm-up", uid="warm", service_account="burst-warm")
        with tempfile.TemporaryDirectory(prefix="kgb-") as tmp:
            limits = {"vault_rate": args.rate, "vault_burst": int(2 * args.rate)} if args.rate else {}
            proc, sock = serve(
                Path(tmp), "burst", insecure_skip_attestation=True, **vault_settings(args.workers, limits)
            )
            spy = None
            try:
                # one Mount of another pod first: the daemon's TLS pool to OpenBao exists, as on a
                # node whose daemon started before the pods (it starts first in the DaemonSet)
                asyncio.run(wave(sock, [mount_request("burst", params, warm)], args.objects))
                if args.profile:
                    spy = subprocess.Popen(
                        ["py-spy", "record", "-o", args.profile, "-p", str(proc.pid), "--nonblocking"]
                        + ([] if args.profile.endswith(".svg") else ["--format", "raw"]),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)
                requests: list[pb.MountRequest] = []

                def floor_run(tag: str) -> None:
                    jwts = [p.tokens[AUDIENCE] for p in distinct_pods(issuer, args.pods, tag)]
                    cpu = time.process_time(), cpu_seconds(server.process.pid)
                    floor, sent = asyncio.run(
                        vault_floor.burst(vault.address, vault.ca_file, "burst", jwts, paths, args.workers)
                    )
                    floor_cpus.append(
                        (time.process_time() - cpu[0], cpu_seconds(server.process.pid) - cpu[1])
                    )
                    assert sent == args.pods * (1 + args.objects), sent
                    floors.append(floor)

                # floor, keygate, floor, keygate, ..., floor: each burst is compared with the
                # mean of the floors just before and just after it (the machine's load drifts)
                floor_run("floor0")
                for r in range(args.rounds):
                    pods = distinct_pods(issuer, args.pods, f"app{r}")
                    requests = [mount_request("burst", params, pod) for pod in pods]
                    before = accessors(vault)
                    cpu = cpu_seconds(proc.pid), cpu_seconds(server.process.pid)
                    bursts.append(asyncio.run(wave(sock, requests, args.objects)))
                    cpus.append((cpu_seconds(proc.pid) - cpu[0], cpu_seconds(server.process.pid) - cpu[1]))
                    logins.append(accessors(vault) - before)
                    floor_run(f"floor{r + 1}")
                before = accessors(vault)
                rotation = asyncio.run(wave(sock, requests, args.objects))
                relogins = accessors(vault) - before
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            shared, replica_logins, replica_reads = replicas_burst(
                Path(tmp), issuer, objects, paths, args.workers, args.pods, limits
            )
    finally:
        server.stop()
    total = args.pods * args.objects
    around = [(floors[r] + floors[r + 1]) / 2 for r in range(args.rounds)]
    ratios = [b / f for b, f in zip(bursts, around, strict=True)]
    mid = sorted(range(args.rounds), key=lambda k: ratios[k])[args.rounds // 2]
    rounds = "; ".join(
        f"{b:.2f} s / {f:.2f} s = {r:.2f}x" for b, f, r in zip(bursts, around, ratios, strict=True)
    )
    requests_sent = args.pods * (1 + args.objects)
    client_ms = statistics.median(c[0] for c in cpus) / requests_sent * 1000
    floor_ms = statistics.median(c[0] for c in floor_cpus) / requests_sent * 1000
    bao_ms = statistics.median(c[1] for c in cpus + floor_cpus) / requests_sent * 1000
    print("| measurement | result | target / comparison |")
    print("|---|---|---|")
    print(
        f"| 6. Burst: {args.pods} pods x {args.objects} kv objects at once, OpenBao over TLS, jwt auth, "
        f"{f'vault_rate {args.rate:g}/s' if args.rate else 'default vault_rate/vault_burst'} "
        f"| keygate {bursts[mid]:.2f} s ({total / bursts[mid]:.0f} objects/s), floor {around[mid]:.2f} s: "
        f"ratio {ratios[mid]:.2f}x (median of {args.rounds} rounds, range {min(ratios):.2f}-{max(ratios):.2f}x; "
        f"keygate / floor per round: {rounds}); {logins[mid]} logins; CPU per request: keygate "
        f"{client_ms:.2f} ms (the whole daemon: gRPC, Mount, Vault client), floor client {floor_ms:.2f} ms "
        f"({client_ms / floor_ms:.1f}x), OpenBao {bao_ms:.2f} ms "
        f"| <= 1.5x the floor: the same {args.pods} logins + {total} reads from a minimal aiohttp client "
        f"with {args.workers} keep-alive TLS connections, same run; 1 login per pod, not per object; the "
        f"rotation poll of all {args.pods} pods right after: {rotation:.2f} s, {relogins} logins; "
        f"{args.pods} replicas of one service account and role (kubernetes auth, shared reads on): "
        f"{shared:.2f} s, {replica_logins} logins, "
        f"{replica_reads} reads reached OpenBao ({args.objects} distinct objects) |"
    )


if __name__ == "__main__":
    main()
