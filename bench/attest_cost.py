"""Cost of attestation per Mount: token verification, release policy, and the Pod GET.

Run from the repository root:  ``PYTHONPATH=. python bench/attest_cost.py [--n 2000]``

It starts the in-process Kubernetes API stand-in (HTTPS on 127.0.0.1), builds the daemon's own
attestor from a Config exactly as ``keygate serve`` does, and times, with warm key caches:
  1. token verification only (RS256 and ES256: signature, claims, pod binding);
  2. token + release policy (no Pod GET: ``insecure_skip_image_check``);
  3. full attestation (token + policy + Pod GET over HTTPS + image digest checks).
Prints the median and p90 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from bench._timing import timed
from keygate_dev.devcluster import PodSpec, pinned, running
from keygate_dev.driver_client import Pod, attributes
from provider.app import build_attestor
from provider.attest.attestor import PodAttestor
from provider.config import Config
from provider.domain import SecretObject
from provider.request import MountInput, parse

POLICY = """
default: deny
rules:
  - name: bench
    namespaces: [bench]
    serviceAccounts: [app]
    backends: [sealed]
    objects: ["db-*"]
"""


WARMUP = 50


async def main(n: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp), api_token="bench") as kube:
        ec_key = kube.add_key("ec")
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        pod = kube.add_pod(
            PodSpec(
                "bench",
                "app-0",
                "3f2e1d0c-0000-4000-8000-000000000001",
                "app",
                {"app": pinned("ghcr.io/acme/app"), "proxy": pinned("envoyproxy/envoy")},
            )
        )
        base = dict(
            issuer=kube.issuer,
            kube_api_url=kube.url,
            kube_ca=str(kube.ca_file),
            kube_token_file=str(kube.token_file),
            release_policy=str(policy),
            node_name="node-a",
        )
        objects_param = "- objectName: db-password\n  sealed: keygate:v1:x\n"
        for label, key in (("RS256", kube.keys[0]), ("ES256", ec_key)):
            token = kube.mint(pod, key=key)
            driver_pod = Pod(pod.namespace, pod.name, pod.uid, pod.service_account, {"keygate": token})
            ctx = parse(
                MountInput(attributes("bench", {"objects": objects_param}, driver_pod), "{}", "/tmp/x", "420")
            )
            objects = [
                SecretObject("sealed", name, name, None, {"objectName": name}, i)
                for i, name in enumerate(("db-password", "db-user"))
            ]
            full = build_attestor(Config(**base))
            local = build_attestor(Config(**base, insecure_skip_image_check=True))
            assert isinstance(full, PodAttestor) and isinstance(local, PodAttestor)
            results[f"{label} token verification"] = await timed(
                lambda a=full, t=token, c=ctx: a.verifier.verify(t, c.pod), n, WARMUP
            )
            results[f"{label} token + release policy"] = await timed(
                lambda a=local, c=ctx, o=objects: a.attest(c, o), n, WARMUP
            )
            results[f"{label} full (token + policy + Pod GET + images)"] = await timed(
                lambda a=full, c=ctx, o=objects: a.attest(c, o), max(200, n // 10), WARMUP
            )
            await full.aclose()
            await local.aclose()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="iterations per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    out = asyncio.run(main(args.n))
    if args.json:
        print(json.dumps({k: {"median_us": round(m, 1), "p90_us": round(p, 1)} for k, (m, p) in out.items()}))
    else:
        for name, (median, p90) in out.items():
            print(f"{name:<48} median {median:9.1f} µs   p90 {p90:9.1f} µs")
