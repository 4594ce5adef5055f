"""Releases holds whose caller vanished: every org's expiry index, scanned on an interval.

It also keeps the registry of orgs (`ba:orgs`) from growing forever: orgs idle past every
reservation's lifetime, with no budgets, are taken out of it (scripts/prune_org.lua).
"""

from __future__ import annotations

import redis.asyncio as aioredis
import structlog

from budget_service.hotpath import keys
from budget_service.hotpath.engine import Engine
from budget_service.hotpath.errors import CounterOverflow, DataLost
from budget_service.hotpath.store import redis_call
from servicekit.clock import Clock
from servicekit.errors import ScriptError

log = structlog.get_logger(__name__)
BATCH = 500  # per org and pass: a backlog drains over passes instead of blocking one


class Sweeper:
    """Finds reservations past their expiry (ZRANGEBYSCORE, never a key scan) and expires them."""

    def __init__(self, client: aioredis.Redis, engine: Engine, clock: Clock) -> None:
        self.client = client
        self.engine = engine
        self.clock = clock

    async def sweep_once(self) -> int:
        """One pass over every org; returns how many holds were released."""
        released = 0
        orgs: set[str] = await redis_call(self.client.smembers(keys.ORGS))
        for org in orgs:
            due: list[str] = await redis_call(
                self.client.zrangebyscore(
                    keys.expiries(org), "-inf", self.clock.now_ms(), start=0, num=BATCH
                )
            )
            for reservation_id in due:
                try:
                    expired = await self.engine.expire(org, reservation_id)
                except ScriptError:  # logged by the store; one bad record must not stall the rest
                    continue
                except CounterOverflow as exc:  # a corrupt counter: nothing changed, say which
                    log.error("hold.expire_refused", org=org, reservation_id=reservation_id,
                              budget_id=exc.budget_id, counter=exc.counter)  # fmt: skip
                    continue
                except DataLost:  # the rebuild decides how its holds ended
                    break
                if expired:
                    released += 1
                    log.info("hold.expired", org=org, reservation_id=reservation_id)
        return released

    async def prune_once(self, idle_ms: int) -> int:
        """Take orgs idle for `idle_ms` with no budgets out of the registry; returns how many."""
        pruned = 0
        orgs: set[str] = await redis_call(self.client.smembers(keys.ORGS))
        for org in orgs:
            reply = await self.engine.scripts.run(
                "prune_org",
                [
                    keys.ORGS,
                    keys.config(org),
                    keys.expiries(org),
                    keys.ledger(org),
                    keys.config_changes(org),
                ],
                [org, idle_ms, keys.LEDGER_GROUP],
            )
            if reply[0] == "PRUNED":
                pruned += 1
        if pruned:
            log.info("orgs.pruned", count=pruned, remaining=len(orgs) - pruned)
        return pruned
