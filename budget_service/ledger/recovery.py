"""Recovery: an org's Redis state rebuilt from the PostgreSQL ledger, by hand or by itself.

A rebuild of one org (`rebuild_org`):

1. fences the org: marks its config hash (`_x`), so every money script of the org answers
   LOST (UNAVAILABLE to callers, who retry), and every config script FENCED (OrgRebuilding:
   the change is saved in PostgreSQL and synced once the fence is lifted), so nothing changes
   it while the ledger's account of it is restored;
2. waits until the ledger writers have written every event its outbox stream still holds, and
   reads the org's budgets from PostgreSQL (after fencing: a change saved until then is in
   them; one saved later was refused by Redis, and is synced right after the rebuild);
3. reads from the ledger: each budget's spent in its current period and its holds (each
   reservation counted once, in its final state), every open hold (with the latest expiry an
   Extend gave it), and how reservations ended: those that ended within the retention window
   (their records answer retried calls and refunds) and those Redis still marks held (a Redis
   promoted from a replica that missed the last writes);
4. writes all of it with the restore script in calls of at most `CHUNK` budgets and records
   (ended reservations read from PostgreSQL in slices of that size too); the last call writes
   the epoch and lifts the fence atomically with the end of the restore.

`Rebuilder` runs rebuilds in the service: when a call finds an org's data lost (DataLost), and,
for the whole data set, when `EpochWatch` finds the `ba:epoch` sentinel gone. A PostgreSQL
advisory lock per org makes one replica do the work while the others wait and then find the
org intact. Each rebuild takes one pooled connection for its lock and its queries alike, and
at most half the pool's connections rebuild at once (the ledger writer, whose progress a
rebuild waits for, and the calls keep the rest), so any number of orgs lost together are
rebuilt a few at a time instead of every connection waiting for another. Nothing is rebuilt
while the sentinel holds another database's epoch (REDIS_URL reaching another deployment's
data, or the wrong backup restored): that data set is left as it is and calls fail closed
(ForeignDataSet) until an operator points the service at its own.

`prepare_data_set` runs at start: adopts a Redis that predates the epoch, refuses another
database's Redis, and rebuilds a Redis that came back empty before serving.

What a rebuild cannot restore is what never reached PostgreSQL: events still in a lost outbox
stream (with AOF `everysec`, up to about a second of calls; none with `appendfsync always`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from budget_service.config import epoch as epochs
from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync, budget_args
from budget_service.hotpath import keys
from budget_service.hotpath.errors import DataLost, ForeignDataSet
from budget_service.hotpath.periods import bounds_ms
from budget_service.hotpath.store import Scripts, redis_call
from budget_service.ledger.progress import last_event_id, wait_written
from budget_service.ledger.writer import GROUP
from servicekit.clock import Clock
from servicekit.errors import ConfigError, ServiceError

log = structlog.get_logger(__name__)
T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]  # what runs holding a lock, on its connection

CHUNK = 500  # budgets and reservation records per restore call
FENCE = "_x"  # in an org's config hash while it is rebuilt (lib.lua lost_epoch)
LOCK_RETRY_SECONDS = 0.05  # how often a rebuild waiting for another replica's tries its lock
ALL = "*"  # the Rebuilder's name for "every org"

# Per budget: spent in the period starting at the given start, and holds over all time, from
# the effects of events up to a stream position ((2^62, 0): every event). Each reservation
# counts once, in its final state: its hold is given back once however many ending events the
# ledger has (a Redis rewound to before a commit may expire the hold again: commit and expire
# then both give it back), and it is charged only by its commit. Per reservation and budget the
# ending events' holds count as the largest one given back: a late commit gives back nothing
# (its expire did), so expire then late commit still nets the hold to zero.
LEDGER_SUMS = """
WITH fx AS (
    SELECT f.budget_uid, e.type, e.reservation_id, e.created_ms, f.reserved_delta,
           CASE WHEN f.period_start_ms = p.pstart THEN f.spent_delta ELSE 0 END AS spent
    FROM ledger_effects f
    JOIN ledger_events e ON e.org = f.org AND e.event_id = f.event_id
    JOIN unnest($2::bigint[], $3::bigint[]) AS p(uid, pstart) ON p.uid = f.budget_uid
    WHERE f.org = $1
      AND (split_part(e.stream_id, '-', 1)::bigint, split_part(e.stream_id, '-', 2)::bigint)
          <= ($4::bigint, $5::bigint)
),
counted AS (
    SELECT budget_uid, spent, reserved_delta AS reserved
    FROM fx WHERE type NOT IN ('commit', 'release', 'expire')
    UNION ALL
    SELECT budget_uid, coalesce(sum(spent) FILTER (WHERE type = 'commit'), 0),
           min(reserved_delta)
    FROM fx WHERE type IN ('commit', 'release', 'expire')
    GROUP BY budget_uid, reservation_id, created_ms
)
SELECT budget_uid, coalesce(sum(spent), 0) AS spent, coalesce(sum(reserved), 0) AS reserved
FROM counted
GROUP BY budget_uid
"""

# Reservations with a reserve event and no ending one. A reservation's events share its
# (org, reservation_id, created_ms): an id reused after the first one was forgotten is another
# reservation. A hold moved by Extend expires when its newest extend says (in stream order).
OPEN_HOLDS = """
SELECT r.reservation_id, r.created_ms, r.amount_nanos, r.budget_uids, r.price_ref,
       r.fingerprint, r.subject, r.expires_at_ms AS reserved_expires_at_ms,
       coalesce((SELECT x.expires_at_ms FROM ledger_events x
                 WHERE x.org = r.org AND x.reservation_id = r.reservation_id
                   AND x.created_ms = r.created_ms AND x.type = 'extend'
                 ORDER BY split_part(x.stream_id, '-', 1)::bigint DESC,
                          split_part(x.stream_id, '-', 2)::bigint DESC
                 LIMIT 1),
                r.expires_at_ms) AS expires_at_ms
