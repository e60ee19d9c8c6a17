"""Shared reads: 200 replicas of one Deployment (one service account) x 10 kv objects at once.

    PYTHONPATH=$PWD python bench/shared_burst.py [--pods 200] [--objects 10] [--ttl 0]

A real ``keygate serve`` process with attestation on (every pod's ``keygate`` token verified with
the local issuer's key) talks TLS to a real OpenBao dev server using its ``kubernetes`` auth
method (TokenReview at the tests' API stand-in). All Mounts are sent at once. Backend reads are
counted on the OpenBao side, in its file audit log (``read`` requests under the objects' path),
so nothing in keygate is trusted for the figure. Target: reads <= distinct objects.

Prints one markdown table row in bench/run.py's format.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._burst import attesting, audited_reads, seed, serve, start_audited_bao, wave
from keygate_dev.driver_client import Pod, mount_request
from tests.vault_fixtures import (
    AUDIENCE,
    Issuer,
    TokenReviewServer,
    Vault,
    configure,
    kubernetes_auth,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument(
        "--ttl", type=int, default=0, help="shared_read_ttl of the daemon (0: single flight only)"
    )
    parser.add_argument("--off", action="store_true", help="shared_reads: false (the comparison)")
    args = parser.parse_args()
    issuer = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    bao_dir = Path(tempfile.mkdtemp(prefix="kgs-bao-"))
    server, log = start_audited_bao(bao_dir)
    api = TokenReviewServer(issuer)
    try:
        configure(server, issuer)
        vault = Vault(server, issuer)
        kubernetes_auth(vault, api)
        paths = seed(vault, "shared", args.objects)
        with tempfile.TemporaryDirectory(prefix="kgs-") as tmp:
            objects = json.dumps(
                [
                    {"objectName": f"s{i}", "secretPath": path, "secretKey": "value"}
                    for i, path in enumerate(paths)
                ]
            )
            params = vault.params(objects, vaultAuthMethod="kubernetes")
            requests = []
            for i in range(args.pods):
                pod = Pod(name=f"app-{i}", uid=f"00000000-0000-0000-0000-{i:012d}")
                pod.tokens = {aud: issuer.mint(pod, aud) for aud in ("keygate", AUDIENCE)}
                requests.append(mount_request("shared", params, pod))
            proc, sock = serve(
                Path(tmp),
                "shared",
                **attesting(Path(tmp), issuer),
                audit_sink=str(Path(tmp) / "audit.jsonl"),
                shared_read_ttl=args.ttl,
                shared_reads=not args.off,
            )
            try:
                before = audited_reads(log, paths)
                burst = asyncio.run(wave(sock, requests, args.objects))
                got = audited_reads(log, paths) - before
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        api.stop()
        server.stop()
        shutil.rmtree(bao_dir, ignore_errors=True)
    print("| measurement | result | target / comparison |")
    print("|---|---|---|")
    print(
        f"| Shared reads: {args.pods} replicas of one service account x {args.objects} kv objects at once, "
        f"OpenBao kubernetes auth, attestation on, "
        f"{'shared_reads off' if args.off else f'shared_read_ttl {args.ttl}'} "
        f"| {burst:.2f} s, {got} backend reads (OpenBao audit log) "
        f"| reads <= distinct objects ({args.objects}); without sharing {args.pods * args.objects} |"
    )


if __name__ == "__main__":
    main()
