"""Ledger retention: a periodic job deletes old ledger rows in batches; off by default.

Off by default because the ledger is the financial record of every charge: how long to keep it
is a decision for finance and audit (often years), and its rows are narrow, with BRIN indexes
on time, so keeping them costs disk, not speed. Set it and each service runs the job every
`LEDGER_RETENTION_INTERVAL_SECONDS`, one replica at a time (an advisory lock), each batch its
own short transaction, a bounded number of batches per run:

- `LEDGER_RETENTION_DAYS=N`: usage records older than N days (hour reports reach back N days;
  day, week and month reports read spend_daily); and the events and effects of a reservation
  once all of its events are older than N days, it has ended (commit, release or expire), and
  deleting them changes no sum reconciliation reads: it moved no spend in a budget period that
  reconciliation may still compare (the period Redis holds, or the current one, whichever is
  older), and its holds net to zero on every budget. So the events of open holds, and of spend
  on a lifetime budget (whose period never ends), are kept.
- `LEDGER_ROLLUP_RETENTION_DAYS=M`: spend_daily rows of days more than M days ago.

Dead letters are never deleted: each waits for a person.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis
import structlog

from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys
from budget_service.hotpath.periods import bounds_ms
from budget_service.hotpath.store import redis_call
from servicekit.clock import Clock

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000
BATCH = 5_000  # rows (reservations for events) per transaction
MAX_BATCHES = 200  # per table and run: a run stays bounded; the next one goes on
RETENTION_LOCK = 7_260_002  # advisory lock: one replica runs the job at a time
TABLES = ("ledger_events", "ledger_effects", "usage_records", "spend_daily")

# A batch of ended reservations (their events share (org, reservation_id, created_ms)) whose
# events are all older than $1 and that reconciliation no longer reads: for each budget that
# still exists ($2 uids, $3 the oldest period start reconciliation may compare), no spend in a
# period from that start on, and holds that net to zero. Their events and effects go together.
PRUNE_EVENTS = """
WITH ended AS (
    SELECT DISTINCT e.org, e.reservation_id, e.created_ms
    FROM ledger_events e
    WHERE e.type IN ('commit', 'release', 'expire') AND e.at < $1
      AND NOT EXISTS (
          SELECT 1 FROM ledger_events y
          WHERE y.org = e.org AND y.reservation_id = e.reservation_id
            AND y.created_ms = e.created_ms AND y.at >= $1)
      AND NOT EXISTS (
          SELECT 1
          FROM ledger_events y
          JOIN ledger_effects f ON f.org = y.org AND f.event_id = y.event_id
          JOIN unnest($2::bigint[], $3::bigint[]) AS p(uid, floor) ON p.uid = f.budget_uid
          WHERE y.org = e.org AND y.reservation_id = e.reservation_id
            AND y.created_ms = e.created_ms
          GROUP BY f.budget_uid, p.floor
          HAVING sum(f.reserved_delta) <> 0
              OR bool_or(f.spent_delta <> 0 AND f.period_start_ms >= p.floor))
    LIMIT $4
),
events AS (
    DELETE FROM ledger_events x USING ended d
    WHERE x.org = d.org AND x.reservation_id = d.reservation_id AND x.created_ms = d.created_ms
    RETURNING x.org, x.event_id
),
effects AS (
    DELETE FROM ledger_effects f USING events g
    WHERE f.org = g.org AND f.event_id = g.event_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM effects) AS effects
"""

PRUNE_USAGE = """
DELETE FROM usage_records WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM usage_records WHERE at < $1 LIMIT $2))
"""

PRUNE_ROLLUPS = """
DELETE FROM spend_daily WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM spend_daily WHERE day < $1 LIMIT $2))
"""


@dataclass
class RetentionResult:
    """What the job deleted since the process started (for metrics)."""

    runs: int = 0
    last_run_unix: float = 0.0
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))


class LedgerRetention:
    """Deletes ledger rows past their retention (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        clock: Clock,
        *,
        days: int,
        rollup_days: int,
        batch_size: int = BATCH,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.clock = clock
        self.days = days
        self.rollup_days = rollup_days
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.result = RetentionResult()

    async def run_once(self) -> dict[str, int] | None:
        """One run: answers the rows deleted per table, or None when another replica runs."""
        now_ms = self.clock.now_ms()
        deleted = dict.fromkeys(TABLES, 0)
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
                return None
            try:
                if self.days > 0:
                    cutoff = _instant(now_ms - self.days * DAY_MS)
                    uids, floors = await self._period_floors(now_ms)
                    for _ in range(self.max_batches):
                        row = await conn.fetchrow(
                            PRUNE_EVENTS, cutoff, uids, floors, self.batch_size
                        )
                        deleted["ledger_events"] += row["events"]
                        deleted["ledger_effects"] += row["effects"]
                        if row["events"] == 0:
                            break
                    deleted["usage_records"] = await self._batches(conn, PRUNE_USAGE, cutoff)
                if self.rollup_days > 0:
                    first_day = _instant(now_ms).date() - dt.timedelta(days=self.rollup_days)
                    deleted["spend_daily"] = await self._batches(conn, PRUNE_ROLLUPS, first_day)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)
        self.result.runs += 1
        self.result.last_run_unix = time.time()
        for table, n in deleted.items():
            self.result.deleted[table] += n
        if any(deleted.values()):
            log.info("ledger.retention_deleted", **deleted)
        return deleted

    async def _batches(self, conn: asyncpg.Connection, sql: str, bound: object) -> int:
        total = 0
        for _ in range(self.max_batches):
            status: str = await conn.execute(sql, bound, self.batch_size)
            n = int(status.rpartition(" ")[2])
            total += n
            if n < self.batch_size:
                break
        return total

    async def _period_floors(self, now_ms: int) -> tuple[list[int], list[int]]:
        """Every existing budget's uid and the oldest period start whose spend reconciliation
        may still compare: the current period's, or the one Redis still counts (a budget
        without calls since its period rolled over keeps the old one until the next call)."""
        uids: list[int] = []
        floors: list[int] = []
        for org, budgets in sorted((await BudgetRepository(self.pool).all_by_org()).items()):
            async with self.redis.pipeline(transaction=False) as pipe:
                for b in budgets:
                    pipe.hget(keys.budget(org, b.uid), "pstart")
                held = await redis_call(pipe.execute())
            for b, pstart in zip(budgets, held, strict=True):
                current = bounds_ms(b.period, b.timezone, now_ms)[0]
                uids.append(b.uid)
                floors.append(min(current, int(pstart)) if pstart else current)
        return uids, floors


def _instant(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
