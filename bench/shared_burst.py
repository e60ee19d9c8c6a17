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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keygate_dev.driver_client import Pod, mount_request  # noqa: E402
from provider.wire import service_pb2 as pb  # noqa: E402
from provider.wire import service_pb2_grpc as pb_grpc  # noqa: E402
from tests.vault_fixtures import (  # noqa: E402
    AUDIENCE,
    ISSUER,
    BaoServer,
    Issuer,
    TokenReviewServer,
    Vault,
    configure,
    free_port,
)


def start_audited_bao(tmp: Path) -> tuple[BaoServer, Path]:
    """``bao server -dev`` over TLS with a file audit device (OpenBao only enables audit devices
    from its config file), so every request is counted on the server's side."""
    import shutil

    log = tmp / "bao-audit.log"
    hcl = tmp / "audit.hcl"
    hcl.write_text(f'audit "file" "bench" {{\n  options = {{\n    file_path = "{log}"\n  }}\n}}\n')
    cert_dir = tmp / "bao-certs"
    cert_dir.mkdir()
    port = free_port()
    binary = shutil.which("bao") or "bao"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    process = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={cert_dir}",
            "-dev-root-token-id=root",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
            f"-config={hcl}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    server = BaoServer(f"https://127.0.0.1:{port}", str(cert_dir / "vault-ca.pem"), str(cert_dir), process)
    deadline = time.monotonic() + 30
    while True:
        try:
            if (
                Path(server.ca_file).exists()
                and not server.root().sys.read_health_status(method="GET")["sealed"]
            ):
                return server, log
        except Exception:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bao server did not start")
        time.sleep(0.05)


def serve(tmp: Path, issuer: Issuer, ttl: int, shared: bool) -> tuple[subprocess.Popen[bytes], str]:
    sock = str(tmp / "shared.sock")
    jwks = tmp / "jwks.json"
    jwk = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "test", "alg": "RS256", "use": "sig"}]}))
    cfg = tmp / "shared.json"
    cfg.write_text(
        json.dumps(
            {
                "socket": sock,
                "log_level": "warning",
                "metrics_addr": "",
                "issuer": ISSUER,
                "jwks_file": [str(jwks)],
                "insecure_skip_image_check": True,
                "audit_sink": str(tmp / "audit.jsonl"),
                "shared_read_ttl": ttl,
                "shared_reads": shared,
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
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        started = time.perf_counter()
        responses = await asyncio.gather(*(stub.Mount(r, timeout=60) for r in requests))
        elapsed = time.perf_counter() - started
    for response in responses:
        assert len(response.files) == objects, response
    return elapsed


def reads(log: Path, prefix: str) -> int:
    """Read requests under ``prefix`` in OpenBao's audit log (one ``request`` entry each)."""
    count = 0
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        request = entry.get("request") or {}
        if entry.get("type") == "request" and request.get("operation") == "read":
            count += str(request.get("path", "")).startswith(prefix)
    return count


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
        root = vault.root()
        root.sys.enable_auth_method("kubernetes", path="kubernetes")
        root.write(
            "auth/kubernetes/config",
            kubernetes_host=api.url,
            kubernetes_ca_cert=api.ca_pem,
            disable_local_ca_jwt=True,
        )
        root.write(
            "auth/kubernetes/role/app",
            bound_service_account_names=["app"],
            bound_service_account_namespaces=["default"],
            audience=AUDIENCE,
            token_policies=["app"],
            token_ttl="1h",
        )
        for i in range(args.objects):
            root.secrets.kv.v2.create_or_update_secret(
                f"app/shared{i}", {"value": f"value-{i}" * 4}, mount_point="secret"
            )
        with tempfile.TemporaryDirectory(prefix="kgs-") as tmp:
            objects = json.dumps(
                [
                    {"objectName": f"s{i}", "secretPath": f"secret/data/app/shared{i}", "secretKey": "value"}
                    for i in range(args.objects)
                ]
            )
            params = vault.params(objects, vaultAuthMethod="kubernetes")
            requests = []
            for i in range(args.pods):
                pod = Pod(name=f"app-{i}", uid=f"00000000-0000-0000-0000-{i:012d}")
                pod.tokens = {aud: issuer.mint(pod, aud) for aud in ("keygate", AUDIENCE)}
                requests.append(mount_request("shared", params, pod))
            proc, sock = serve(Path(tmp), issuer, args.ttl, not args.off)
            try:
                before = reads(log, "secret/data/app/shared")
                burst = asyncio.run(wave(sock, requests, args.objects))
                got = reads(log, "secret/data/app/shared") - before
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        api.stop()
        server.stop()
        import shutil

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
