"""Median and p99 latency of a 10-object sealed Mount through a live daemon over its Unix socket.

Run: ``python bench/sealed_mount.py [--calls 1000]``. Prints one table row per measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # keygate_dev: the dev stand-ins live in the checkout

from keygate_dev.driver_client import DriverClient, Pod, mount_request  # noqa: E402
from keygate_dev.embedded import daemon_thread  # noqa: E402
from provider.config import Config  # noqa: E402
from providers.sealed.envelope import generate_key, private_pem, seal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--objects", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kgb-") as tmp:
        key = generate_key()
        key_path = Path(tmp) / "node.key"
        key_path.write_bytes(private_pem(key))
        pod = Pod(namespace="bench")
        objects = json.dumps(
            [
                {"objectName": f"s{i}", "sealed": seal(b"x" * 64, "bench", f"s{i}", [key.public_key()])}
                for i in range(args.objects)
            ]
        )
        config = Config(
            socket=str(Path(tmp) / "k.sock"),
            sealed_key=(str(key_path),),
            metrics_addr="",
            insecure_skip_attestation=True,
            audit_sink=str(Path(tmp) / "audit.jsonl"),
        )
        request = mount_request("bench", {"objects": objects}, pod)
        with daemon_thread(config), DriverClient(config.socket) as client:
            for _ in range(50):
                client.mount(request)
            samples = []
            for _ in range(args.calls):
                start = time.perf_counter()
                client.mount(request)
                samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(
        f"| sealed mount, {args.objects} objects, {args.calls} calls | median {statistics.median(samples):.3f} ms "
        f"| p99 {p99:.3f} ms |"
    )


if __name__ == "__main__":
    main()
