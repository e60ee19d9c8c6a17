"""Burst after a node reboot: 200 pods x 10 Vault objects arriving at once, against OpenBao.

Run from the repository root:  PYTHONPATH=$PWD python bench/vault_burst.py [--pods 200]

Every pod is a distinct pod (own name, UID and service-account JWT, as the kubelet mints one per
pod); all Mounts are sent at the same instant through the daemon's Unix socket. Prints one table
row: total time until the last Mount answered, logins made (keygate logs in once per pod, not
once per object) and Vault requests made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import grpc

from provider.config import Config
from provider.driver_client import mount_request
from provider.embedded import daemon_thread
from provider.wire import service_pb2_grpc as pb_grpc
from tests.vault_fixtures import seeded_vault

OBJECTS = 10


async def burst(socket: str, requests: list) -> tuple[float, int]:
    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        start = time.perf_counter()
        results = await asyncio.gather(*(stub.Mount(r, timeout=60) for r in requests), return_exceptions=True)
        elapsed = time.perf_counter() - start
    failures = sum(1 for r in results if isinstance(r, BaseException))
    return elapsed, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args()
    kv = {f"app/burst{i}": {"value": f"v{i}"} for i in range(OBJECTS)}
    with seeded_vault(kv) as vault:
        objects = json.dumps(
            [
                {"objectName": f"s{i}", "secretPath": f"secret/data/app/burst{i}", "secretKey": "value"}
                for i in range(OBJECTS)
            ]
        )
        params = vault.params(objects)
        requests = [
            mount_request(
                "burst", params, vault.issuer.pod(name=f"app-{i}", uid=f"00000000-0000-4000-8000-{i:012d}")
            )
            for i in range(args.pods)
        ]
        with tempfile.TemporaryDirectory(prefix="kg-") as tmp:
            config = Config(
                socket=str(Path(tmp) / "b.sock"),
                log_level="warning",
                metrics_addr="",
                insecure_skip_attestation=True,
                audit_sink=str(Path(tmp) / "audit.jsonl"),
                max_inflight=args.pods + 16,
            )
            with daemon_thread(config) as mounter:
                elapsed, failures = asyncio.run(burst(config.socket, requests))
                stats = dict(mounter.registry.get("vault").stats)  # type: ignore[attr-defined]
    print(
        f"| 6. burst: {args.pods} pods x {OBJECTS} Vault objects at once | {elapsed:.2f} s total, "
        f"{failures} failed | {stats.get('logins', 0)} logins for {args.pods * OBJECTS} objects, "
        f"{stats.get('requests', 0)} Vault requests |"
    )


if __name__ == "__main__":
    main()
