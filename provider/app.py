"""Wire a :class:`Config` into a ready :class:`Mounter` (the one place that knows all parts)."""

from __future__ import annotations

from provider.attest import Attestor, InsecureTrustAttributes
from provider.config import Config
from provider.health import Readiness
from provider.mount import Mounter
from provider.versions import Versioner
from providers.registry import Registry


def build_mounter(config: Config, attestor: Attestor | None = None) -> Mounter:
    """Construct everything a Mount needs; fails fast (at start-up) on unreadable keys."""
    readiness = Readiness()
    readiness.set("keys", False, "loading")
    registry = Registry(config.backend_settings())
    if config.backend_settings()["sealed"]["keys"]:
        registry.get("sealed")
    versioner = (
        Versioner.from_file(config.version_key_file) if config.version_key_file else Versioner.random()
    )
    readiness.set("keys", True)
    return Mounter(
        registry,
        attestor or InsecureTrustAttributes(),
        versioner,
        timeout=config.mount_timeout,
        write_files=config.write_files,
        readiness=readiness,
    )
