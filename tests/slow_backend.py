"""A test backend that answers after a configurable delay (``delay`` seconds per object, run
concurrently), standing in for a network backend with round-trip time L."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from provider.domain import FetchContext, Fetched, SecretObject
from providers.common.schema import Schema


class SlowBackend:
    name: ClassVar[str] = "slow"
    schema: ClassVar[Schema | None] = None

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.delay = float(settings.get("delay", 0.05))
        self.sequential = bool(settings.get("sequential", False))
        self.calls = 0

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def _one(self, obj: SecretObject) -> Fetched:
        self.calls += 1
        await asyncio.sleep(float(obj.field("delay", self.delay)))
        if obj.field("fail"):
            from provider.errors import BackendUnavailable

            raise BackendUnavailable(f"slow backend: object {obj.name!r} failed on purpose")
        return Fetched(
            obj=obj, object_id=f"slow/{obj.name}", contents=str(obj.field("value", obj.name)).encode()
        )

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        if self.sequential:
            return [await self._one(o) for o in objects]
        return list(await asyncio.gather(*(self._one(o) for o in objects)))

    async def close(self) -> None:
        return None