FROM ledger_events r
WHERE r.org = $1 AND r.type = 'reserve'
  AND NOT EXISTS (
      SELECT 1 FROM ledger_events x
      WHERE x.org = r.org AND x.reservation_id = r.reservation_id
        AND x.created_ms = r.created_ms AND x.type IN ('commit', 'release', 'expire'))
ORDER BY r.reservation_id
"""

# How reservations (id, created) ended, with all a record needs to answer retries and refunds:
# those that ended within the retention window (their records would still be in Redis: a retried
# Commit answers what the first one did, a Refund works), and the ones given ($2, $3: Redis marks
# them held). One row each, its final state: commit wins over release and expire (a commit after
# the hold expired leaves it committed; a Redis rewound to before a commit may end it again).
ENDED = """
WITH wanted AS (
    SELECT reservation_id AS rid, created_ms AS created FROM ledger_events
    WHERE org = $1 AND type IN ('commit', 'release', 'expire')
      AND at > timestamptz 'epoch' + $4 * interval '1 millisecond'
    UNION
    SELECT rid, created FROM unnest($2::text[], $3::bigint[]) AS h(rid, created)
)
SELECT DISTINCT ON (e.reservation_id, e.created_ms)
       e.reservation_id, e.created_ms, e.type, e.amount_nanos, e.released_nanos, e.late,
       e.fingerprint, coalesce(r.amount_nanos, 0) AS hold, coalesce(r.budget_uids, '{}') AS uids,
       coalesce(r.price_ref, '') AS price_ref, coalesce(r.fingerprint, '') AS reserve_fp,
       coalesce(r.subject, '{}') AS subject, coalesce(r.expires_at_ms, 0) AS reserved_expires_at_ms,
       coalesce((SELECT x.expires_at_ms FROM ledger_events x
                 WHERE x.org = e.org AND x.reservation_id = e.reservation_id
                   AND x.created_ms = e.created_ms AND x.type = 'extend'
                 ORDER BY split_part(x.stream_id, '-', 1)::bigint DESC,
                          split_part(x.stream_id, '-', 2)::bigint DESC
                 LIMIT 1),
                r.expires_at_ms, 0) AS expires_at_ms,
       (SELECT floor(extract(epoch FROM max(x.at)) * 1000)::bigint FROM ledger_events x
        WHERE x.org = e.org AND x.reservation_id = e.reservation_id
          AND x.created_ms = e.created_ms
          AND x.type IN ('commit', 'release', 'expire')) AS ended_ms,
       coalesce((SELECT sum(f.amount_nanos) FROM ledger_events f
                 WHERE f.org = e.org AND f.reservation_id = e.reservation_id
                   AND f.created_ms = e.created_ms AND f.type = 'refund'), 0) AS refunded,
       coalesce((SELECT string_agg(f.refund_id || '=' || f.amount_nanos, ';')
                 FROM ledger_events f
                 WHERE f.org = e.org AND f.reservation_id = e.reservation_id
                   AND f.created_ms = e.created_ms AND f.type = 'refund'), '') AS refunds,
       coalesce((SELECT jsonb_object_agg(x.budget_uid::text, x.period_start_ms)
                 FROM ledger_effects x WHERE x.org = e.org AND x.event_id = e.event_id),
                '{}') AS periods
