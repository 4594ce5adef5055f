"""The ledger never stops for one bad event, never trims what a writer has read but not stored,
and never confuses two events (issue 10, points 5 and 6).

- A commit whose subject values are the longest the API accepts, in 4-byte characters, is
  written and reported: daily rollups are keyed by a hash of their dimensions.
- An event PostgreSQL rejects goes to `ledger_dead_letters` with its error; the events behind
  it, of its org and of every other org, are written. An org whose stream cannot be read at all
  does not hold up the others.
- The trim of a stream and the reading of what every writer has stored are one atomic step.
- Event ids cannot collide, whatever `@` and `/` the reservation and refund ids contain.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from budget_service import server
from budget_service.hotpath import keys
from budget_service.ledger import reconcile, recovery
from budget_service.ledger.writer import GROUP, LedgerEvent, LedgerWriter, insert_events
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.validation import VALUE_MAX_BYTES
from tests.conftest import Stack
from tests.helpers import reserve, rid, upsert, usd
from tests.test_ledger import ledger_rows, scrape

ROOT = Path(__file__).resolve().parents[1]

# CJK Unified Ideographs Extension B: every code point assigned and printable, four bytes each
# in UTF-8.
CJK_EXT_B = (0x20000, 0x2A6DF)


def long_value(seed: int) -> str:
    """The longest subject value the API accepts, in 4-byte characters, and random, so that
    PostgreSQL cannot compress it below the btree row limit."""
    rng = random.Random(seed)
    return "".join(chr(rng.randint(*CJK_EXT_B)) for _ in range(VALUE_MAX_BYTES // 4))


def utc_day(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).replace(hour=0, minute=0, second=0)


async def test_a_commit_with_long_multibyte_subject_values_is_written_and_reported(
    app, budgets, admin, clock, org
):
    await upsert(admin, org, "cap", usd("10"))
    team, project, user, env, region = (long_value(seed) for seed in range(5))
    assert len(team.encode()) == VALUE_MAX_BYTES == 256
    first_day = utc_day(clock.now_ms())
    held = await reserve(budgets, org, usd("0.30"), team=team, project=project, user=user,
                         tags={"env": env, "region": region})  # fmt: skip
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                          actual_nanos=usd("0.25")))  # fmt: skip
    last_day = utc_day(clock.now_ms())
    # Waits until the writer has stored both events, then compares them with the counters.
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org, wait_seconds=15) == []
    request = pb.GetSpendReportRequest(
        org=org, group_by=["team", "user", "tag:env"], granularity=pb.GRANULARITY_DAY
    )
    request.start_time.FromDatetime(first_day)
    request.end_time.FromDatetime(last_day + dt.timedelta(days=1))
    report = await admin.GetSpendReport(request)
    assert [(dict(r.group), r.cost_nanos, r.requests) for r in report.rows] == [
        ({"team": team, "user": user, "tag:env": env}, usd("0.25"), 1)
    ]
    row = await app.pool.fetchrow(
        'SELECT team, project, "user", tags FROM usage_records WHERE org = $1', org
    )
    assert (row["team"], row["project"], row["user"]) == (team, project, user)
    assert json.loads(row["tags"]) == {"env": env, "region": region}


def outbox_entry(**fields: str) -> dict[str, str]:
    """An outbox entry as the scripts write it (scripts/lib.lua `outbox`)."""
    return {"e": "\x1f".join(part for pair in fields.items() for part in pair)}


async def dead_letters(app: server.App, org: str) -> list[Any]:
    return list(
        await app.pool.fetch(
            "SELECT * FROM ledger_dead_letters WHERE org = $1 ORDER BY stream_id", org
        )
    )


async def test_poison_events_are_dead_lettered_and_every_orgs_later_events_are_written(
    app, budgets, admin, clock, org
):
    other = f"{org}-z"  # drained after `org`: the writer takes orgs in name order
    for name in (org, other):
        await upsert(admin, name, "cap", usd("10"))
    before = await asyncio.to_thread(scrape, app)
    await reserve(budgets, org, usd("0.10"))
    now = str(clock.now_ms())
    # Two events PostgreSQL refuses to store: a NUL in a subject value (jsonb has none), and a
    # token count beyond bigint. Each parses; only PostgreSQL says no.
    nul = outbox_entry(t="commit", rid="poison-nul", c=now, ts=now, amt="5",
                       subj='{"team": "a\\u0000b"}')  # fmt: skip
    huge = outbox_entry(t="commit", rid="poison-huge", c=now, ts=now, amt="5", subj="{}",
                        usage='{"input_tokens": 1e30}')  # fmt: skip
    nul_id = await app.redis.xadd(keys.ledger(org), nul)  # type: ignore[arg-type]
    await reserve(budgets, org, usd("0.20"))
    huge_id = await app.redis.xadd(keys.ledger(org), huge)  # type: ignore[arg-type]
    await reserve(budgets, org, usd("0.30"))
    await reserve(budgets, other, usd("0.40"))
    # The service's own writer stores every good event of both orgs: the counters equal them.
    for name in (org, other):
        assert await reconcile.compare(app.engine.scripts, app.pool, org=name,
                                       wait_seconds=15) == []  # fmt: skip
    assert await ledger_rows(app, org) == {"reserve": 3}
    assert await ledger_rows(app, other) == {"reserve": 1}
    rows = await dead_letters(app, org)
    assert [(r["stream_id"], r["reason"], r["event_id"]) for r in rows] == [
        (nul_id, "rejected", f"commit|poison-nul|{now}"),
        (huge_id, "rejected", f"commit|poison-huge|{now}"),
    ]
    assert [json.loads(r["entry"]) for r in rows] == [nul, huge]
    assert "22P05" in rows[0]["error"] and "22" in rows[1]["error"][:60]
    assert await dead_letters(app, other) == []
    assert await app.redis.xlen(keys.ledger(org)) == 0  # acknowledged and trimmed
    after = await asyncio.to_thread(scrape, app)
    assert after["budget_ledger_dead_lettered_events_total"] - before.get(
        "budget_ledger_dead_lettered_events_total", 0) == 2  # fmt: skip
    assert after["budget_ledger_dead_letters"] >= 2


async def test_an_org_whose_stream_cannot_be_read_does_not_stop_the_others(
    paused_writer, budgets, admin, org
):
    app = paused_writer
    broken = f"a-broken-{uuid.uuid4().hex[:8]}"  # drained before `org` (name order)
    await app.redis.sadd(keys.ORGS, broken)  # type: ignore[misc]
    await app.redis.set(keys.ledger(broken), "not a stream")  # every stream command: WRONGTYPE
    try:
        await upsert(admin, org, "cap", usd("1"))
        await reserve(budgets, org, usd("0.10"))
        writer = LedgerWriter(app.redis, app.pool, consumer="isolating")
        await writer.drain_until_empty(timeout_seconds=15)
        assert await ledger_rows(app, org) == {"reserve": 1}
        assert writer.stats.failing_orgs == 1 and writer.stats.failures >= 1
        assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    finally:
        await app.redis.srem(keys.ORGS, broken)  # type: ignore[misc]
        await app.redis.delete(keys.ledger(broken))


@pytest.fixture
def ctl(stack: Stack) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """Run budgetctl against the run's stores: ctl("ledger", ...) -> (code, out, err)."""

    async def run(*args: str) -> tuple[int, str, str]:
        env = {**os.environ, "DATABASE_URL": stack.postgres.url, "REDIS_URL": stack.redis.url}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "budgetctl", *args], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    return run


