"""The ledger writer: drains every org's outbox stream (`ba:{org}:ledger`) into PostgreSQL.

The hot path's scripts append each money event to the org's stream in the same atomic step as
the change (scripts/lib.lua `outbox`). Writers read through one consumer group, so several
replicas share the work without reading an entry twice:

1. this consumer's own pending entries first (a batch whose insert failed is retried as is),
   then entries of a dead writer idle longer than `claim_idle_ms` (XAUTOCLAIM), then new ones;
2. one statement inserts the batch with `ON CONFLICT (org, event_id) DO NOTHING` and derives
   effects, usage records and daily rollups from the rows actually inserted, so a batch
   delivered twice (a writer died after its commit, before its XACK) adds nothing;
3. XACK only after the commit; then one script (scripts/ledger_trim.lua) reads what every
   writer has stored and trims the rest, atomically.

One bad event never stops the ledger. An entry the writer cannot read, and an event PostgreSQL
refuses for its data (SQLSTATE classes 22, 23, 54: a value it cannot store), go to
`ledger_dead_letters` with the error (dead_letters.py) and are acknowledged; a rejected batch is
split in halves until each refused event stands alone, and the others are written. Orgs drain
independently: any other failure confined to one org backs off that org only.

PostgreSQL or Redis down: the hot path does not notice; nothing is dead-lettered, entries stay in
the stream (pending or new), the writer backs off, and the backlog drains when the store is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from budget_service.hotpath import keys
from budget_service.hotpath.store import script_source
from budget_service.ledger import dead_letters
from budget_service.ledger.dead_letters import MALFORMED, REJECTED, SEPARATOR, DeadLetter
from servicekit.validation import ID_RE, ID_RULE

log = structlog.get_logger(__name__)

GROUP = keys.LEDGER_GROUP
EVENT_TYPES = frozenset({"reserve", "commit", "release", "expire", "refund", "extend"})
DIGITS = re.compile(r"[0-9]{1,19}")  # a time in ms, as the scripts write it
# PostgreSQL refused the data itself (data exception, integrity constraint, program limit such
# as an index row too large): the same event fails the same way every time.
REJECTED_SQLSTATE_CLASSES = ("22", "23", "54")
# A store out of reach (connection, resources, operator intervention): retried, never blamed
# on an event or an org.
UNREACHABLE_SQLSTATE_CLASSES = ("08", "53", "57")
ORG_MAX_BACKOFF_SECONDS = 60.0
DEAD_LETTER_COUNT_SECONDS = 10.0  # how often the dead-letter gauge is refreshed


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
    created_ms: int
    # the id writers gave this event before migration 004 ("" for kinds that came after it)
    legacy_id: str
    entry: dict[str, str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, org: str, stream_id: str, entry: dict[str, str]) -> LedgerEvent:
        """Read an outbox entry; ValueError or KeyError when it is not a well-formed event.

        Its id is `<type>|<reservation_id>|<created ms>`, plus `|<refund_id>` for a refund and
        `|<expires_at ms>` for an extend. Every id is checked against the id alphabet, which
        has no `|`: the id splits back one way only, and no key it is part of can outgrow
        its index (ids are at most 128 bytes).
        """
        parts = entry["e"].split(SEPARATOR)
        f = dict(zip(parts[::2], parts[1::2], strict=True))
        kind, rid, created = f["t"], f["rid"], f.get("c", "0")
        refund_id, expires = f.get("rfid", ""), f.get("exp", "0")
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind[:40]!r}")
        _check_id("org", org)
        _check_id("rid", rid)
        for name, value in (("c", created), ("exp", expires)):
            if not DIGITS.fullmatch(value):
                raise ValueError(f"{name} {value[:40]!r} is not a time in ms")
        tail: tuple[str, ...] = ()
        if kind == "refund":
            _check_id("rfid", refund_id)
            tail = (refund_id,)
        elif kind == "extend":
            tail = (expires,)
        event_id = "|".join((kind, rid, created, *tail))
        legacy_id = (
            ""
            if kind == "extend"
            else f"{kind}:{rid}@{created}" + (f"/{refund_id}" if refund_id else "")
        )
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
            expires_at_ms=int(expires),
            fingerprint=f.get("fp", ""),
            effects=tuple(effects),
            created_ms=int(created),
            legacy_id=legacy_id,
            entry=entry,
        )


def _check_id(name: str, value: str) -> None:
    if not ID_RE.fullmatch(value):
        raise ValueError(f"{name} {value[:40]!r} is not an id ({ID_RULE})")


# One statement per batch: the events go in idempotently, and effects, usage records and daily
# rollups are derived from the rows actually inserted (`ins`), so a batch delivered twice adds
# nothing. An event delivered again may also have been stored under the id writers gave it
# before migration 004 (by a writer of that version that died before its XACK): its old id
# comes as `legacy_id`, and if a row has it, the event is skipped too. Rollup rows are written
# in key order, so two writers lock them in the same order.
INSERT_BATCH = """
WITH stored_before AS (
    -- probes of the primary key, one per old id given: never a scan of the org's history
    SELECT x.event_id FROM ledger_events x WHERE x.org = $1 AND x.event_id = ANY($19::text[])
),
ins AS (
    INSERT INTO ledger_events (org, event_id, type, reservation_id, at, amount_nanos,
        released_nanos, late, subject, usage, price_ref, refund_id, expires_at_ms, fingerprint,
        budget_uids, latency_ms, stream_id, created_ms)
    SELECT $1, e.event_id, e.type, e.reservation_id,
        timestamptz 'epoch' + e.at_ms * interval '1 millisecond', e.amount, e.released, e.late,
        e.subject::jsonb, e.usage::jsonb, e.price_ref, e.refund_id, e.expires_at_ms,
        e.fingerprint, string_to_array(e.uids, ',')::bigint[], e.latency_ms, e.stream_id,
        e.created_ms
    FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
        $8::boolean[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[],
        $14::text[], $15::text[], $16::int[], $17::text[], $18::bigint[], $19::text[])
        AS e(event_id, type, reservation_id, at_ms, amount, released, late, subject, usage,
             price_ref, refund_id, expires_at_ms, fingerprint, uids, latency_ms, stream_id,
             created_ms, legacy_id)
    WHERE e.legacy_id IS NULL OR e.legacy_id NOT IN (SELECT event_id FROM stored_before)
    ON CONFLICT (org, event_id) DO NOTHING
    RETURNING *
),
fx AS (
    INSERT INTO ledger_effects (org, event_id, budget_uid, period_start_ms, spent_delta,
        reserved_delta)
    SELECT $1, f.event_id, f.uid, f.pstart, f.spent, f.reserved
    FROM unnest($20::text[], $21::bigint[], $22::bigint[], $23::bigint[], $24::bigint[])
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
-- Keyed by a digest of the dimensions (spend_daily.dims_hash, generated from them), never by
-- the values themselves: no subject, however long, makes a key its index cannot hold.
rollup AS (
    INSERT INTO spend_daily AS d (org, day, team, project, "user", provider, model, tags,
        cost_nanos, requests, input_tokens, output_tokens)
    SELECT org, (at AT TIME ZONE 'UTC')::date AS day, team, project, "user", provider, model,
        tags, sum(cost_nanos), sum(requests), sum(input_tokens), sum(output_tokens)
    FROM u
    GROUP BY org, day, team, project, "user", provider, model, tags
    ORDER BY day, ledger_dims_hash(team, project, "user", provider, model, tags)
    ON CONFLICT (org, day, dims_hash) DO UPDATE SET
        cost_nanos = d.cost_nanos + excluded.cost_nanos,
        requests = d.requests + excluded.requests,
        input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens
)
SELECT count(*) FROM ins
"""


async def insert_events(
    conn: asyncpg.Connection,
    org: str,
    events: list[LedgerEvent],
    *,
    redelivered: bool = False,
) -> int:
    """Insert `events` (one org's) idempotently; answers how many were new.

    `redelivered`: the events were delivered before (a writer's own pending entries, or a dead
    writer's, claimed), so each is also skipped when stored under its old id (INSERT_BATCH).
    A first delivery cannot have been stored by anyone, so it is spared those probes.
    """
    columns: list[list[Any]] = [[] for _ in range(18)]
    effects: list[list[Any]] = [[] for _ in range(5)]
    for e in events:
        row: tuple[Any, ...] = (
            e.event_id, e.type, e.reservation_id, e.at_ms, e.amount_nanos, e.released_nanos,
            e.late, e.subject_json, e.usage_json, e.price_ref, e.refund_id, e.expires_at_ms,
            e.fingerprint,
            ",".join(str(x.budget_uid) for x in e.effects) if e.type == "reserve" else "",
            e.latency_ms, e.stream_id, e.created_ms,
            e.legacy_id if redelivered and e.legacy_id else None,
        )  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        for x in e.effects:
            values = (e.event_id, x.budget_uid, x.period_start_ms, x.spent_delta, x.reserved_delta)
            for column, value in zip(effects, values, strict=True):
                column.append(value)
    inserted: int = await conn.fetchval(INSERT_BATCH, org, *columns, *effects)
    return inserted


def rejected_for_data(exc: BaseException) -> bool:
    """PostgreSQL (or the driver, encoding a value) refused the data: retrying cannot help."""
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state[:2] in REJECTED_SQLSTATE_CLASSES


def unreachable(exc: BaseException) -> bool:
    """A store cannot be reached or has no room: every org would fail the same way."""
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, asyncpg.PostgresError):
        return isinstance(exc, asyncpg.PostgresConnectionError) or (
            state[:2] in UNREACHABLE_SQLSTATE_CLASSES
        )
    return False


@dataclass
class WriterStats:
    written: int = 0  # events inserted (new rows)
    duplicates: int = 0  # events delivered again and skipped by event id
    batches: int = 0
    failures: int = 0  # drain attempts that failed (a store unreachable, or one org's trouble)
    malformed: int = 0  # entries set aside because they could not be read (a bug)
    dead_lettered: int = 0  # entries set aside in ledger_dead_letters (malformed or rejected)
    dead_letters: int = 0  # rows in ledger_dead_letters, every writer's (refreshed every 10 s)
    failing_orgs: int = 0  # orgs whose last drain attempt failed (backed off, others go on)
    backlog_events: int = 0  # entries in the streams not yet trimmed (unacknowledged or newer)
    oldest_event_age_seconds: float = 0.0


@dataclass
class OrgFailure:
    """An org whose last drain failed: retried after `backoff` seconds, the others go on."""

    error: str
    backoff: float
    retry_at: float


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
        self.failing: dict[str, OrgFailure] = {}
        self._trim_script = redis.register_script(script_source("ledger_trim"))
        self._groups: set[str] = set()
        # streams whose entries delivered to this consumer are all acknowledged
        self._own_pending_checked: set[str] = set()
        self._next_claim: dict[str, float] = {}
        self._retry_at = 0.0
        self._backoff = 0.0
        self._next_dead_letter_count = 0.0

    async def drain_once(self, *, max_batches: int = 50) -> int:
        """Write what the streams hold (up to `max_batches` batches an org); answers events
        written.

        A store out of reach (PostgreSQL or Redis) is logged and backed off, never raised: the
        entries stay in the stream for the next run. Any other failure is one org's: that org
        is backed off and the others are drained (`failing`).
        """
        if time.monotonic() < self._retry_at:
            return 0
        written = 0
        orgs: list[str] = []
        try:
            members: Any = await self.redis.smembers(keys.ORGS)
            orgs = sorted(members)
            for org in orgs:
                written += await self._drain_org(org, max_batches)
            await self._measure(orgs)
            await self._count_dead_letters()
        except Exception as exc:
            if not unreachable(exc):
                raise
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

    async def _drain_org(self, org: str, max_batches: int) -> int:
        """Drain one org; its own failures back it off, a store out of reach is raised."""
        failed = self.failing.get(org)
        now = time.monotonic()
        if failed is not None and now < failed.retry_at:
            return 0
        written = 0
        try:
            # An org name is part of every key the ledger stores: bound it like any id.
            _check_id("org", org)
            for _ in range(max_batches):
                n, more = await self._drain_org_batch(org)
                written += n
                if not more:
                    break
        except Exception as exc:
            if unreachable(exc):
                raise
            self.stats.failures += 1
            backoff = min(ORG_MAX_BACKOFF_SECONDS, max(0.1, failed.backoff * 2 if failed else 0))
            error = dead_letters.describe(exc)
            self.failing[org] = OrgFailure(error, backoff, now + backoff)
            self.stats.failing_orgs = len(self.failing)
            log.error("ledger.org_failed", org=org, error=error, retry_in_seconds=backoff)
            return written
        if failed is not None:
            del self.failing[org]
            self.stats.failing_orgs = len(self.failing)
            log.info("ledger.org_resumed", org=org, written=written)
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

    async def _read(self, stream: str) -> tuple[list[tuple[str, dict[str, str] | None]], bool]:
        """This writer's own unacknowledged entries (after a start or a failed batch), else a
        dead writer's idle ones (XAUTOCLAIM, checked every half idle time), else new ones;
        and whether they were delivered before (the first two)."""
        if stream not in self._own_pending_checked:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: "0"}, count=self.batch_size
            )
            if reply and reply[0][1]:
                return list(reply[0][1]), True
            self._own_pending_checked.add(stream)
        now = time.monotonic()
        if now >= self._next_claim.get(stream, 0.0):
            self._next_claim[stream] = now + self.claim_idle_ms / 2000
            claimed: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch_size
            )
            if claimed[1]:
                return list(claimed[1]), True
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=self.batch_size
        )
        return (list(reply[0][1]) if reply and reply[0][1] else []), False

    async def _drain_org_batch(self, org: str) -> tuple[int, bool]:
        stream = keys.ledger(org)
        await self._ensure_group(stream)
        try:
            entries, redelivered = await self._read(stream)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.discard(stream)  # the stream was lost (Redis flushed): recreate
            return 0, True
        if not entries:
            return 0, False
        events: list[LedgerEvent] = []
        dead: list[DeadLetter] = []
        for entry_id, fields in entries:
            if not fields:  # trimmed while pending (only after data loss): nothing to write
                continue
            try:
                events.append(LedgerEvent.parse(org, entry_id, fields))
            except (KeyError, ValueError) as exc:
                dead.append(DeadLetter(org, entry_id, "", MALFORMED, fields, repr(exc)))
                log.error("ledger.malformed_event", org=org, stream_id=entry_id, error=repr(exc))
        self._own_pending_checked.discard(stream)  # until this batch is acknowledged
        new = 0
        malformed = len(dead)
        if events or dead:
            async with self.pool.acquire(timeout=5) as conn:
                if events:
                    new, rejected = await self._insert_isolating(conn, org, events, redelivered)
                    dead += rejected
                if dead:  # before the XACK: a writer that dies here leaves them pending
                    await dead_letters.store(conn, dead)
        await self.redis.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))
        self._own_pending_checked.add(stream)
        await self._trim(stream)
        skipped = len(events) - new - (len(dead) - malformed)
        self.stats.written += new
        self.stats.duplicates += skipped
        self.stats.batches += 1
        self.stats.malformed += malformed
        if dead:
            self.stats.dead_lettered += len(dead)
            self._next_dead_letter_count = 0.0  # show them in the gauge at once
        if skipped:
            log.info("ledger.duplicates_skipped", org=org, count=skipped)
        return new, len(entries) >= self.batch_size

    async def _insert_isolating(
        self, conn: asyncpg.Connection, org: str, events: list[LedgerEvent], redelivered: bool
    ) -> tuple[int, list[DeadLetter]]:
        """Insert `events`; those PostgreSQL refuses for their data are answered as dead
        letters, found by splitting the batch in halves (about 2 log2(n) statements per bad
        event), and all the others are inserted. Anything else is raised."""
        try:
            return await insert_events(conn, org, events, redelivered=redelivered), []
        except asyncpg.PostgresError as exc:
            if not rejected_for_data(exc):
                raise
            if len(events) == 1:
                [event] = events
                error = dead_letters.describe(exc)
                log.error("ledger.event_rejected", org=org, stream_id=event.stream_id,
                          event_id=event.event_id, error=error)  # fmt: skip
                letter = DeadLetter(
                    org, event.stream_id, event.event_id, REJECTED, event.entry, error
                )
                return 0, [letter]
        half = len(events) // 2
        new_a, dead_a = await self._insert_isolating(conn, org, events[:half], redelivered)
        new_b, dead_b = await self._insert_isolating(conn, org, events[half:], redelivered)
        return new_a + new_b, dead_a + dead_b

    async def _trim(self, stream: str) -> int:
        """Drop the entries every writer has stored, in one atomic step; answers how many."""
        reply = await self._trim_script(keys=[stream])
        return int(json.loads(reply))

    async def _count_dead_letters(self) -> None:
        now = time.monotonic()
        if now < self._next_dead_letter_count:
            return
        self._next_dead_letter_count = now + DEAD_LETTER_COUNT_SECONDS
        self.stats.dead_letters = await dead_letters.count(self.pool)

    async def _measure(self, orgs: list[str]) -> None:
        """Backlog and lag over every org's stream, in one pipelined round trip (a key that is
        not a stream counts as empty: that org shows in `failing`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for org in orgs:
                pipe.xlen(keys.ledger(org))
                pipe.xrange(keys.ledger(org), count=1)
            replies = await pipe.execute(raise_on_error=False)
        lengths, firsts = replies[0::2], replies[1::2]
        oldest = [
            int(first[0][0].partition("-")[0])
            for first in firsts
            if first and not isinstance(first, Exception)
        ]
        self.stats.backlog_events = sum(n for n in lengths if isinstance(n, int))
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