FROM wanted w
JOIN ledger_events e ON e.org = $1 AND e.reservation_id = w.rid AND e.created_ms = w.created
LEFT JOIN ledger_events r ON r.org = e.org AND r.reservation_id = e.reservation_id
  AND r.created_ms = e.created_ms AND r.type = 'reserve'
WHERE e.type IN ('commit', 'release', 'expire')
ORDER BY e.reservation_id, e.created_ms,
         CASE e.type WHEN 'commit' THEN 0 WHEN 'release' THEN 1 ELSE 2 END
"""

# Orgs a rebuild of the whole data set covers: those with budgets, and those whose
# reservations may still live in Redis (events within the retention window and longest TTL).
ACTIVE_ORGS = """
SELECT org FROM budgets
UNION
SELECT DISTINCT org FROM ledger_events WHERE at > now() - $1 * interval '1 millisecond'
ORDER BY org
"""

# The newest stream id of the org's events in the ledger ('' when none).
LEDGER_LAST_ID = """
SELECT stream_id FROM ledger_events WHERE org = $1
ORDER BY split_part(stream_id, '-', 1)::bigint DESC, split_part(stream_id, '-', 2)::bigint DESC
LIMIT 1
"""

STATES = {"commit": "committed", "release": "released", "expire": "expired"}


@dataclass(frozen=True)
class Rebuilt:
    """What one org's rebuild restored."""

    org: str
    budgets: int
    holds: int
    ended: int


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _hold_args(h: asyncpg.Record) -> list[str | int]:
    amount, expires = h["amount_nanos"], h["expires_at_ms"]
    return [
        h["reservation_id"],
        amount,
        ",".join(str(u) for u in h["budget_uids"]),
        expires,
        h["created_ms"],
        h["price_ref"] or "0",
        h["fingerprint"],
        _json_text(h["subject"]),
        _reserve_answer(h),
    ]


def _reserve_answer(r: asyncpg.Record) -> str:
    """The first answer to a Reserve, for retries: the hold and the expiry the Reserve gave
    (balances are not kept)."""
    return json.dumps([str(r["amount_nanos"]), str(r["reserved_expires_at_ms"]), []])


def _ended_args(e: asyncpg.Record) -> list[str | int]:
    state = STATES[e["type"]]
    amount, hold = e["amount_nanos"], e["hold"]
    periods = e["periods"] if isinstance(e["periods"], dict) else json.loads(e["periods"])
    commit_periods = ",".join(str(periods.get(str(u), "-")) for u in e["uids"])
    released = e["released_nanos"] if state == "committed" else amount
    answer = json.dumps([str(amount), str(hold), str(released), 1 if e["late"] else 0, []])
    return [
        e["reservation_id"],
        e["created_ms"],
        state,
        amount,
        hold,
        1 if e["late"] else 0,
        e["fingerprint"],
        commit_periods,
        int(e["refunded"]),
        answer,
        e["refunds"],
        # what a record Redis no longer has is made of
        ",".join(str(u) for u in e["uids"]),
        e["expires_at_ms"],
        e["price_ref"] or "0",
        e["reserve_fp"],
        _json_text(e["subject"]),
        json.dumps([str(hold), str(e["reserved_expires_at_ms"]), []]),
        e["ended_ms"],
    ]


