"""Mount latency of 10 kv-v2 objects through a real daemon and a real OpenBao dev server.

Run from the repository root:  PYTHONPATH=$PWD python bench/vault_latency.py [--mounts 200]

"warm": the pod's Vault token is cached (one login, then reads only). "cold": every Mount
presents a new service-account JWT (as a new pod would), so each one logs in first. Each Mount
reads 10 distinct kv-v2 paths concurrently over TLS. Prints medians and p90s in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from keygate_dev.driver_client import DriverClient, mount_request
from keygate_dev.embedded import daemon_thread
from provider.config import Config
from tests.vault_fixtures import Vault, seeded_vault

OBJECTS = 10


def measure(client: DriverClient, vault: Vault, mounts: int, cold: bool) -> list[float]:
    objects = "".join(
        f"- {{objectName: s{i}, secretPath: secret/data/app/bench{i}, secretKey: value}}\n"
        for i in range(OBJECTS)
    )
    params = vault.params(objects)
    pod = vault.issuer.pod()
    client.mount(mount_request("bench", params, pod))  # connections and mount lookups warmed
    samples = []
    for _ in range(mounts):
        if cold:
            pod = vault.issuer.pod()
        request = mount_request("bench", params, pod)
        start = time.perf_counter()
        response = client.mount(request)
        samples.append((time.perf_counter() - start) * 1000)
        assert len(response.files) == OBJECTS
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mounts", type=int, default=200)
    args = parser.parse_args()
    kv = {f"app/bench{i}": {"value": f"v{i}" * 8} for i in range(OBJECTS)}
    with seeded_vault(kv) as vault, tempfile.TemporaryDirectory(prefix="kg-") as tmp:
        config = Config(
            socket=str(Path(tmp) / "b.sock"),
            log_level="warning",
            metrics_addr="",
            insecure_skip_attestation=True,
            audit_sink=str(Path(tmp) / "audit.jsonl"),
        )
        with daemon_thread(config) as mounter, DriverClient(config.socket) as client:
            for label, cold in (("warm", False), ("cold", True)):
                samples = measure(client, vault, args.mounts, cold)
                q = statistics.quantiles(samples, n=10)
                print(
                    f"{label}: {OBJECTS} kv objects, {args.mounts} mounts: "
                    f"median {statistics.median(samples):.2f} ms, p90 {q[-1]:.2f} ms"
                )
            stats = mounter.registry.get("vault").stats  # type: ignore[attr-defined]
            print(f"backend counters: {dict(stats)}")


if __name__ == "__main__":
    main()
