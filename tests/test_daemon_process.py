"""The real ``keygate`` process: socket handling, SIGTERM draining, CLI commands, config sources."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from keygate_dev.driver_client import DriverClient, Pod, mount_request
from provider import __version__
from provider.config import Config, load
from provider.errors import KeygateError

ROOT = Path(__file__).resolve().parent.parent


def keygate(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "provider.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def start_serve(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = str(tmp / "keygate.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provider.cli",
            "serve",
            "--socket",
            sock,
            "--insecure-skip-attestation",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if os.path.exists(sock):
            try:
                with DriverClient(sock) as c:
                    c.version()
                return proc, sock
            except grpc.RpcError:
                pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("daemon did not start")


def test_version_command_and_rpc_agree(short_tmp):
    out = keygate("version")
    assert out.returncode == 0 and out.stdout.decode().strip() == f"keygate {__version__}"
    proc, sock = start_serve(short_tmp)
    try:
        with DriverClient(sock) as c:
            v = c.version()
        assert (v.runtime_name, v.runtime_version) == ("keygate", __version__)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    assert not os.path.exists(sock), "socket left behind after SIGTERM"


def test_stale_socket_is_replaced_and_live_one_is_not(short_tmp):
    sock = short_tmp / "keygate.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    proc, path = start_serve(short_tmp)
    try:
        second = keygate("serve", "--socket", path, "--insecure-skip-attestation")
        assert second.returncode == 2
        assert b"another process is serving" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_refuses_to_replace_a_regular_file(short_tmp):
    target = short_tmp / "keygate.sock"
    target.write_text("not a socket")
    out = keygate("serve", "--socket", str(target), "--insecure-skip-attestation")
    assert out.returncode == 2 and b"is not a socket" in out.stderr
    assert target.read_text() == "not a socket"


def test_sigterm_finishes_in_flight_mounts(short_tmp):
    cfg = short_tmp / "config.yaml"
    cfg.write_text(
        "grace_period: 10\nbackends:\n  slow:\n    class: tests.slow_backend:SlowBackend\n    delay: 1.0\n"
    )
    proc, sock = start_serve(short_tmp, "--config", str(cfg))
    results: list[object] = []

    def call() -> None:
        with DriverClient(sock) as c:
            objects = json.dumps([{"objectName": "x", "backend": "slow", "value": "done"}])
            try:
                results.append(c.mount(mount_request("spc", {"objects": objects}, Pod())))
            except grpc.RpcError as err:
                results.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(15)
    proc.wait(20)
    assert proc.returncode == 0
    assert len(results) == 3
    for r in results:
        assert not isinstance(r, grpc.RpcError), r
        assert r.files[0].contents == b"done"
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert "draining" in log
    started = time.perf_counter()
    again, sock = start_serve(short_tmp, "--config", str(cfg))
    restart_seconds = time.perf_counter() - started
    try:
        assert restart_seconds < 3.0, f"restarted daemon served Version after {restart_seconds:.2f}s"
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(20)


def test_mounts_still_running_when_the_grace_period_ends_get_a_coded_error(short_tmp):
    """SIGTERM with a short grace: a quick Mount finishes, a held one ends ``[Unavailable]``."""
    cfg = short_tmp / "config.yaml"
    cfg.write_text(
        "grace_period: 0.5\nmount_timeout: 30\nbackends:\n  slow:\n"
        "    class: tests.slow_backend:SlowBackend\n    delay: 0.2\n"
    )
    proc, sock = start_serve(short_tmp, "--config", str(cfg))
    results: dict[str, object] = {}

    def call(name: str, delay: float) -> None:
        objects = json.dumps([{"objectName": "x", "backend": "slow", "value": name, "delay": delay}])
        with DriverClient(sock) as c:
            try:
                results[name] = c.mount(mount_request("spc", {"objects": objects}, Pod(name=name)))
            except grpc.RpcError as err:
                results[name] = err

    threads = [
        threading.Thread(target=call, args=("quick", 0.4)),
        threading.Thread(target=call, args=("held", 20)),
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(10)
    assert proc.wait(10) == 0
    stopped = time.monotonic() - signalled
    quick, held = results["quick"], results["held"]
    assert not isinstance(quick, grpc.RpcError), quick
    assert quick.files[0].contents == b"quick"
    assert isinstance(held, grpc.RpcError)
    assert held.code() == grpc.StatusCode.UNAVAILABLE
    details = held.details() or ""
    assert details.startswith("[Unavailable] keygate is shutting down"), details
    assert "0.5s grace period" in details
    assert dict(held.trailing_metadata() or ()).get("keygate-error-code") == "Unavailable"
    assert stopped < 0.5 + 1.0, f"stopping took {stopped:.2f}s with a 0.5 s grace period"
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert "in-flight mounts ended" in log and '"code":"Unavailable"' in log.replace(" ", "")


def test_keygen_seal_and_mount_with_the_cli(short_tmp):
    out = keygate("keygen", "--out", str(short_tmp))
    assert out.returncode == 0, out.stderr
    key, pub = short_tmp / "node.key", short_tmp / "node.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert keygate("keygen", "--out", str(short_tmp)).returncode == 2
    sealed = keygate("seal", "--namespace", "ns1", "--name", "db", "--recipient", str(pub), stdin=b"s3cret\n")
    assert sealed.returncode == 0, sealed.stderr
    text = sealed.stdout.decode().strip()
    assert text.startswith("keygate:v1:") and "s3cret" not in text
    proc, sock = start_serve(short_tmp, "--sealed-key", str(key))
    try:
        with DriverClient(sock) as c:
            resp = c.mount(
                mount_request(
                    "spc",
                    {"objects": json.dumps([{"objectName": "db", "sealed": text}])},
                    Pod(namespace="ns1"),
                )
            )
        assert resp.files[0].contents == b"s3cret\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert "s3cret" not in log and "PRIVATE KEY" not in log


def test_seal_errors_are_clear(short_tmp):
    missing = keygate(
        "seal", "--namespace", "a", "--name", "b", "--recipient", str(short_tmp / "nope.pub"), stdin=b"x"
    )
    assert missing.returncode == 2 and b"cannot read recipient key" in missing.stderr
    (short_tmp / "bad.pub").write_text("hello")
    bad = keygate(
        "seal", "--namespace", "a", "--name", "b", "--recipient", str(short_tmp / "bad.pub"), stdin=b"x"
    )
    assert bad.returncode == 2 and b"not a PEM public key" in bad.stderr
    keygate("keygen", "--out", str(short_tmp))
    empty = keygate("seal", "--namespace", "a", "--name", "b", "--recipient", str(short_tmp / "node.pub"))
    assert empty.returncode == 2 and b"nothing to seal" in empty.stderr


def test_unreadable_sealing_key_stops_start_up(short_tmp):
    out = keygate(
        "serve", "--socket", str(short_tmp / "s.sock"), "--sealed-key", str(short_tmp / "missing.key")
    )
    assert out.returncode == 2 and b"cannot read sealing key" in out.stderr


def test_serve_help_documents_every_option():
    out = keygate("serve", "--help")
    text = out.stdout.decode()
    for flag in (
        "--socket",
        "--config",
        "--sealed-key",
        "--version-key-file",
        "--write-files",
        "--mount-timeout",
        "--grace-period",
        "--log-level",
        "--log-format",
    ):
        assert flag in text
    assert "KEYGATE_SOCKET" in text


def test_config_precedence_file_env_flag(short_tmp):
    import argparse

    from provider.config import add_flags

    cfg = short_tmp / "c.yaml"
    cfg.write_text("socket: /from/file.sock\nmount_timeout: 7\nlog_format: text\n")
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert load(parser.parse_args(["--config", str(cfg)]), environ={}).socket == "/from/file.sock"
    env = {"KEYGATE_SOCKET": "/from/env.sock", "KEYGATE_WRITE_FILES": "true"}
    from_env = load(parser.parse_args(["--config", str(cfg)]), environ=env)
    assert (from_env.socket, from_env.write_files, from_env.mount_timeout, from_env.log_format) == (
        "/from/env.sock",
        True,
        7.0,
        "text",
    )
    from_flag = load(parser.parse_args(["--config", str(cfg), "--socket", "/from/flag.sock"]), environ=env)
    assert from_flag.socket == "/from/flag.sock"
    assert load(None, environ={}) == Config()
    cfg.write_text("sockett: /typo\n")
    with pytest.raises(KeygateError, match="unknown keys sockett"):
        load(parser.parse_args(["--config", str(cfg)]), environ={})
    with pytest.raises(KeygateError, match="KEYGATE_MOUNT_TIMEOUT: invalid value"):
        load(None, environ={"KEYGATE_MOUNT_TIMEOUT": "soon"})


def test_demo_runs_and_masks_values():
    out = keygate("demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "db-password" in text and "masked" in text and "DENIED PERMISSION_DENIED" in text
    assert "correct horse" not in text + out.stderr.decode()


def test_readme_documents_every_option_and_command():
    from provider.config import OPTIONS

    readme = (ROOT / "README.md").read_text()
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}`" in configuration and f"`{opt.env}`" in configuration, opt.key
    for command in ("serve", "demo", "keygen", "seal", "lint", "version"):
        assert f"`keygate {command}" in readme, command
    test_line = next(
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("./")
    )
    assert f"```sh\n{test_line}\n```" in readme, "CI must run the README's test command"