class _Restore:
    """Sends an org's restored state to the restore script in calls of at most `chunk` budgets
    and records each, so no call is large enough to hold Redis up (nor to pass its limit on
    arguments); the org stays fenced until `finish` writes the epoch."""

    def __init__(
        self, scripts: Scripts, org: str, head: list[str | int], ledger_last_id: str, chunk: int
    ) -> None:
        self.scripts = scripts
        self.org = org
        self.head = head  # epoch, retention, now
        self.ledger_last_id = ledger_last_id
        self.chunk = max(1, chunk)
        self.first = True
        self.parts: dict[str, tuple[list[str], list[str | int]]] = {
            kind: ([], []) for kind in ("budget", "hold", "ended")
        }
        self.count = 0
        self.totals = [0, 0, 0]

    async def add(self, kind: str, key: str, args: list[str | int]) -> None:
        part_keys, part_args = self.parts[kind]
        part_keys.append(key)
        part_args += args
        self.count += 1
        if self.count >= self.chunk:
            await self._send(finish=False)

    async def finish(self) -> list[int]:
        await self._send(finish=True)
        return self.totals

    async def _send(self, *, finish: bool) -> None:
        (b_keys, b_args), (h_keys, h_args), (e_keys, e_args) = self.parts.values()
        args: list[str | int] = [*self.head, "1" if self.first else "0", "1" if finish else "0"]
        args += [len(b_keys), len(h_keys), len(e_keys), self.ledger_last_id, GROUP]
        org = self.org
        reply = await self.scripts.run(
            "restore",
            [keys.config(org), keys.expiries(org), keys.ledger(org), keys.config_changes(org),
             *b_keys, *h_keys, *e_keys],
            [*args, *b_args, *h_args, *e_args],
        )  # fmt: skip
        self.totals = [t + int(v) for t, v in zip(self.totals, reply[1:4], strict=True)]
        self.first = False
        self.count = 0
        self.parts = {kind: ([], []) for kind in self.parts}


async def rebuild_org(
    scripts: Scripts,
    pool: asyncpg.Pool,
    org: str,
    clock: Clock,
    *,
    epoch: str,
    retention_ms: int,
    wait_seconds: float = 30.0,
    chunk: int = CHUNK,
) -> Rebuilt:
    """Set `org`'s config, counters and reservations in Redis to what PostgreSQL says.

    `pool` may be one connection (the Rebuilder's, which holds the org's lock on it)."""
    client = scripts.client
    # Fenced before PostgreSQL is read: a config change that lands later is refused by the
    # scripts (FENCED) instead of being overwritten by the budgets read here; see the docstring.
    await redis_call(client.hset(keys.config(org), FENCE, "1"))
    await wait_written(client, org, await last_event_id(client, org), wait_seconds)
    budgets = await BudgetRepository(pool).in_org(org)
    now = clock.now_ms()
    pstarts = [bounds_ms(b.period, b.timezone, now)[0] for b in budgets]
    uids = [b.uid for b in budgets]
    rows = await pool.fetch(LEDGER_SUMS, org, uids, pstarts, 2**62, 0)
    sums = {r["budget_uid"]: (int(r["spent"]), int(r["reserved"])) for r in rows}
    holds = await pool.fetch(OPEN_HOLDS, org)
    held = await _held_in_redis(scripts, org, {h["reservation_id"] for h in holds})
    ledger_last_id = await pool.fetchval(LEDGER_LAST_ID, org) or ""

    restore = _Restore(scripts, org, [epoch, retention_ms, now], ledger_last_id, chunk)
    for b, pstart in zip(budgets, pstarts, strict=True):
        spent, reserved = sums.get(b.uid, (0, 0))
        await restore.add(
            "budget", keys.budget(org, b.uid), [*budget_args(b), spent, reserved, pstart]
        )
    for h in holds:
        await restore.add("hold", keys.reservation(org, h["reservation_id"]), _hold_args(h))
    # Ended reservations can be many (every call within the retention window): read in slices.
    async with _connection(pool) as conn, conn.transaction():
        ended = conn.cursor(
            ENDED, org, [rid for rid, _ in held], [c for _, c in held], now - retention_ms,
            prefetch=restore.chunk,
        )  # fmt: skip
        async for e in ended:
            await restore.add("ended", keys.reservation(org, e["reservation_id"]), _ended_args(e))
    totals = await restore.finish()
    await redis_call(client.sadd(keys.ORGS, org))
    result = Rebuilt(org, *totals)
    log.info("ledger.rebuilt", org=org, budgets=result.budgets, holds=result.holds,
             ended=result.ended)  # fmt: skip
    return result


