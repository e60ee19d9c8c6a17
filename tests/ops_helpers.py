"""Helpers for the operations tests: a free port, an HTTP getter, a scrape parser, a probe backend.

``ProbeBackend`` is a real :class:`providers.base.Backend` registered under the name ``probe`` the
way a third-party plugin would be; it lets a test hold a Mount in flight and see which request
id the pipeline exposes to backends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from provider.domain import FetchContext, Fetched, SecretObject
from provider.logs import current_request_id
from providers.common.schema import Schema

log = logging.getLogger("keygate.backend.probe")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape keyed by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scrape: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


class ProbeBackend:
    """Returns ``value`` for each object; waits on ``gate`` first when the SPC asks it to."""

    name: ClassVar[str] = "probe"
    schema: ClassVar[Schema | None] = None
    gate = threading.Event()
    entered = threading.Event()
    seen_request_ids: ClassVar[list[str]] = []

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        ProbeBackend.seen_request_ids.append(current_request_id())
        log.info("probe fetch", extra={"objects": len(objects)})
        if ctx.parameters.get("probeWait") == "true":
            ProbeBackend.entered.set()
            await asyncio.to_thread(ProbeBackend.gate.wait, 20)
        return [
            Fetched(obj=o, object_id=f"probe/{o.name}", contents=str(o.field("value")).encode())
            for o in objects
        ]

    async def close(self) -> None:
        return None


def register_probe(registry: Any) -> None:
    """Register ProbeBackend as a plugin would (an entry point maps the name to a target)."""
    registry._targets["probe"] = "tests.ops_helpers:ProbeBackend"
