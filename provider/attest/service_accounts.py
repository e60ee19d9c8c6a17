"""The pod's ServiceAccount annotations, read from the Kubernetes API only when a backend asks.

The AWS provider takes a pod's IAM role from its service account's ``eks.amazonaws.com/role-arn``
annotation when the SPC names none. Backends stay ignorant of Kubernetes: the mount pipeline
hands them :meth:`ServiceAccounts.accessor` in the fetch context, and only a backend that needs
the annotations calls it. Answers are kept a short while (``ttl``, bounded by entries and bytes)
so a rotation poll of many pods costs one GET per service account per ``ttl``; concurrent
Mounts of one service account share one GET. Failures are not remembered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from provider.bounded_cache import BoundedCache
from provider.errors import InvalidSPC, KeygateError

if TYPE_CHECKING:
    from provider.attest.kube import KubeAPI
    from provider.domain import PodIdentity

Annotations = Mapping[str, str]
# kubectl's copy of the whole object: large, and never what a backend looks for.
DROPPED = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


class ServiceAccounts:
    """Cached ServiceAccount annotation reads through the daemon's Kubernetes API settings."""

    def __init__(
        self,
        api_url: str = "",
        ca_file: str = "",
        token_file: str = "",
        *,
        ttl: float = 30.0,
        timeout: float = 5.0,
        max_entries: int = 4096,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._kube_args = (api_url, ca_file, token_file)
        self._timeout = timeout
        self._kube: KubeAPI | None = None
        self._cache: BoundedCache[tuple[str, str], dict[str, str]] = BoundedCache(
            "service-accounts",
            max_entries=max_entries,
            max_bytes=max_bytes,
            max_entry_bytes=64 * 1024,
            ttl=ttl,
        )
        self._inflight: dict[tuple[str, str], asyncio.Task[dict[str, str]]] = {}
        self.reads = 0

    def accessor(self, pod: PodIdentity) -> Callable[[], Awaitable[Annotations]]:
        """The annotations of ``pod``'s (attested) service account, read when first awaited."""

        def read() -> Awaitable[Annotations]:
            return self.annotations(pod.namespace, pod.service_account)

        return read

    async def annotations(self, namespace: str, name: str) -> Annotations:
        key = (namespace, name)
        cached = self._cache.get(key)
        if cached is not None:
            return dict(cached)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(key))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return dict(await asyncio.shield(task))

    async def _read(self, key: tuple[str, str]) -> dict[str, str]:
        self.reads += 1
        raw = await self._api(key).service_account_annotations(*key)
        found = {k: v for k, v in raw.items() if k not in DROPPED}
        self._cache.put(key, found)
        return found

    def _api(self, key: tuple[str, str]) -> KubeAPI:
        if self._kube is None:
            from provider.attest.kube import KubeAPI

            try:
                self._kube = KubeAPI(*self._kube_args, timeout=self._timeout)
            except KeygateError as exc:
                raise InvalidSPC(f"cannot read service account {key[0]}/{key[1]}: {exc.message}") from None
        return self._kube

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        self._cache.clear()
        if self._kube is not None:
            await self._kube.aclose()
            self._kube = None
