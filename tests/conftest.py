"""Shared fixtures: a live daemon on a real Unix socket, a driver-shaped client, sealing keys."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keygate_dev.driver_client import DriverClient
from keygate_dev.embedded import daemon_thread
from provider import logs
from provider.attest import Attestor
from provider.config import Config
from provider.mount import Mounter
from providers.sealed.envelope import generate_key, private_pem, seal

pytest_plugins = ["tests.kubeapi"]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="kg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class NodeKey:
    key: X25519PrivateKey
    path: Path

    def seal(self, value: bytes, namespace: str, name: str) -> str:
        return seal(value, namespace, name, [self.key.public_key()])


@pytest.fixture
def node_key(short_tmp: Path) -> NodeKey:
    key = generate_key()
    path = short_tmp / "node.key"
    path.write_bytes(private_pem(key))
    path.chmod(0o600)
    return NodeKey(key, path)


@dataclass
class Running:
    client: DriverClient
    mounter: Mounter
    config: Config
    log: io.StringIO = field(default_factory=io.StringIO)

    def log_text(self) -> str:
        return self.log.getvalue()

    def audit_text(self) -> str:
        path = Path(self.config.audit_sink)
        return path.read_text() if path.is_file() else ""

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_text().splitlines()]


@pytest.fixture
def start_daemon(short_tmp: Path, node_key: NodeKey) -> Iterator[Callable[..., Running]]:
    """Start a daemon (sealed key loaded) with optional Config overrides and attestor.

    Attestation is off unless a test turns it on (spine tests carry no tokens); audit records
    go to a file in the test's directory (``Running.audit_records()``).
    """
    stack = ExitStack()
    counter = [0]

    def start(attestor: Attestor | None = None, **overrides: Any) -> Running:
        counter[0] += 1
        config = Config(
            socket=str(short_tmp / f"d{counter[0]}.sock"),
            sealed_key=(str(node_key.path),),
            insecure_skip_attestation=True,
            audit_sink=str(short_tmp / f"audit{counter[0]}.jsonl"),
            metrics_addr="",
        )
        config = replace(config, **overrides)
        buffer = io.StringIO()
        logs.setup("debug", "json", buffer)
        mounter = stack.enter_context(daemon_thread(config, attestor))
        client = stack.enter_context(DriverClient(config.socket))
        return Running(client, mounter, config, buffer)

    yield start
    stack.close()
    logging.getLogger().handlers.clear()