async def test_a_dead_letter_is_shown_and_once_its_cause_is_fixed_requeued_and_stored(
    paused_writer, budgets, admin, ctl, org
):
    app = paused_writer
    await upsert(admin, org, "cap", usd("10"))
    refused = rid()
    # A cause outside the event (a faulty migration, say): a constraint refuses one reservation.
    constraint = f"test_refuses_{uuid.uuid4().hex[:8]}"
    await app.pool.execute(
        f"ALTER TABLE ledger_events ADD CONSTRAINT {constraint}"
        f" CHECK (reservation_id <> '{refused}') NOT VALID"
    )
    writer = LedgerWriter(app.redis, app.pool, consumer="requeuer")
    try:
        await reserve(budgets, org, usd("0.25"), reservation_id=refused)
        await reserve(budgets, org, usd("0.10"))
        created = await app.redis.hget(keys.reservation(org, refused), "created")  # type: ignore[misc]
        await writer.drain_until_empty()
        assert await ledger_rows(app, org) == {"reserve": 1}
        # The counters hold what the ledger lacks, and reconciliation says so.
        [gap] = await reconcile.compare(app.engine.scripts, app.pool, org=org)
        assert (gap.counter, gap.redis_nanos - gap.ledger_nanos) == ("reserved", usd("0.25"))
        code, out, err = await ctl("ledger", "dead-letters", "--org", org, "--format", "json")
        assert code == 1, err
        [shown] = json.loads(out)
        assert (shown["reason"], shown["event_id"], shown["fields"]["amt"]) == (
            "rejected", f"reserve|{refused}|{created}", str(usd("0.25")))  # fmt: skip
        assert constraint in shown["error"] and "23514" in shown["error"]
        code, out, _ = await ctl("ledger", "dead-letters", "--org", org)
        assert code == 1 and refused in out and "budgetctl ledger requeue" in out
    finally:
        await app.pool.execute(f"ALTER TABLE ledger_events DROP CONSTRAINT {constraint}")
    code, _, err = await ctl("ledger", "requeue", "--org", org, "--id", "-1")
    assert code == 3 and "-1" in err
    code, out, err = await ctl("ledger", "requeue", "--org", org, "--all")
    assert code == 0 and out.count("requeued dead letter") == 1, err
    await writer.drain_until_empty()
    assert await ledger_rows(app, org) == {"reserve": 2}
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    code, out, _ = await ctl("ledger", "dead-letters", "--org", org)
    assert (code, out.strip()) == (0, "(none)")


