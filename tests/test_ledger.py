"""The ledger: every money event reaches PostgreSQL exactly once and sums to the Redis counters."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from budget_service import server
from budget_service.hotpath import keys
from budget_service.ledger import reconcile
from budget_service.ledger.writer import LedgerEvent, LedgerWriter, insert_events
from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import reserve, rid, upsert, usd


async def ledger_rows(app: server.App, org: str) -> dict[str, int]:
    rows = await app.pool.fetch(
        "SELECT type, count(*) AS n FROM ledger_events WHERE org = $1 GROUP BY type", org
    )
    return {r["type"]: r["n"] for r in rows}


async def traffic(budgets, admin, clock, org: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """One of every money event; answers the committed spend net of refunds."""
    await upsert(admin, org, "cap", usd("100"))
    await upsert(admin, org, "search", usd("10"), selector={"team": "search"})
    a = await reserve(budgets, org, usd("0.50"), team="search", tags={"env": "prod"})
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=a.reservation_id,
                                          actual_nanos=usd("0.31"), latency_ms=850))  # fmt: skip
    b = await reserve(budgets, org, usd("0.20"))
    await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=b.reservation_id))
    c = await reserve(budgets, org, usd("1.00"), team="search")
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=c.reservation_id,
                                          actual_nanos=usd("0.90")))  # fmt: skip
    await budgets.Refund(pb.RefundRequest(org=org, reservation_id=c.reservation_id,
                                          refund_id=rid(), amount_nanos=usd("0.25")))  # fmt: skip
    held = await reserve(budgets, org, usd("0.05"))  # stays open
    return {"net": usd("0.31") + usd("0.90") - usd("0.25"), "held": held.reserved_nanos}


async def test_every_money_event_is_in_the_ledger_once_and_counters_equal_it(
    app, budgets, admin, clock, org
):
    expected = await traffic(budgets, admin, clock, org)
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    assert await ledger_rows(app, org) == {"reserve": 4, "commit": 2, "release": 1, "refund": 1}
    usage = await app.pool.fetchrow(
        "SELECT sum(cost_nanos) AS cost, sum(requests) AS requests, max(latency_ms) AS latency"
        " FROM usage_records WHERE org = $1",
        org,
    )
    assert (usage["cost"], usage["requests"], usage["latency"]) == (expected["net"], 2, 850)
    rollup = await app.pool.fetchrow(
        "SELECT sum(cost_nanos) AS cost FROM spend_daily WHERE org = $1", org
    )
    assert rollup["cost"] == expected["net"]
    tagged = await app.pool.fetchval(
        "SELECT sum(cost_nanos) FROM usage_records WHERE org = $1 AND tags->>'env' = 'prod'", org
    )
    assert tagged == usd("0.31")
    # The acknowledged entries are trimmed from the stream.
    assert await app.redis.xlen(keys.ledger(org)) == 0


async def test_expired_hold_is_recorded_and_reconciles(app, budgets, admin, clock, org):
    await upsert(admin, org, "cap", usd("1"))
    await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid(), subject=pb.Subject(org=org), amount_nanos=usd("0.40"),
        ttl={"seconds": 1}))  # fmt: skip
    clock.set_ms(clock.now_ms() + 5_000)
    try:
        for _ in range(100):  # the sweeper runs every 0.2 s
            if (await ledger_rows(app, org)).get("expire"):
                break
            await asyncio.sleep(0.05)
        assert (await ledger_rows(app, org)).get("expire") == 1
        assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    finally:
        clock.offset_ms = 0


async def test_writer_killed_after_insert_before_ack_leaves_no_duplicate(
    paused_writer, budgets, admin, clock, org
):
    app = paused_writer
    await traffic(budgets, admin, clock, org)
    stream = keys.ledger(org)
    # A writer reads and inserts a batch, then dies before its XACK.
    doomed = LedgerWriter(app.redis, app.pool, consumer="doomed")
    await doomed._ensure_group(stream)
    entries = await app.redis.xreadgroup("ledger", "doomed", {stream: ">"}, count=1000)
    events = [LedgerEvent.parse(org, i, f) for i, f in entries[0][1]]
    async with app.pool.acquire() as conn, conn.transaction():
        assert await insert_events(conn, org, events) == len(events) == 8
    # Another writer claims the dead one's entries and writes them again: nothing new.
    heir = LedgerWriter(app.redis, app.pool, consumer="heir", claim_idle_ms=0)
    await heir.drain_until_empty()
    assert heir.stats.duplicates >= 8
    assert await ledger_rows(app, org) == {"reserve": 4, "commit": 2, "release": 1, "refund": 1}
    assert await app.pool.fetchval("SELECT count(*) FROM usage_records WHERE org = $1", org) == 3
    assert await app.redis.xlen(stream) == 0
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []


def scrape(app: server.App) -> dict[str, float]:
    assert app.metrics is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{app.metrics.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        name: float(value)
        for line in text.splitlines()
        if line and not line.startswith("#")
        for name, _, value in [line.rpartition(" ")]
    }


async def test_metrics_show_the_writer_and_a_counter_that_drifted_from_the_ledger(
    app, budgets, admin, clock, org
):
    await traffic(budgets, admin, clock, org)
    # (Other tests' orgs on this PostgreSQL may differ: some ran on Redis servers of their own.)
    await app.reconciled.run(app.engine.scripts, app.pool, wait_seconds=30)
    assert [d for d in app.reconciled.differences if d.org == org] == []
    metrics = await asyncio.to_thread(scrape, app)
    assert metrics["budget_ledger_events_written_total"] >= 8
    before = metrics["budget_ledger_reconcile_differences"]
    assert before == len(app.reconciled.differences)
    assert "budget_ledger_backlog_events" in metrics
    # A counter changed behind the scripts' back (as a bug or a bad restore would) shows up.
    uid = next(u for u, raw in (await app.redis.hgetall(keys.config(org))).items()
               if '"id":"search"' in raw)  # fmt: skip
    await app.redis.hincrby(keys.budget(org, uid), "spent", 7)
    try:
        await app.reconciled.run(app.engine.scripts, app.pool, wait_seconds=30)
        drifted = [d for d in app.reconciled.differences if d.org == org]
        assert [(d.budget_id, d.counter, d.redis_nanos - d.ledger_nanos) for d in drifted] == [
            ("search", "spent", 7)
        ]
        metrics = await asyncio.to_thread(scrape, app)
        assert metrics["budget_ledger_reconcile_differences"] == before + 1
    finally:
        await app.redis.hincrby(keys.budget(org, uid), "spent", -7)


async def test_token_commit_records_tokens_by_kind_model_and_price(app, budgets, admin, org):
    await upsert(admin, org, "cap", usd("10"))
    held = await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid(), subject=pb.Subject(org=org, model="gpt-4o", user="ana"),
        usage=pb.Usage(input_tokens=1200, output_tokens=800)))  # fmt: skip
    done = await budgets.Commit(pb.CommitRequest(
        org=org, reservation_id=held.reservation_id, latency_ms=1234,
        usage=pb.Usage(input_tokens=1200, cached_input_tokens=1024, output_tokens=300,
                       reasoning_tokens=100, cache_write_1h_tokens=50)))  # fmt: skip
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    row = await app.pool.fetchrow("SELECT * FROM usage_records WHERE org = $1", org)
    who = (row["model"], row["user"], row["outcome"], row["latency_ms"])
    assert who == ("gpt-4o", "ana", "ok", 1234)
    kinds = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
             "cache_write_tokens")  # fmt: skip
    assert [row[k] for k in kinds] == [1200, 1024, 300, 100, 50]
    assert (row["cost_nanos"], row["price_ref"]) == (done.charged_nanos, str(held.price_version))


async def test_two_writers_share_the_backlog_without_duplicates(
    paused_writer, budgets, admin, clock, org
):
    app = paused_writer
    for _ in range(3):
        await traffic(budgets, admin, clock, org)
    writers = [LedgerWriter(app.redis, app.pool, consumer=f"w{i}", batch_size=4) for i in (1, 2)]
    await asyncio.gather(*(w.drain_until_empty() for w in writers))
    assert sum(w.stats.written for w in writers) >= 24
    assert all(w.stats.written > 0 for w in writers)  # both took part
    assert sum(w.stats.duplicates for w in writers) == 0  # the group gave each entry to one
    assert await ledger_rows(app, org) == {"reserve": 12, "commit": 6, "release": 3, "refund": 3}
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []


async def test_an_unreadable_outbox_entry_is_set_aside_and_the_rest_written(
    paused_writer, budgets, admin, clock, org
):
    app = paused_writer
    await upsert(admin, org, "cap", usd("1"))
    await reserve(budgets, org, usd("0.01"))
    await app.redis.xadd(keys.ledger(org), {"e": "not an event"})
    await reserve(budgets, org, usd("0.02"))
    writer = LedgerWriter(app.redis, app.pool, consumer="careful")
    await writer.drain_until_empty()
    assert writer.stats.malformed == writer.stats.dead_lettered == 1
    assert await ledger_rows(app, org) == {"reserve": 2}
    [kept] = await app.pool.fetch("SELECT * FROM ledger_dead_letters WHERE org = $1", org)
    assert (kept["reason"], kept["event_id"]) == ("malformed", "")
    assert json.loads(kept["entry"]) == {"e": "not an event"} and "ValueError" in kept["error"]
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
