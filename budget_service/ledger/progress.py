"""How far the ledger writers have got in an org's outbox stream."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from budget_service.hotpath import keys
from budget_service.hotpath.store import redis_call
from budget_service.ledger.writer import GROUP
from servicekit.errors import Unavailable


def id_tuple(stream_id: str) -> tuple[int, int]:
    """A stream id ('1700000000000-3') as a comparable pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def last_event_id(client: aioredis.Redis, org: str) -> str:
    """The id of the newest event ever appended to the org's outbox ('0-0' when none)."""
    stream = keys.ledger(org)
    if not await redis_call(client.exists(stream)):
        return "0-0"
    info = await redis_call(client.xinfo_stream(stream))
    return str(info["last-generated-id"])


async def wait_written(client: aioredis.Redis, org: str, last_id: str, wait_seconds: float) -> None:
    """Wait until every event of `org` up to `last_id` is acknowledged by a ledger writer."""
    if last_id == "0-0":
        return
    stream = keys.ledger(org)
    deadline = time.monotonic() + wait_seconds
    while True:
        groups = await redis_call(client.xinfo_groups(stream))
        group = next((g for g in groups if g["name"] == GROUP), None)
        if group is not None and id_tuple(group["last-delivered-id"]) >= id_tuple(last_id):
            pending = await redis_call(client.xpending_range(stream, GROUP, "-", last_id, 1))
            if not pending:
                return
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the ledger writer has not written org {org!r}'s events up to {last_id} within"
                f" {wait_seconds:g}s (is a budget service with LEDGER_WRITER on running, and"
                " PostgreSQL up?)"
            )
        await asyncio.sleep(0.05)
