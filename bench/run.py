"""keygate benchmarks: one command, one table.

    python bench/run.py [--quick]

Every measurement drives a real ``keygate serve`` process over its Unix socket from this
process (grpc.aio client), so client and daemon each have a core on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keygate_dev.driver_client import Pod, mount_request  # noqa: E402
from provider.wire import service_pb2 as pb  # noqa: E402
from provider.wire import service_pb2_grpc as pb_grpc  # noqa: E402
from providers.sealed.envelope import generate_key, private_pem, seal  # noqa: E402

POD = Pod(namespace="bench", name="bench-0", service_account="bench")


@dataclass
class Env:
    tmp: Path
    key_path: Path
    public: object
    extra_config: dict[str, object] = field(default_factory=dict)

    def sealed_objects(self, n: int) -> str:
        return json.dumps(
            [
                {"objectName": f"s{i}", "sealed": seal(b"x" * 64, POD.namespace, f"s{i}", [self.public])}
                for i in range(n)
            ]
        )


@contextmanager
def daemon(
    env: Env, name: str, config: dict[str, object] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str, float]]:
    """Start ``keygate serve``; yields (process, socket, seconds until Version answered)."""
    sock = str(env.tmp / f"{name}.sock")
    cfg = {
        "socket": sock,
        "sealed_key": [str(env.key_path)],
        "log_level": "warning",
        "metrics_addr": "",
        "insecure_skip_attestation": True,
        **env.extra_config,
        **(config or {}),
    }
    cfg_path = env.tmp / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "provider.cli", "serve", "--config", str(cfg_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ready = None
    while ready is None:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        if not os.path.exists(sock):
            time.sleep(0.002)
            continue
        # a fresh channel per probe: a failed channel would wait out gRPC's reconnect backoff
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            try:
                pb_grpc.CSIDriverProviderStub(channel).Version(pb.VersionRequest(), timeout=2)
                ready = time.perf_counter() - started
            except grpc.RpcError:
                time.sleep(0.002)
    try:
        yield proc, sock, ready
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sequential(sock: str, request: pb.MountRequest, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            await stub.Mount(request, timeout=30)
            samples.append(time.perf_counter() - start)
        return samples


async def sequential_version(sock: str, calls: int) -> list[float]:
    """The floor: Version RPCs (no work in the daemon) over the same socket and client."""
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            await stub.Version(pb.VersionRequest(), timeout=30)
            samples.append(time.perf_counter() - start)
        return samples


async def concurrent(sock: str, request: pb.MountRequest, clients: int, seconds: float) -> tuple[int, int]:
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        done = errors = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                try:
                    await stub.Mount(request, timeout=30)
                    done += 1
                except grpc.RpcError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        return done, errors


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


Row = tuple[str, str, str]


def bench_overhead(env: Env, quick: bool) -> list[Row]:
    request = mount_request("bench", {"objects": env.sealed_objects(10)}, POD)
    calls = 500 if quick else 3000
    with daemon(env, "overhead") as (_, sock, _):
        asyncio.run(sequential(sock, request, 200))
        samples = asyncio.run(sequential(sock, request, calls))
        floor = asyncio.run(sequential_version(sock, calls))
    median, p99 = statistics.median(samples), pct(samples, 0.99)
    return [
        (
            "1. overhead, sealed, 10 objects, warm",
            f"median {median * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms",
            "target median <= 1.5 ms: "
            + ("met" if median <= 0.0015 else "NOT met")
            + ", p99 <= 3 ms: "
            + ("met" if p99 <= 0.003 else "NOT met"),
        ),
        (
            "1. floor: Version RPC (no work), same socket and client",
            f"median {statistics.median(floor) * 1e3:.2f} ms, p99 {pct(floor, 0.99) * 1e3:.2f} ms",
            "gRPC and scheduling alone",
        ),
    ]


@dataclass
class Cluster:
    """The API stand-in's process: its address and files (``info``) and its request counts."""

    proc: subprocess.Popen[bytes]
    info: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.info[key]

    def hits(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"hits\n")
        self.proc.stdin.flush()
        counts: dict[str, int] = json.loads(self.proc.stdout.readline())
        return counts


