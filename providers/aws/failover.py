"""Reading an object in its primary and its failover region, the way the AWS provider does.

With ``failoverRegion`` the AWS provider reads every object in both regions on every Mount and
decides on the two answers: an answer that is the caller's fault (not found, access denied,
invalid request: AWS's client-fault errors) in *either* region fails the Mount, even when the
other region answered; otherwise the primary's value is used, or the failover's when the primary
is out (unreachable, timing out, throttled, 5xx); when both are out the Mount fails naming both.
So a secret missing from the replica region is noticed at once, not on the day of the outage.

keygate sends the two reads at the same time (the AWS provider sends them one after the other).
The primary gets half of the time left in the Mount, the failover nine tenths: when the primary
answered, the failover's answer is awaited only until the primary's half ends (a failover region
that has not answered by then counts as out and is logged, so a black-holed replica region slows a
Mount by at most half its time); when the primary is out, the failover has the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from provider.domain import FetchContext
from provider.errors import Code, KeygateError
from providers.aws import objects
from providers.aws.client import Value
from providers.aws.params import Plan
from providers.common.runtime import gather_all

log = logging.getLogger("keygate.aws")

Read = Callable[[objects.Unit, FetchContext], Awaitable[list[Value]]]
Answer = list[tuple[Sequence[Plan], Value]]
# AWS's client faults (the AWS provider's "fatal" 4XX errors): never a reason to use the other region.
CLIENT_FAULTS = frozenset(
    {
        Code.INVALID_REQUEST,
        Code.INVALID_SPC,
        Code.UNAUTHENTICATED,
        Code.PERMISSION_DENIED,
        Code.SECRET_NOT_FOUND,
    }
)
PRIMARY_SHARE = 0.5
FAILOVER_SHARE = 0.9


async def read_both(read: Read, group: objects.Unit, ctx: FetchContext) -> Answer:
    """``group``'s values: from the primary region, or its failover region as described above."""
    fallback = [(plans[0].failover, plans) for _, plans in group]
    targets = [(target, plans) for target, plans in fallback if target is not None]
    if len(targets) != len(fallback):
        return _pairs(group, await read(group, ctx))
    now, left = time.monotonic(), ctx.remaining()
    primary_ctx = replace(ctx, deadline=now + left * PRIMARY_SHARE)
    failover_ctx = replace(ctx, deadline=now + left * FAILOVER_SHARE)
    units = objects.units(targets)
    region = targets[0][0].region
    pending = asyncio.ensure_future(gather_all([_outcome(read(unit, failover_ctx)) for unit in units]))
    try:
        primary = await _outcome(read(group, primary_ctx))
        if isinstance(primary, KeygateError) and primary.code in CLIENT_FAULTS:
            raise primary
        if not isinstance(primary, KeygateError):
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, primary_ctx.deadline - time.monotonic()))
            if not done:
                log.warning(
                    "AWS failover region did not answer in time; using the primary region's answer",
                    extra={"region": group[0][0].region, "failover_region": region},
                )
                return _pairs(group, primary)
        rest = await pending
    finally:
        if not pending.done():
            pending.cancel()
            pending.add_done_callback(_retrieve)
    fatal = _client_fault(rest, region)
    if fatal is not None:
        raise fatal
    if not isinstance(primary, KeygateError):
        return _pairs(group, primary)
    broken = next((o for o in rest if isinstance(o, KeygateError)), None)
    if broken is not None:
        raise KeygateError(
            f"{primary.message}; failover region {region}: {broken.message}", code=broken.code
        ) from None
    log.warning(
        "AWS primary region unavailable; using the failover region's answer",
        extra={"region": group[0][0].region, "failover_region": region, "objects": len(group)},
    )
    out: Answer = []
    for unit, values in zip(units, rest, strict=True):
        assert not isinstance(values, KeygateError)
        out.extend(_pairs(unit, values))
    return out


def _client_fault(rest: list[list[Value] | KeygateError], region: str) -> KeygateError | None:
    """The failover region's first client fault (an SSM name it did not find included), as a
    plain error: it fails the Mount, but never takes an object away from a pod (revocation
    follows the primary region only)."""
    for outcome in rest:
        if isinstance(outcome, KeygateError):
            found = outcome if outcome.code in CLIENT_FAULTS else None
        else:
            found = next((v.missing for v in outcome if v.missing is not None), None)
        if found is not None:
            return KeygateError(
                f"{found.message} (failover region {region}: every Mount reads both regions, so "
                "create it there too, or remove failoverRegion)",
                code=found.code,
            )
    return None


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect a cancelled failover read's outcome, so it is never reported as unretrieved."""
    if not task.cancelled():
        task.exception()


async def _outcome(call: Awaitable[list[Value]]) -> list[Value] | KeygateError:
    """One region's values or its keygate error, so one region's failure never cancels the other."""
    try:
        return await call
    except KeygateError as exc:
        return exc


def _pairs(unit: objects.Unit, values: list[Value]) -> Answer:
    return [(plans, value) for (_, plans), value in zip(unit, values, strict=True)]
