"""What every backend fault test asserts about a failed Mount, in one place.

A Mount against a misbehaving backend must end within the mount deadline (plus scheduling
slack), with a gRPC status whose message starts with the keygate code, the same code in the
``keygate-error-code`` trailer, never INTERNAL, and no files.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from keygate_dev.driver_client import Pod, mount_request
from tests.conftest import Running

SLACK = 0.6
DEADLINE = {grpc.StatusCode.DEADLINE_EXCEEDED}
UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE}

Outcome = dict[str, bytes] | grpc.RpcError


def timed_mount(
    d: Running, params: Mapping[str, str], pod: Pod, spc: str = "fault-spc", **kw: Any
) -> tuple[Outcome, float]:
    """One Mount over the socket: its files (path -> contents) or its error, and how long it took."""
    started = time.monotonic()
    try:
        resp = d.client.mount(mount_request(spc, params, pod, **kw), timeout=30)
        out: Outcome = {f.path: f.contents for f in resp.files}
    except grpc.RpcError as err:
        out = err
    return out, time.monotonic() - started


def check_error(out: Outcome, elapsed: float, codes: set[grpc.StatusCode], within: float) -> str:
    """``out`` is a clean keygate-coded failure with one of ``codes``, in time; returns its message."""
    assert isinstance(out, grpc.RpcError), f"expected a failure, got files {sorted(out)}"
    assert out.code() in codes, (out.code(), out.details())
    assert out.code() != grpc.StatusCode.INTERNAL
    details = out.details() or ""
    assert details.startswith("[") and "] " in details, details
    trailers = dict(out.trailing_metadata() or ())
    assert trailers.get("keygate-error-code") == details[1 : details.index("]")], (trailers, details)
    assert elapsed < within, f"mount took {elapsed:.2f}s, allowed {within:.2f}s: {details}"
    return details


def expect_error(
    d: Running,
    params: Mapping[str, str],
    pod: Pod,
    codes: set[grpc.StatusCode],
    within: float,
    **kw: Any,
) -> str:
    out, elapsed = timed_mount(d, params, pod, **kw)
    return check_error(out, elapsed, codes, within)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def assert_clean(d: Running, errors: Iterable[str], metrics: str, needles: Iterable[str]) -> None:
    """No needle (secret value, token, signature) in the errors, the log, the metrics or the audit."""
    log_lines = d.log_text().splitlines()
    for line in log_lines:
        json.loads(line)
    haystacks = {
        "log": "\n".join(log_lines),
        "errors": "\n".join(errors),
        "metrics": metrics,
        "audit": json.dumps(d.audit_records()),
    }
    for needle in needles:
        assert needle, "an empty needle matches everything"
        for where, text in haystacks.items():
            assert needle not in text, f"a secret value ({needle[:6]}...) reached the {where}"


def describe(out: Outcome) -> str:
    """An error as the driver would record it (code, message, trailers), for the hygiene scans."""
    if isinstance(out, grpc.RpcError):
        return f"{out.code().name} {out.details()} {out.trailing_metadata()}"
    return ""
