"""Dead letters: outbox entries the ledger writer could not read or PostgreSQL refused to store.

The writer moves such an entry to `ledger_dead_letters` (migrations/004_ledger_hardening.sql)
with the error, then acknowledges it, so one bad event never holds up the events behind it.
A dead letter is money the counters saw and the ledger did not: reconciliation reports the
difference until it is stored. `budgetctl ledger dead-letters` lists them; once the cause is
fixed (a bug, a constraint), `budgetctl ledger requeue` appends each entry, unchanged, to its
org's outbox again, and the writer stores it like any event (skipped by event id if it was
stored meanwhile, so a requeue is safe to repeat).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from budget_service.hotpath import keys

SEPARATOR = "\x1f"  # between an event's names and values (scripts/lib.lua `outbox`)
MALFORMED = "malformed"  # the writer could not read the entry
REJECTED = "rejected"  # PostgreSQL refused to store the event


@dataclass(frozen=True)
class DeadLetter:
    """An entry set aside by the writer, and why."""

    org: str
    stream_id: str
    event_id: str  # "" when the entry could not be read
    reason: str  # MALFORMED or REJECTED
    entry: dict[str, str]  # the stream entry's fields, as the script wrote them
    error: str


def describe(exc: BaseException) -> str:
    """An error as a person reads it: its kind, SQLSTATE if any, and message (no NUL bytes)."""
    state = getattr(exc, "sqlstate", None)
    text = f"{type(exc).__name__}" + (f" ({state})" if state else "") + f": {exc}"
    detail = getattr(exc, "detail", None)
    if detail:
        text += f" DETAIL: {detail}"
    return text.replace("\x00", "\\x00")


STORE = """
INSERT INTO ledger_dead_letters (org, stream_id, event_id, reason, entry, error)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
ON CONFLICT (org, stream_id, entry_hash) DO UPDATE SET
    error = excluded.error,
    last_failed_at = now(),
    failures = ledger_dead_letters.failures + 1
"""


async def store(conn: asyncpg.Connection, letters: list[DeadLetter]) -> None:
    """Record `letters`; one delivered again (its writer died before acknowledging) counts twice
    in `failures`, never as a second row."""
    columns: list[list[str]] = [[] for _ in range(6)]
    for d in letters:
        # json.dumps escapes control characters, so the text can hold any entry (even NUL).
        row = (d.org, d.stream_id, d.event_id, d.reason, json.dumps(d.entry), d.error)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(STORE, *columns)


async def count(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """How many dead letters wait, over every org."""
    found: int = await conn.fetchval("SELECT count(*) FROM ledger_dead_letters")
    return found


@dataclass(frozen=True)
class StoredDeadLetter:
    """A row of `ledger_dead_letters`."""

    id: int
    org: str
    stream_id: str
    event_id: str
    reason: str
    entry: dict[str, str]
    error: str
    first_failed_at: dt.datetime
    last_failed_at: dt.datetime
    failures: int

    def fields(self) -> dict[str, str]:
        """The event's names and values, decoded from the entry (empty if it cannot be)."""
        parts = self.entry.get("e", "").split(SEPARATOR)
        if len(parts) % 2:
            return {}
        return dict(zip(parts[::2], parts[1::2], strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org": self.org,
            "stream_id": self.stream_id,
            "event_id": self.event_id,
            "reason": self.reason,
            "error": self.error,
            "first_failed_at": self.first_failed_at.isoformat(),
            "last_failed_at": self.last_failed_at.isoformat(),
            "failures": self.failures,
            "fields": self.fields(),
            "entry": self.entry,
        }


LIST = """
SELECT id, org, stream_id, event_id, reason, entry, error, first_failed_at, last_failed_at,
       failures
FROM ledger_dead_letters
WHERE ($1::text IS NULL OR org = $1)
ORDER BY org, id
LIMIT $2
"""


def _stored(row: asyncpg.Record) -> StoredDeadLetter:
    return StoredDeadLetter(
        id=row["id"],
        org=row["org"],
        stream_id=row["stream_id"],
        event_id=row["event_id"],
        reason=row["reason"],
        entry=json.loads(row["entry"]),
        error=row["error"],
        first_failed_at=row["first_failed_at"],
        last_failed_at=row["last_failed_at"],
        failures=row["failures"],
    )


async def list_dead_letters(
    pool: asyncpg.Pool, *, org: str | None = None, limit: int = 100
) -> list[StoredDeadLetter]:
    """Dead letters of one org or all, oldest first per org, at most `limit`."""
    return [_stored(r) for r in await pool.fetch(LIST, org, limit)]


class _NotFound(Exception):
    def __init__(self, ids: list[int]) -> None:
        super().__init__(ids)
        self.ids = ids


async def requeue(
    pool: asyncpg.Pool, redis: aioredis.Redis, org: str, ids: list[int] | None
) -> tuple[list[tuple[int, str]], list[int]]:
    """Append dead letters of `org` (those in `ids`, or all when None) to its outbox again and
    remove them from the table; answers ((dead letter id, new stream id) ...) and the ids that
    are not dead letters of `org` (then nothing is requeued).

    The rows are removed in the transaction that appends the entries: if an append fails,
    nothing is removed (an entry appended twice is stored once, by its event id).
    """
    stream = keys.ledger(org)
    try:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM ledger_dead_letters WHERE org = $1 AND ($2::bigint[] IS NULL"
                " OR id = ANY($2)) RETURNING id, entry",
                org,
                ids,
            )
            found = {int(r["id"]) for r in rows}
            missing = sorted({i for i in ids or [] if i not in found})
            if missing:
                raise _NotFound(missing)  # rolls the deletion back
            done = []
            for row in sorted(rows, key=lambda r: int(r["id"])):
                entry: dict[Any, Any] = json.loads(row["entry"])
                done.append((int(row["id"]), str(await redis.xadd(stream, entry))))
            if done:
                # the writer drains the orgs of this set; an org with an outbox is always in it
                await redis.sadd(keys.ORGS, org)
    except _NotFound as exc:
        return [], exc.ids
    return done, []
