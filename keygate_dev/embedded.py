"""Run a daemon on its own event loop in a background thread (for ``keygate demo`` and tests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from provider.app import build_mounter
from provider.attest import Attestor
from provider.config import Config
from provider.mount import Mounter
from provider.server import Daemon


@contextmanager
def daemon_thread(config: Config, attestor: Attestor | None = None) -> Iterator[Mounter]:
    """Start a daemon serving ``config.socket``; stop it (draining mounts) on exit."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    mounter = build_mounter(config, attestor)
    daemon = Daemon.from_config(mounter, config)
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            await daemon.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller thread
            failure.append(exc)
            started.set()
            return
        started.set()
        await stop.wait()
        await daemon.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield mounter
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()
