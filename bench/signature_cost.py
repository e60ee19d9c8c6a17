"""Cost of image signature checks per Mount (release policy ``images.signatures``).

Run from the repository root:  ``PYTHONPATH=. python bench/signature_cost.py [--n 200]``

It starts the test OCI registry (HTTPS on 127.0.0.1, keygate_dev/oci_registry.py), pushes an image
signed with a cosign key and one with a keyless Sigstore bundle from the test Sigstore
(tests/sigstore_fakes.py), and times the daemon's own :class:`SignatureChecker` for one
container:
  1. key-based, cold (verification cache emptied each time: manifest + payload GETs + verify);
  2. keyless, cold (referrers + manifest + bundle GETs + sigstore-python offline verification);
  3. either, cached (a verified image within ``signature_cache_ttl``: no registry request).
Prints the median and p90 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from bench._timing import timed
from keygate_dev.oci_registry import running_registry
from keygate_dev.signing import CosignKey, cosign_sign
from provider.attest.kube import Container
from provider.attest.policy import parse_policy
from provider.attest.signatures.checker import SignatureChecker
from provider.attest.signatures.registry import RegistrySettings
from tests.sigstore_fakes import BUNDLE_V03, FakeSigstore

WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
GITHUB = "https://token.actions.githubusercontent.com"


WARMUP = 20


async def main(n: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_registry(Path(tmp)) as registry:
        base = Path(tmp)
        key = CosignKey.generate()
        key.write_public(base / "cosign.pub")
        sigstore = FakeSigstore()
        sigstore.write_trusted_root(base / "trusted_root.json")
        keyed = registry.push_image("acme/keyed")
        cosign_sign(registry, "acme/keyed", keyed, key)
        keyless = registry.push_image("acme/keyless")
        statement = sigstore.statement(keyless, f"{registry.host}/acme/keyless")
        registry.push_referrer(
            "acme/keyless", keyless, BUNDLE_V03, sigstore.bundle(statement, identity=WORKFLOW)
        )
        policy = parse_policy(
            json.dumps(
                {
                    "rules": [
                        {
                            "name": "key",
                            "namespaces": ["key"],
                            "images": {"signatures": [{"name": "k", "publicKeys": ["cosign.pub"]}]},
                        },
                        {
                            "name": "keyless",
                            "namespaces": ["keyless"],
                            "images": {
                                "signatures": [
                                    {
                                        "name": "w",
                                        "keyless": {
                                            "trustedRoot": "trusted_root.json",
                                            "issuer": GITHUB,
                                            "subject": WORKFLOW,
                                        },
                                    }
                                ]
                            },
                        },
                    ]
                }
            ),
            str(base / "policy.yaml"),
        )
        key_rule, keyless_rule = policy.rules
        checker = SignatureChecker(RegistrySettings(ca_file=str(registry.ca_file)), cache_ttl=300)
        key_pod = [Container("container", "app", f"{registry.host}/acme/keyed@{keyed}")]
        keyless_pod = [Container("container", "app", f"{registry.host}/acme/keyless@{keyless}")]

        async def cold(pod: list[Container], requirements: tuple[object, ...]) -> None:
            checker.verified.clear()
            await checker.check(pod, requirements, "pod bench/app")  # type: ignore[arg-type]

        async def warm() -> None:
            await checker.check(key_pod, key_rule.images.signatures, "pod bench/app")

        results["key-based, cold"] = await timed(lambda: cold(key_pod, key_rule.images.signatures), n, WARMUP)
        results["keyless, cold"] = await timed(
            lambda: cold(keyless_pod, keyless_rule.images.signatures), n, WARMUP
        )
        results["cached"] = await timed(warm, n * 10, WARMUP)
        await checker.aclose()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    for name, (median, p90) in asyncio.run(main(args.n)).items():
        print(f"{name:>18}: median {median:9.1f} us   p90 {p90:9.1f} us")