class SplitPipeline:
    """A pipeline that sends its commands one by one, calling `between` after each reply."""

    def __init__(self, client: aioredis.Redis, between: Callable[[], Awaitable[None]]) -> None:
        self.client = client
        self.between = between
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., SplitPipeline]:
        def record(*args: Any, **kwargs: Any) -> SplitPipeline:
            self.calls.append((name, args, kwargs))
            return self

        return record

    async def __aenter__(self) -> SplitPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        replies = []
        for name, args, kwargs in self.calls:
            replies.append(await getattr(self.client, name)(*args, **kwargs))
            await self.between()
        self.calls = []
        return replies


class Interleaving:
    """A writer's Redis client that lets another client's command run between two commands of
    one of its pipelines, as Redis may: a pipeline without MULTI is not atomic. `arm(step)`
    runs `step` once, after the first reply of the next pipeline (or at `fire()`)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.step: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def pipeline(self, transaction: bool = True) -> SplitPipeline:
        return SplitPipeline(self.client, self.fire)

    def arm(self, step: Callable[[], Awaitable[None]]) -> None:
        self.step = step

    async def fire(self) -> None:
        step, self.step = self.step, None
        if step is not None:
            await step()


async def test_a_trim_never_drops_entries_another_writer_has_read_but_not_stored(
    paused_writer, budgets, admin, org
):
    app = paused_writer
    stream = keys.ledger(org)
    await upsert(admin, org, "cap", usd("10"))
    client = Interleaving(app.redis)
    trimmer = LedgerWriter(client, app.pool, consumer="trimmer")  # type: ignore[arg-type]
    await reserve(budgets, org, usd("0.10"))
    await trimmer.drain_until_empty()  # written, acknowledged, trimmed: nothing pending
    held = await reserve(budgets, org, usd("0.20"))
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                          actual_nanos=usd("0.15")))  # fmt: skip
    taken: list[Any] = []

    async def reader_reads() -> None:  # as a writer reads new entries
        reply = await app.redis.xreadgroup(GROUP, "reader", {stream: ">"}, count=100)
        taken.extend(reply[0][1] if reply else [])

    # The reader takes the two new entries at the first moment Redis lets it during the
    # trimmer's trim: between two of its commands, or after the trim if it is one step.
    client.arm(reader_reads)
    await trimmer._trim(stream)
    await client.fire()
    assert len(taken) == 2
    # The reader dies before storing them; an heir takes its idle entries over.
    heir = LedgerWriter(app.redis, app.pool, consumer="heir", claim_idle_ms=0)
    await heir.drain_until_empty()
    assert await ledger_rows(app, org) == {"reserve": 2, "commit": 1}
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []


async def test_refunds_whose_old_style_event_ids_were_equal_are_both_recorded(
    app, budgets, admin, org
):
    await upsert(admin, org, "cap", usd("10"))

    async def reserve_and_commit(reservation_id: str) -> str:
        await reserve(budgets, org, usd("0.50"), reservation_id=reservation_id)
        await budgets.Commit(pb.CommitRequest(org=org, reservation_id=reservation_id,
                                              actual_nanos=usd("0.40")))  # fmt: skip
        created: str = await app.redis.hget(keys.reservation(org, reservation_id), "created")  # type: ignore[misc]
        return created

    first = f"x-{uuid.uuid4().hex[:8]}"
    c1 = await reserve_and_commit(first)
    second = f"{first}@{c1}/y"
    c2 = await reserve_and_commit(second)
    # The old ids "refund:<rid>@<created>/<refund_id>" of these two refunds were the same text,
    # "refund:<first>@<c1>/y@<c2>/z", so the second was taken for a re-delivery of the first.
    refunds = [(first, f"y@{c2}/z", usd("0.10")), (second, "z", usd("0.15"))]
    for reservation_id, refund_id, amount in refunds:
        request = pb.RefundRequest(
            org=org, reservation_id=reservation_id, refund_id=refund_id, amount_nanos=amount
        )
        await budgets.Refund(request)
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    rows = await app.pool.fetch(
        "SELECT reservation_id, refund_id, amount_nanos FROM ledger_events"
        " WHERE org = $1 AND type = 'refund' ORDER BY amount_nanos",
        org,
    )
    assert [tuple(r) for r in rows] == refunds
    net = await app.pool.fetchval("SELECT sum(cost_nanos) FROM usage_records WHERE org = $1", org)
    assert net == 2 * usd("0.40") - usd("0.10") - usd("0.15")


async def test_an_event_stored_under_its_old_id_and_delivered_again_is_not_stored_twice(
    paused_writer, budgets, admin, org
):
    app = paused_writer
    stream = keys.ledger(org)
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.10"))
    await LedgerWriter(app.redis, app.pool)._ensure_group(stream)
    # A writer of the previous version read the event, stored it under its old id, and died
    # before its XACK; the upgrade came in between.
    [(entry_id, _)] = (await app.redis.xreadgroup(GROUP, "previous", {stream: ">"}))[0][1]
    created = await app.redis.hget(keys.reservation(org, held.reservation_id), "created")  # type: ignore[misc]
    old_id = f"reserve:{held.reservation_id}@{created}"
    await app.pool.execute(
        "INSERT INTO ledger_events (org, event_id, type, reservation_id, at, amount_nanos,"
        " stream_id, created_ms) VALUES ($1, $2, 'reserve', $3, now(), $4, $5, $6)",
        org, old_id, held.reservation_id, usd("0.10"), entry_id, int(created),
    )  # fmt: skip
    heir = LedgerWriter(app.redis, app.pool, consumer="heir", claim_idle_ms=0)
    await heir.drain_until_empty()
    rows = await app.pool.fetch("SELECT event_id FROM ledger_events WHERE org = $1", org)
    assert [r["event_id"] for r in rows] == [old_id]
    assert await app.redis.xlen(stream) == 0


@pytest.fixture
async def scratch_db(app: server.App, stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """An empty database of its own on the run's PostgreSQL (dropped afterwards)."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    await app.pool.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(stack.postgres.url.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield conn
    finally:
        await conn.close()
        await app.pool.execute(f'DROP DATABASE "{name}"')