@contextmanager
def dev_cluster() -> Iterator[Cluster]:
    """The local Kubernetes API stand-in (issuer, JWKS, Pod GET) in its own process."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "devcluster_proc.py"),
            POD.namespace,
            POD.name,
            POD.uid,
            POD.service_account,
            "bench-node",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    info = json.loads(proc.stdout.readline())
    try:
        yield Cluster(proc, info)
    finally:
        proc.stdin.close()
        proc.wait(10)


def bench_throughput(env: Env, quick: bool) -> list[Row]:
    rows = []
    seconds = 3.0 if quick else 10.0
    with dev_cluster() as kube:
        attested = Pod(POD.namespace, POD.name, POD.uid, POD.service_account, {"keygate": kube["pod_token"]})
        attest_config = {
            "insecure_skip_attestation": False,
            "issuer": kube["issuer"],
            "kube_api_url": kube["url"],
            "kube_ca": kube["ca"],
            "kube_token_file": kube["token_file"],
            "node_name": "bench-node",
            "audit_sink": str(env.tmp / "audit.jsonl"),
        }
        for label, pod, config in (
            ("attestation on, pod watch", attested, {**attest_config, "pod_watch": True}),
            ("attestation on, Pod GET per mount", attested, attest_config),
            ("attestation off", POD, {}),
        ):
            request = mount_request("bench", {"objects": env.sealed_objects(1)}, pod)
            with daemon(env, "throughput", config) as (proc, sock, _):
                asyncio.run(concurrent(sock, request, 64, 1.0))
                gets, cpu = kube.hits().get("pod", 0), cpu_seconds(proc.pid)
                done, errors = asyncio.run(concurrent(sock, request, 64, seconds))
                gets, cpu = kube.hits().get("pod", 0) - gets, cpu_seconds(proc.pid) - cpu
            rate = done / seconds
            detail = f"daemon CPU {cpu / max(done, 1) * 1e6:.0f} µs/mount"
            if "Pod GET" in label:
                detail += f", {gets / max(done, 1):.2f} Pod GETs/mount"
            rows.append(
                (
                    f"2. throughput, 64 clients, sealed 1 object, {label}",
                    f"{rate:.0f} mounts/s ({errors} errors; {detail})",
                    "target >= 1000/s: " + ("met" if rate >= 1000 else "NOT met"),
                )
            )
    return rows


def bench_latency(env: Env, quick: bool) -> list[Row]:
    delay = 0.05
    objects = json.dumps([{"objectName": f"o{i}", "backend": "slow"} for i in range(20)])
    request = mount_request("bench", {"objects": objects}, POD)
    rows = []
    results = {}
    for mode in ("concurrent", "sequential"):
        config = {
            "backends": {
                "slow": {
                    "class": "tests.slow_backend:SlowBackend",
                    "delay": delay,
                    "sequential": mode == "sequential",
                }
            }
        }
        with daemon(env, f"lat-{mode}", config) as (_, sock, _):
            asyncio.run(sequential(sock, request, 3))
            samples = asyncio.run(sequential(sock, request, 20 if quick else 50))
        results[mode] = statistics.median(samples)
    ratio = results["concurrent"] / delay
    rows.append(
        (
            "3. 20 objects, backend RTT L=50 ms, concurrent",
            f"median {results['concurrent'] * 1e3:.1f} ms = {ratio:.2f} L",
            "target <= 1.5 L: " + ("met" if ratio <= 1.5 else "NOT met"),
        )
    )
    rows.append(
        (
            "3. same, fetched one after another (peer style)",
            f"median {results['sequential'] * 1e3:.0f} ms = {results['sequential'] / delay:.1f} L",
            f"keygate is {results['sequential'] / results['concurrent']:.1f}x faster",
        )
    )
    return rows


def bench_cold_start(env: Env, quick: bool) -> list[Row]:
    times = []
    for i in range(3 if quick else 7):
        with daemon(env, f"cold{i}") as (_, _, ready):
            times.append(ready)
    median = statistics.median(times)
    return [
        (
            "4. cold start, process start to Version served",
            f"median {median * 1e3:.0f} ms",
            "target < 1 s: " + ("met" if median < 1 else "NOT met"),
        )
    ]


def bench_memory(env: Env, quick: bool) -> list[Row]:
    request = mount_request("bench", {"objects": env.sealed_objects(10)}, POD)
    total = 2000 if quick else 10_000
    with daemon(env, "memory") as (proc, sock, _):
        time.sleep(0.3)
        idle = rss_mb(proc.pid)
        asyncio.run(concurrent_n(sock, request, total // 5))
        warm = rss_mb(proc.pid)
        asyncio.run(concurrent_n(sock, request, total))
        after = rss_mb(proc.pid)
    return [
        ("5. RSS idle", f"{idle:.1f} MB", "target < 80 MB: " + ("met" if idle < 80 else "NOT met")),
        (
            f"5. RSS after warm-up, then after {total} more mounts",
            f"{warm:.1f} MB -> {after:.1f} MB",
            f"growth {after - warm:+.1f} MB",
        ),
    ]


async def concurrent_n(sock: str, request: pb.MountRequest, n: int, clients: int = 16) -> None:
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        remaining = [n]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await stub.Mount(request, timeout=30)

        await asyncio.gather(*(worker() for _ in range(clients)))


def bench_hostile(env: Env, quick: bool) -> list[Row]:
    from hostile_rss import measure, row

    total = 2000 if quick else 10_000
    return [row(measure(env, total, 8, verbose=False), total)]


SECTIONS: dict[str, Callable[[Env, bool], list[Row]]] = {
    "overhead": bench_overhead,
    "throughput": bench_throughput,
    "latency": bench_latency,
    "coldstart": bench_cold_start,
    "memory": bench_memory,
    "hostile": bench_hostile,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--repeat", type=int, default=1, help="run the sections this many times (spread)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kgb-") as tmp:
        key = generate_key()
        key_path = Path(tmp) / "node.key"
        key_path.write_bytes(private_pem(key))
        env = Env(Path(tmp), key_path, key.public_key())
        rows: list[Row] = []
        for _ in range(args.repeat):
            for name, fn in SECTIONS.items():
                if args.only and name not in args.only:
                    continue
                rows.extend(fn(env, args.quick))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}")
    print(
        f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other work shares the cores)"
    )
    print("| measurement | result | target / comparison |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