@contextlib.asynccontextmanager
async def _connection(source: Any) -> AsyncIterator[Any]:
    """`source` itself when it is one connection (a rebuild holding its lock on it: taking a
    second one from the pool could wait on rebuilds that hold the rest), else one of the pool's."""
    if hasattr(source, "acquire"):
        async with source.acquire() as conn:
            yield conn
    else:
        yield source


async def _held_in_redis(scripts: Scripts, org: str, open_ids: set[str]) -> list[tuple[str, int]]:
    """Reservations (id, created) Redis marks held (in its expiry index) that the ledger has no
    open hold for: the ledger says how they ended, however long ago."""
    client = scripts.client
    held: list[str] = await redis_call(client.zrange(keys.expiries(org), 0, -1))
    candidates = sorted(rid for rid in held if rid not in open_ids)
    if not candidates:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for rid in candidates:
            pipe.hget(keys.reservation(org, rid), "created")
        created = await redis_call(pipe.execute())
    return [(rid, int(c)) for rid, c in zip(candidates, created, strict=True) if c]


async def active_orgs(pool: asyncpg.Pool | asyncpg.Connection, window_ms: int) -> list[str]:
    """The orgs a rebuild of the whole data set covers."""
    return [r["org"] for r in await pool.fetch(ACTIVE_ORGS, window_ms)]


