"""This node's AWS region, from its ``topology.kubernetes.io/region`` label, for SPCs without one.

The AWS provider falls back to that label (not to instance metadata), so its SPCs often omit
``region``. The Node is read once per daemon, on the first Mount that needs it, and the answer is
kept for the daemon's life: a node never changes region. A failure is kept for a short while
(``node_region_retry`` seconds, doubling up to five minutes), so a node without the label or an
API that refuses the GET costs one request per interval, not one per Mount.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from provider.errors import BackendUnavailable, InvalidSPC, KeygateError
from providers.aws.params import REGION_RE

if TYPE_CHECKING:
    from provider.attest.kube import KubeAPI

REGION_LABEL = "topology.kubernetes.io/region"
FIX = "set region in the SPC (or backends.aws.region in the daemon config) or label the node"
MAX_RETRY = 300.0


class NodeRegion:
    """The region label of the daemon's own node, read lazily and cached."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.node_name = str(settings.get("node_name") or "")
        self._kube_args = (
            str(settings.get("kube_api_url") or ""),
            str(settings.get("kube_ca") or ""),
            str(settings.get("kube_token_file") or ""),
        )
        self._first_retry = float(settings.get("node_region_retry", 10.0))
        self._retry = self._first_retry
        self._kube: KubeAPI | None = None
        self._region = ""
        self._failure: KeygateError | None = None
        self._retry_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.reads = 0

    async def get(self) -> str:
        """The node's region; raises InvalidSPC/BackendUnavailable saying how to fix it."""
        if self._region:
            return self._region
        if not self.node_name:
            raise InvalidSPC(
                "parameter 'region' is not set and keygate does not know its node (node_name) to read "
                f"its {REGION_LABEL} label: {FIX}"
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._region:
                if self._failure is not None and time.monotonic() < self._retry_at:
                    raise _again(self._failure)
                try:
                    self._region = await self._read()
                except KeygateError as exc:
                    self._failure = exc
                    self._retry_at = time.monotonic() + self._retry
                    self._retry = min(self._retry * 2, MAX_RETRY)
                    raise
                self._failure = None
        return self._region

    async def _read(self) -> str:
        self.reads += 1
        where = f"parameter 'region' is not set and node {self.node_name!r}"
        try:
            labels = await self._api().node_labels(self.node_name)
        except KeygateError as exc:
            raise BackendUnavailable(
                f"{where}: its {REGION_LABEL} label cannot be read: {exc.message}; {FIX}"
            ) from None
        region = labels.get(REGION_LABEL, "")
        if not region:
            raise InvalidSPC(f"{where} has no {REGION_LABEL} label: {FIX}")
        if not REGION_RE.fullmatch(region):
            raise InvalidSPC(f"{where} has {REGION_LABEL}={region[:40]!r}, not an AWS region name: {FIX}")
        return region

    def _api(self) -> KubeAPI:
        if self._kube is None:
            from provider.attest.kube import KubeAPI

            self._kube = KubeAPI(*self._kube_args, timeout=5.0)
        return self._kube

    async def aclose(self) -> None:
        if self._kube is not None:
            await self._kube.aclose()
            self._kube = None


def _again(failure: KeygateError) -> KeygateError:
    """A fresh copy of the remembered failure (one exception object is not raised twice)."""
    return type(failure)(failure.message, code=failure.code)