async def apply_migrations(conn: asyncpg.Connection, *numbers: str) -> None:
    folder = resources.files("budget_service") / "migrations"
    for f in sorted(folder.iterdir(), key=lambda f: f.name):
        if f.name[:3] in numbers:
            await conn.execute(f.read_text())


async def test_the_migration_keeps_old_ids_and_joins_a_reservations_events_old_and_new(
    scratch_db,
):
    conn = scratch_db
    await apply_migrations(conn, "001", "002", "003")
    # Rows as the previous writer stored them: "<type>:<rid>@<created>[/<refund id>]".
    old = [
        ("reserve", "a@1/b", 100, "", 10),
        ("commit", "a@1/b", 100, "", 8),
        ("refund", "a@1/b", 100, "r@9/x", 1),
        ("reserve", "q/1@2", 300, "", 20),  # still held
        ("reserve", "m", 500, "", 30),  # released after the upgrade
        ("reserve", "d", 700, "", 40),
        ("commit", "d", 700, "", 35),  # delivered again after the upgrade
    ]
    for n, (kind, reservation_id, created, refund_id, amount) in enumerate(old, start=1):
        event_id = f"{kind}:{reservation_id}@{created}" + (f"/{refund_id}" if refund_id else "")
        await conn.execute(
            "INSERT INTO ledger_events (org, event_id, type, reservation_id, at, amount_nanos,"
            " refund_id, stream_id) VALUES ('o', $1, $2, $3, now(), $4, $5, $6)",
            event_id, kind, reservation_id, amount, refund_id, f"{n}-0",
        )  # fmt: skip
    await apply_migrations(conn, "004")
    rows = await conn.fetch("SELECT event_id, created_ms FROM ledger_events ORDER BY stream_id")
    assert [r["created_ms"] for r in rows] == [100, 100, 100, 300, 500, 700, 700]
    assert rows[2]["event_id"] == "refund:a@1/b@100/r@9/x"  # history is not rewritten

    def event(stream_id: str, **fields: str) -> LedgerEvent:
        return LedgerEvent.parse("o", stream_id, outbox_entry(**fields))

    release = event("8-0", t="release", rid="m", c="500", ts="600", amt="30")
    extend = event("9-0", t="extend", rid="q/1@2", c="300", ts="650", exp="9000")
    again = event("7-0", t="commit", rid="d", c="700", ts="800", amt="35")
    assert (release.event_id, extend.event_id) == ("release|m|500", "extend|q/1@2|300|9000")
    # The commit of "d", delivered again, is stored under its old id: it is not stored again.
    assert await insert_events(conn, "o", [release, extend, again], redelivered=True) == 2
    assert await conn.fetchval("SELECT count(*) FROM ledger_events WHERE type = 'commit'") == 2
    holds = await conn.fetch(recovery.OPEN_HOLDS, "o")
    assert [(h["reservation_id"], h["expires_at_ms"]) for h in holds] == [("q/1@2", 9000)]
