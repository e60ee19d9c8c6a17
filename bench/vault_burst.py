"""Benchmark 6: a node reboot's burst against Vault: 200 pods x 10 kv objects arriving at once.

    PYTHONPATH=$PWD python bench/vault_burst.py [--pods 200] [--objects 10] [--profile out.svg]

A real ``keygate serve`` process talks TLS to a real OpenBao dev server (started like the tests
do, jwt auth trusting a local RSA "service-account issuer"). Every pod is distinct (its own name,
uid and projected JWT), as after a node reboot: keygate logs in *as each pod*, so the floor is one
login per pod, not one per object (10 x more) and not one per rotation poll. All Mounts are sent
at once from a grpc.aio client in this process; then the same 200 Mounts again, as the driver's
rotation poll would, which must need no login at all. Logins are counted on the OpenBao side
(new token accessors), so nothing in keygate is trusted for the figure.

Prints one markdown table row in bench/run.py's format.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keygate_dev.driver_client import Pod, mount_request  # noqa: E402
from provider.wire import service_pb2 as pb  # noqa: E402
from provider.wire import service_pb2_grpc as pb_grpc  # noqa: E402
from tests.vault_fixtures import Issuer, Vault, configure, start_bao  # noqa: E402


def serve(tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    sock = str(tmp / "burst.sock")
    cfg = tmp / "burst.json"
    cfg.write_text(
        json.dumps(
            {
                "socket": sock,
                "log_level": "warning",
                "metrics_addr": "",
                "insecure_skip_attestation": True,
                "backends": {"vault": {"workers": workers}},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "provider.cli", "serve", "--config", str(cfg)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        if os.path.exists(sock):
            with grpc.insecure_channel(f"unix:{sock}") as channel:
                try:
                    pb_grpc.CSIDriverProviderStub(channel).Version(pb.VersionRequest(), timeout=2)
                    return proc, sock
                except grpc.RpcError:
                    pass
        time.sleep(0.01)


async def wave(sock: str, requests: list[pb.MountRequest], objects: int) -> float:
    """Send every request at once; seconds until the last answer. Any failure aborts the run."""
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        started = time.perf_counter()
        responses = await asyncio.gather(*(stub.Mount(r, timeout=60) for r in requests))
        elapsed = time.perf_counter() - started
    for response in responses:
        assert len(response.files) == objects, response
    return elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accessors(vault: Vault) -> int:
    return len(vault.token_accessors())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16, help="backends.vault.workers of the daemon")
    parser.add_argument(
        "--profile",
        help="py-spy the daemon during the burst into this file (.svg flame graph, else collapsed stacks)",
    )
    args = parser.parse_args()
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = start_bao()
    try:
        configure(server, issuer)
        vault = Vault(server, issuer)
        for i in range(args.objects):
            vault.root().secrets.kv.v2.create_or_update_secret(
                f"app/burst{i}", {"value": f"value-{i}" * 4}, mount_point="secret"
            )
        objects = json.dumps(
            [
                {"objectName": f"s{i}", "secretPath": f"secret/data/app/burst{i}", "secretKey": "value"}
                for i in range(args.objects)
            ]
        )
        params = vault.params(objects)
        pods = [
            issuer.pod(name=f"app-{i}", uid=f"00000000-0000-0000-0000-{i:012d}") for i in range(args.pods)
        ]
        requests = [mount_request("burst", params, pod) for pod in pods]
        warm = Pod(name="warm-up", uid="warm")
        warm.tokens = {"vault": issuer.mint(warm)}
        with tempfile.TemporaryDirectory(prefix="kgb-") as tmp:
            proc, sock = serve(Path(tmp), args.workers)
            spy = None
            try:
                # one Mount of another pod first: the daemon's TLS pool to OpenBao exists, as on a
                # node whose daemon started before the pods (it starts first in the DaemonSet)
                asyncio.run(wave(sock, [mount_request("burst", params, warm)], args.objects))
                before = accessors(vault)
                if args.profile:
                    spy = subprocess.Popen(
                        ["py-spy", "record", "-o", args.profile, "-p", str(proc.pid), "--nonblocking"]
                        + ([] if args.profile.endswith(".svg") else ["--format", "raw"]),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)
                cpu = cpu_seconds(proc.pid), cpu_seconds(server.process.pid)
                burst = asyncio.run(wave(sock, requests, args.objects))
                cpu = cpu_seconds(proc.pid) - cpu[0], cpu_seconds(server.process.pid) - cpu[1]
                logins = accessors(vault) - before
                rotation = asyncio.run(wave(sock, requests, args.objects))
                relogins = accessors(vault) - before - logins
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    finally:
        server.stop()
    total = args.pods * args.objects
    print("| measurement | result | target / comparison |")
    print("|---|---|---|")
    print(
        f"| 6. Burst: {args.pods} pods x {args.objects} kv objects at once, OpenBao over TLS, jwt auth "
        f"| {burst:.2f} s total ({total / burst:.0f} objects/s), {logins} logins; "
        f"CPU: keygate {cpu[0]:.1f} s, OpenBao {cpu[1]:.1f} s "
        f"| 1 login per pod ({args.pods}), not per object ({total}); the rotation poll of all "
        f"{args.pods} pods right after: {rotation:.2f} s, {relogins} logins |"
    )


if __name__ == "__main__":
    main()