class Rebuilder:
    """Rebuilds orgs whose data Redis lost, in the background, one replica at a time per org."""

    def __init__(
        self,
        scripts: Scripts,
        pool: asyncpg.Pool,
        clock: Clock,
        *,
        epoch: str,
        retention_ms: int,
        window_ms: int,
        enabled: bool,
        retry_seconds: float = 1.0,
        concurrency: int | None = None,
    ) -> None:
        self.scripts = scripts
        self.pool = pool
        self.clock = clock
        self.epoch = epoch
        self.retention_ms = retention_ms
        self.window_ms = window_ms
        self.enabled = enabled
        self.retry_seconds = retry_seconds
        self.rebuilt = 0  # orgs this process rebuilt (metrics, tests)
        # Rebuilds at a time, each on one connection: the rest of the pool stays free for the
        # ledger writer (a rebuild waits for it) and for calls, however many orgs are lost.
        self.concurrency = concurrency or max(1, pool.get_max_size() // 2)
        self._slots = asyncio.Semaphore(self.concurrency)
        # Another database's epoch in the sentinel, as last seen (None: missing or this one's)
        self.foreign: str | None = None
        self._foreign_logged: str | None = None
        # Told the org after it was rebuilt (the server syncs the config changes refused meanwhile)
        self.after_rebuild: Callable[[str], Awaitable[object]] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def request(self, org: str) -> bool:
        """Rebuild `org` soon (ALL: every org, then the sentinel); False when turned off."""
        if not self.enabled:
            return False
        task = self._tasks.get(org)
        if task is None or task.done():
            self._tasks[org] = asyncio.create_task(self._run(org), name=f"rebuild:{org}")
        return True

    def lost(self, org: str) -> DataLost:
        """The error for a call that found `org`'s data lost; starts its rebuild if allowed."""
        if self.foreign is not None:
            return ForeignDataSet(org)
        return DataLost(org, rebuilding=self.request(org))

    def saw_sentinel(self, found: str | None) -> None:
        """Note what the `ba:epoch` sentinel holds; another database's epoch is logged once."""
        if found is None or found == self.epoch:
            self.foreign = None
            return
        self.foreign = found
        if self._foreign_logged != found:
            self._foreign_logged = found
            log.error(
                "rebuild.foreign_data_set",
                found=found,
                expected=self.epoch,
                fix="point REDIS_URL and DATABASE_URL at the same deployment, or empty that"
                " Redis database if it is meant to be rebuilt from this ledger; nothing is"
                " rebuilt over it and calls fail closed meanwhile",
            )

    async def _check_sentinel(self, org: str) -> None:
        """ForeignDataSet when Redis holds another database's data set: never rebuilt over."""
        found = await redis_call(self.scripts.client.get(keys.EPOCH))
        self.saw_sentinel(found)
        if self.foreign is not None:
            raise ForeignDataSet(org)

    async def stop(self, wait_seconds: float = 5.0) -> None:
        """Cancel the rebuilds under way; an org left fenced is rebuilt by the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=wait_seconds)
            if stuck:
                log.warning("rebuild.stop_timeout", tasks=len(stuck))
        self._tasks.clear()

    async def _run(self, org: str) -> None:
        delay = self.retry_seconds
        while True:
            try:
                if org == ALL:
                    await self.rebuild_all()
                else:
                    await self.rebuild(org)
                return
            except ForeignDataSet:  # logged once (saw_sentinel); an operator's fix is needed
                return
            except ServiceError as exc:  # PostgreSQL or Redis away: try again later
                log.warning("rebuild.failed", org=org, error=exc.message, retry_in_seconds=delay)
            except Exception:
                log.exception("rebuild.crashed", org=org)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def rebuild(self, org: str, *, force: bool = False) -> Rebuilt | None:
        """Rebuild one org under its lock, unless it is intact (another replica just rebuilt
        it: None then); `force` rebuilds an intact org too (a Redis that missed writes).
        ForeignDataSet, and nothing written, while Redis holds another database's data set."""
        work = functools.partial(self._rebuild_if_lost, org=org, force=force)
        result = await self._locked(org, work)
        if result is not None:
            await self._after(org)
        return result

    async def _after(self, org: str) -> None:
        if self.after_rebuild is None:
            return
        try:
            await self.after_rebuild(org)
        except ServiceError as exc:  # the periodic config sync mends it
            log.warning("rebuild.sync_after_failed", org=org, error=exc.message)

    async def _rebuild_if_lost(
        self, conn: asyncpg.Connection, *, org: str, force: bool
    ) -> Rebuilt | None:
        await self._check_sentinel(org)
        found, fenced = await redis_call(self.scripts.client.hmget(keys.config(org), "_e", FENCE))
        # a fence left by a rebuild that did not finish (its process died) is a loss too
        if found == self.epoch and fenced is None and not force:
            return None
        result = await rebuild_org(
            self.scripts, conn, org, self.clock, epoch=self.epoch,
            retention_ms=self.retention_ms,
        )  # fmt: skip
        self.rebuilt += 1
        return result

    async def rebuild_all(self) -> list[Rebuilt]:
        """Rebuild every org that lost its data, then put the sentinel back. Runs on one
        connection: the lock of the whole data set, then each org's lock and its queries."""

        async def run(conn: asyncpg.Connection) -> list[Rebuilt]:
            found = await redis_call(self.scripts.client.get(keys.EPOCH))
            if found == self.epoch:
                return []
            await self._check_sentinel(ALL)
            log.error("rebuild.data_set_lost", action="rebuilding every org from the ledger")
            done = []
            for org in await active_orgs(conn, self.window_ms):
                result = await self._lock_on(
                    conn, org, functools.partial(self._rebuild_if_lost, org=org, force=False)
                )
                if result is not None:
                    done.append(result)
                    await self._after(org)
            # only where it is still missing: never stamped over another data set's
            await redis_call(self.scripts.client.set(keys.EPOCH, self.epoch, nx=True))
            log.info("rebuild.data_set_restored", orgs=len(done))
            return done

        return await self._locked(ALL, run)

    async def _locked(self, name: str, work: Work[T]) -> T:
        """Run `work` on one pooled connection holding the PostgreSQL advisory lock of `name`
        (one replica at a time), at most `concurrency` at a time in this process. The slot and
        the connection are taken before the lock, so no lock holder ever waits for either."""
        async with self._slots, self.pool.acquire() as conn:
            return await self._lock_on(conn, name, work)

    async def _lock_on(self, conn: asyncpg.Connection, name: str, work: Work[T]) -> T:
        """Run `work(conn)` holding the advisory lock of `name` on `conn`.

        The lock is tried, not waited for in PostgreSQL, so a stop cancels the wait at once
        instead of a query that only ends when another replica lets go.
        """
        key = f"ba-rebuild:{name}"
        # another process holds it: nothing here could signal its release, so poll
        while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):  # noqa: ASYNC110
            await asyncio.sleep(LOCK_RETRY_SECONDS)
        try:
            return await work(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)


