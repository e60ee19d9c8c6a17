"""The floor for benchmark 6: the burst's HTTP requests sent by a minimal async client.

What a Vault client cannot go below on this machine: the same logins and reads keygate sends
for a burst (one login per pod, then each pod's reads at once), over TLS with a pool of
keep-alive connections of the same size as keygate's per-endpoint limit, straight to the same
OpenBao. No attestation, no gRPC, no parsing beyond the token; :mod:`bench.vault_burst` runs it
in the same run as keygate's burst, so the ratio of the two is measured under one load.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence

import aiohttp


async def _pod(
    session: aiohttp.ClientSession, address: str, role: str, jwt: str, paths: Sequence[str]
) -> int:
    async with session.post(f"{address}/v1/auth/jwt/login", json={"role": role, "jwt": jwt}) as resp:
        resp.raise_for_status()
        token = (await resp.json())["auth"]["client_token"]

    async def read(path: str) -> None:
        async with session.get(f"{address}/v1/{path}", headers={"X-Vault-Token": token}) as resp:
            resp.raise_for_status()
            await resp.json()

    await asyncio.gather(*(read(p) for p in paths))
    return 1 + len(paths)


async def burst(
    address: str, ca_file: str, role: str, jwts: Sequence[str], paths: Sequence[str], connections: int
) -> tuple[float, int]:
    """(seconds, requests) for every pod's login then reads, all pods at once."""
    context = ssl.create_default_context(cafile=ca_file)
    connector = aiohttp.TCPConnector(ssl=context, limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        # one exchange first so the pool holds a TLS connection, as keygate's warm-up Mount does
        await _pod(session, address, role, jwts[0], paths[:1])
        started = time.perf_counter()
        counts = await asyncio.gather(*(_pod(session, address, role, jwt, paths) for jwt in jwts))
        return time.perf_counter() - started, sum(counts)
