"""The ledger writer: drains every org's outbox stream (`ba:{org}:ledger`) into PostgreSQL.

The hot path's scripts append each money event to the org's stream in the same atomic step as
the change (scripts/lib.lua `outbox`). Writers read through one consumer group, so several
replicas share the work without reading an entry twice:

1. this consumer's own pending entries first (a batch whose insert failed is retried as is),
   then entries of a dead writer idle longer than `claim_idle_ms` (XAUTOCLAIM), then new ones;
2. one PostgreSQL transaction inserts the batch with `ON CONFLICT (org, event_id) DO NOTHING`
   and derives effects, usage records and daily rollups from the rows actually inserted, so a
   batch delivered twice (a writer died after its commit, before its XACK) adds nothing;
3. XACK only after the commit; then XTRIM MINID drops what every writer has acknowledged.

PostgreSQL down: the hot path does not notice; entries stay in the stream (pending or new),
the writer backs off, and the backlog drains when PostgreSQL is back.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from budget_service.hotpath import keys

log = structlog.get_logger(__name__)

GROUP = "ledger"
SEPARATOR = "\x1f"  # between an event's names and values (scripts/lib.lua `outbox`)


@dataclass(frozen=True)
class Effect:
    budget_uid: int
    period_start_ms: int
    spent_delta: int
    reserved_delta: int


@dataclass(frozen=True)
class LedgerEvent:
    """One outbox entry, parsed just enough to insert it (JSON fields stay text for jsonb)."""

    org: str
    stream_id: str
    event_id: str
    type: str
    reservation_id: str
    at_ms: int
    amount_nanos: int
    released_nanos: int
    late: bool
    subject_json: str
    usage_json: str | None
    latency_ms: int | None
    price_ref: str
    refund_id: str
    expires_at_ms: int
    fingerprint: str
    effects: tuple[Effect, ...]

    @classmethod
    def parse(cls, org: str, stream_id: str, entry: dict[str, str]) -> LedgerEvent:
        parts = entry["e"].split(SEPARATOR)
        f = dict(zip(parts[::2], parts[1::2], strict=True))
        kind, rid, created = f["t"], f["rid"], f.get("c", "0")
        refund_id = f.get("rfid", "")
        event_id = f"{kind}:{rid}@{created}" + (f"/{refund_id}" if refund_id else "")
        effects = []
        for part in filter(None, f.get("fx", "").split(",")):
            uid, pstart, spent, reserved = part.split(":")
            effects.append(Effect(int(uid), int(pstart), int(spent), int(reserved)))
        return cls(
            org=org,
            stream_id=stream_id,
            event_id=event_id,
            type=kind,
            reservation_id=rid,
            at_ms=int(f["ts"]),
            amount_nanos=int(f.get("amt", "0")),
            released_nanos=int(f.get("rel", "0")),
            late=f.get("late") == "1",
            subject_json=f.get("subj") or "{}",
            usage_json=f.get("usage") or None,
            latency_ms=int(f["lat"]) if f.get("lat") else None,
            price_ref=f.get("pv", ""),
            refund_id=refund_id,
            expires_at_ms=int(f.get("exp", "0")),
            fingerprint=f.get("fp", ""),
            effects=tuple(effects),
        )


# One statement per batch: the events go in idempotently, and effects, usage records and daily
# rollups are derived from the rows actually inserted (`ins`), so a batch delivered twice adds
# nothing. Rollup rows are written in key order, so two writers lock them in the same order.
INSERT_BATCH = """
WITH ins AS (
    INSERT INTO ledger_events (org, event_id, type, reservation_id, at, amount_nanos,
        released_nanos, late, subject, usage, price_ref, refund_id, expires_at_ms, fingerprint,
        budget_uids, latency_ms, stream_id)
    SELECT $1, e.event_id, e.type, e.reservation_id,
        timestamptz 'epoch' + e.at_ms * interval '1 millisecond', e.amount, e.released, e.late,
        e.subject::jsonb, e.usage::jsonb, e.price_ref, e.refund_id, e.expires_at_ms,
        e.fingerprint, string_to_array(e.uids, ',')::bigint[], e.latency_ms, e.stream_id
    FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
        $8::boolean[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[],
        $14::text[], $15::text[], $16::int[], $17::text[])
        AS e(event_id, type, reservation_id, at_ms, amount, released, late, subject, usage,
             price_ref, refund_id, expires_at_ms, fingerprint, uids, latency_ms, stream_id)
    ON CONFLICT (org, event_id) DO NOTHING
    RETURNING *
),
fx AS (
    INSERT INTO ledger_effects (org, event_id, budget_uid, period_start_ms, spent_delta,
        reserved_delta)
    SELECT $1, f.event_id, f.uid, f.pstart, f.spent, f.reserved
    FROM unnest($18::text[], $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[])
        AS f(event_id, uid, pstart, spent, reserved)
    JOIN ins USING (event_id)
),
u AS (
    SELECT org, event_id, reservation_id, at,
        CASE WHEN type = 'refund' THEN 'refund' WHEN late THEN 'late' ELSE 'ok' END AS outcome,
        coalesce(subject->>'team', '') AS team, coalesce(subject->>'project', '') AS project,
        coalesce(subject->>'user', '') AS "user", coalesce(subject->>'provider', '') AS provider,
        coalesce(subject->>'model', '') AS model,
        coalesce((SELECT jsonb_object_agg(substr(s.key, 5), s.value) FROM jsonb_each(subject) s
                  WHERE s.key LIKE 'tag:%'), '{}'::jsonb) AS tags,
        CASE WHEN type = 'refund' THEN -amount_nanos ELSE amount_nanos END AS cost_nanos,
        CASE WHEN type = 'refund' THEN 0 ELSE 1 END AS requests,
        coalesce((usage->>'input_tokens')::bigint, 0) AS input_tokens,
        coalesce((usage->>'output_tokens')::bigint, 0) AS output_tokens,
        coalesce((usage->>'cached_input_tokens')::bigint, 0) AS cached_input_tokens,
        -- cache writes of both lifetimes (5-minute and 1-hour)
        coalesce((usage->>'cache_write_tokens')::bigint, 0)
            + coalesce((usage->>'cache_write_1h_tokens')::bigint, 0) AS cache_write_tokens,
        coalesce((usage->>'reasoning_tokens')::bigint, 0) AS reasoning_tokens,
        latency_ms, price_ref
    FROM ins
    WHERE type IN ('commit', 'refund')
),
usage_rows AS (
    INSERT INTO usage_records (org, event_id, reservation_id, at, outcome, team, project, "user",
        provider, model, tags, cost_nanos, requests, input_tokens, output_tokens,
        cached_input_tokens, cache_write_tokens, reasoning_tokens, latency_ms, price_ref)
    SELECT * FROM u
),
rollup AS (
    INSERT INTO spend_daily AS d (org, day, team, project, "user", provider, model, tags,
        cost_nanos, requests, input_tokens, output_tokens)
    SELECT org, (at AT TIME ZONE 'UTC')::date AS day, team, project, "user", provider, model,
        tags, sum(cost_nanos), sum(requests), sum(input_tokens), sum(output_tokens)
    FROM u
    GROUP BY org, day, team, project, "user", provider, model, tags
    ORDER BY day, team, project, "user", provider, model, tags
    ON CONFLICT (org, day, team, project, "user", provider, model, tags) DO UPDATE SET
        cost_nanos = d.cost_nanos + excluded.cost_nanos,
        requests = d.requests + excluded.requests,
        input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens
)
SELECT count(*) FROM ins
"""


async def insert_events(conn: asyncpg.Connection, org: str, events: list[LedgerEvent]) -> int:
    """Insert `events` (one org's) idempotently; answers how many were new."""
    columns: list[list[Any]] = [[] for _ in range(16)]
    effects: list[list[Any]] = [[] for _ in range(5)]
    for e in events:
        row: tuple[Any, ...] = (
            e.event_id, e.type, e.reservation_id, e.at_ms, e.amount_nanos, e.released_nanos,
            e.late, e.subject_json, e.usage_json, e.price_ref, e.refund_id, e.expires_at_ms,
            e.fingerprint,
            ",".join(str(x.budget_uid) for x in e.effects) if e.type == "reserve" else "",
            e.latency_ms, e.stream_id,
        )  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        for x in e.effects:
            values = (e.event_id, x.budget_uid, x.period_start_ms, x.spent_delta, x.reserved_delta)
            for column, value in zip(effects, values, strict=True):
                column.append(value)
    inserted: int = await conn.fetchval(INSERT_BATCH, org, *columns, *effects)
    return inserted


def _next_id(stream_id: str) -> str:
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


@dataclass
class WriterStats:
    written: int = 0  # events inserted (new rows)
    duplicates: int = 0  # events delivered again and skipped by event id
    batches: int = 0
    failures: int = 0
    malformed: int = 0  # events set aside (unreadable): a bug, see ba:{org}:ledger:malformed
    backlog_events: int = 0  # entries in the streams not yet trimmed (unacknowledged or newer)
    oldest_event_age_seconds: float = 0.0


class LedgerWriter:
    """One consumer of the `ledger` group, draining every org's stream."""

    def __init__(
        self,
        redis: aioredis.Redis,
        pool: asyncpg.Pool,
        *,
        consumer: str | None = None,
        batch_size: int = 1000,
        claim_idle_ms: int = 30_000,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.max_backoff = max_backoff_seconds
        self.stats = WriterStats()
        self._groups: set[str] = set()
        # streams whose entries delivered to this consumer are all acknowledged
        self._own_pending_checked: set[str] = set()
        self._next_claim: dict[str, float] = {}
        self._retry_at = 0.0
        self._backoff = 0.0

    async def drain_once(self, *, max_batches: int = 50) -> int:
        """Write what the streams hold (up to `max_batches` batches); answers events written.

        A failure (PostgreSQL or Redis unreachable) is logged and backed off, never raised:
        the entries stay in the stream for the next run.
        """
        if time.monotonic() < self._retry_at:
            return 0
        written = 0
        orgs: list[str] = []
        try:
            members: Any = await self.redis.smembers(keys.ORGS)
            orgs = sorted(members)
            for org in orgs:
                for _ in range(max_batches):
                    n, more = await self._drain_org_batch(org)
                    written += n
                    if not more:
                        break
            await self._measure(orgs)
        except (OSError, TimeoutError, RedisError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:  # fmt: skip
            self.stats.failures += 1
            try:  # the backlog still grows while PostgreSQL is down: keep measuring it
                await self._measure(orgs)
            except (OSError, TimeoutError, RedisError):
                pass
            self._backoff = min(self.max_backoff, max(0.1, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            log.warning(
                "ledger.write_failed",
                error=f"{type(exc).__name__}: {exc}",
                retry_in_seconds=self._backoff,
                backlog_events=self.stats.backlog_events,
            )
            return written
        if self._backoff:
            log.info("ledger.write_resumed", written=written)
        self._backoff = 0.0
        return written

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def _read(self, stream: str) -> list[tuple[str, dict[str, str] | None]]:
        """This writer's own unacknowledged entries (after a start or a failed batch), else a
        dead writer's idle ones (XAUTOCLAIM, checked every half idle time), else new ones."""
        if stream not in self._own_pending_checked:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: "0"}, count=self.batch_size
            )
            if reply and reply[0][1]:
                return list(reply[0][1])
            self._own_pending_checked.add(stream)
        now = time.monotonic()
        if now >= self._next_claim.get(stream, 0.0):
            self._next_claim[stream] = now + self.claim_idle_ms / 2000
            claimed: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch_size
            )
            if claimed[1]:
                return list(claimed[1])
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=self.batch_size
        )
        return list(reply[0][1]) if reply and reply[0][1] else []

    async def _drain_org_batch(self, org: str) -> tuple[int, bool]:
        stream = keys.ledger(org)
        await self._ensure_group(stream)
        try:
            entries = await self._read(stream)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.discard(stream)  # the stream was lost (Redis flushed): recreate
            return 0, True
        if not entries:
            return 0, False
        events = []
        for entry_id, fields in entries:
            if not fields:  # trimmed while pending (only after data loss): nothing to write
                continue
            try:
                events.append(LedgerEvent.parse(org, entry_id, fields))
            except (KeyError, ValueError) as exc:
                await self._set_aside(org, entry_id, fields, exc)
        self._own_pending_checked.discard(stream)  # until this batch is acknowledged
        new = 0
        if events:
            async with self.pool.acquire(timeout=5) as conn:
                new = await insert_events(conn, org, events)
        await self.redis.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))
        self._own_pending_checked.add(stream)
        await self._trim(stream)
        self.stats.written += new
        self.stats.duplicates += len(events) - new
        self.stats.batches += 1
        if new < len(events):
            log.info("ledger.duplicates_skipped", org=org, count=len(events) - new)
        return new, len(entries) >= self.batch_size

    async def _set_aside(
        self, org: str, entry_id: str, fields: dict[str, str], exc: Exception
    ) -> None:
        """Keep an event the writer cannot read in `ba:{org}:ledger:malformed`, never lose it."""
        self.stats.malformed += 1
        kept: dict[Any, Any] = {**fields, "stream_id": entry_id, "error": repr(exc)}
        await self.redis.xadd(keys.ledger_malformed(org), kept)
        log.error("ledger.malformed_event", org=org, stream_id=entry_id, error=repr(exc))

    async def _trim(self, stream: str) -> None:
        """Drop entries every writer has acknowledged (one round trip to decide, one to trim)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xpending(stream, GROUP)
            pipe.xinfo_groups(stream)
            pending, groups = await pipe.execute()
        if pending["pending"]:
            floor = pending["min"]
        else:
            last = next(g["last-delivered-id"] for g in groups if g["name"] == GROUP)
            floor = _next_id(last)
        await self.redis.xtrim(stream, minid=floor, approximate=False)

    async def _measure(self, orgs: list[str]) -> None:
        """Backlog and lag over every org's stream, in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for org in orgs:
                pipe.xlen(keys.ledger(org))
                pipe.xrange(keys.ledger(org), count=1)
            replies = await pipe.execute()
        lengths, firsts = replies[0::2], replies[1::2]
        oldest = [int(first[0][0].partition("-")[0]) for first in firsts if first]
        self.stats.backlog_events = sum(lengths)
        now_ms = time.time() * 1000
        self.stats.oldest_event_age_seconds = (
            max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0
        )

    async def drain_until_empty(self, timeout_seconds: float = 30.0) -> int:
        """Drain until the streams hold nothing unacknowledged (for tools and tests)."""
        deadline = time.monotonic() + timeout_seconds
        total = 0
        while time.monotonic() < deadline:
            self._retry_at = 0.0
            total += await self.drain_once()
            if self.stats.backlog_events == 0 and not self._backoff:
                return total
            await asyncio.sleep(0.05)
        raise TimeoutError(f"ledger backlog still {self.stats.backlog_events} events")