class EpochWatch:
    """Notices a Redis that lost its whole data set (the sentinel gone) and fails closed; one
    that holds another database's (a foreign sentinel) fails closed too, and is never rebuilt."""

    def __init__(self, scripts: Scripts, epoch: str, rebuilder: Rebuilder) -> None:
        self.client = scripts.client
        self.epoch = epoch
        self.rebuilder = rebuilder
        self.lost = False
        self.on_change: Callable[[bool], None] = lambda lost: None

    async def check_once(self) -> None:
        """One look at the sentinel (run every second)."""
        found = await redis_call(self.client.get(keys.EPOCH))
        self.rebuilder.saw_sentinel(found)
        lost = found != self.epoch
        if lost != self.lost:
            self.lost = lost
            self.on_change(lost)
            if lost:
                log.error("epoch.data_set_lost", found=found, expected=self.epoch)
            else:
                log.info("epoch.data_set_restored")
        if lost and found is None:
            self.rebuilder.request(ALL)


async def prepare_data_set(
    scripts: Scripts,
    pool: asyncpg.Pool,
    sync: ConfigSync,
    repo: BudgetRepository,
    rebuilder: Rebuilder,
    epoch: epochs.Epoch,
) -> bool:
    """Before serving: make Redis carry this database's data set, or refuse to start. Answers
    False when Redis lost its data and AUTO_REBUILD is off: the service starts failing closed
    until an operator rebuilds it."""
    found = await redis_call(scripts.client.get(keys.EPOCH))
    if found == epoch.value:
        await sync.reconcile(repo)
        return True
    if found is not None:
        raise ConfigError(
            f"REDIS_URL holds another budget database's data (epoch {found}; this DATABASE_URL's"
            f" is {epoch.value}): point REDIS_URL and DATABASE_URL at the same deployment, or"
            " empty that Redis database if it is meant to be rebuilt from this ledger"
        )
    if not epoch.adopted:
        # The first start since the epoch exists: the data Redis holds is this database's.
        await sync.reconcile(repo, adopt=True)
        await redis_call(scripts.client.set(keys.EPOCH, epoch.value))
        await epochs.mark_adopted(pool)
        log.info("epoch.adopted", epoch=epoch.value)
        return True
    if not rebuilder.enabled:
        log.error(
            "epoch.data_set_lost_at_start",
            fix="budgetctl reconcile --rebuild (AUTO_REBUILD is off): every call fails closed",
        )
        return False
    restored = await rebuilder.rebuild_all()
    log.warning("epoch.rebuilt_at_start", orgs=len(restored))
    return True
