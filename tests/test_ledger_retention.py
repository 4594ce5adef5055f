"""Ledger retention (issue 10, point 9): old rows go in batches, never what reconciliation reads.

The service runs on a Redis and a PostgreSQL of its own: the job deletes across every org.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2

from budget_service import server
from budget_service.ledger import reconcile
from budget_service.ledger.retention import TABLES
from devstack import PostgresProcess, RedisProcess, free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from servicekit.clock import OffsetClock
from tests.conftest import Stack, service_settings
from tests.helpers import reserve, rid, upsert, usd

DAY_MS = 86_400_000


@pytest.fixture
async def retention_app(tmp_path) -> AsyncIterator[tuple]:  # type: ignore[type-arg]
    """A service keeping 30 days of ledger and rollups, on stores of its own, its sweeper
    stopped (a hold left open stays open), with a clock of its own."""
    redis = RedisProcess(tmp_path / "redis", free_port())
    postgres = PostgresProcess(tmp_path / "pg", free_port(), fsync=False)
    redis.start()
    postgres.start()
    clock = OffsetClock()
    try:
        settings = service_settings(
            Stack(redis, postgres), pricing_addr=f"127.0.0.1:{free_port()}",
            ledger_poll_seconds=0.05, ledger_retention_days=30, ledger_rollup_retention_days=30,
        )  # fmt: skip
        app = await server.start(settings, clock)
        try:
            await next(j for j in app.background if j.name == "sweeper").stop()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
                yield (app, clock, budget_pb2_grpc.BudgetServiceStub(ch),
                       budget_pb2_grpc.BudgetAdminServiceStub(ch))  # fmt: skip
        finally:
            await app.stop()
    finally:
        postgres.stop()
        redis.stop()


async def spend(budgets: budget_pb2_grpc.BudgetServiceStub, org: str, team: str, nanos: int) -> str:
    held = await reserve(budgets, org, nanos, team=team)
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                          actual_nanos=nanos))  # fmt: skip
    return held.reservation_id


async def test_retention_deletes_old_rows_but_never_what_reconciliation_reads(retention_app, org):
    app, clock, budgets, admin = retention_app
    await upsert(admin, org, "daily-a", usd("100"), selector={"team": "a"}, period=pb.PERIOD_DAY)
    await upsert(admin, org, "lifetime-b", usd("100"), selector={"team": "b"})
    await upsert(admin, org, "daily-c", usd("100"), selector={"team": "c"}, period=pb.PERIOD_DAY)
    now = clock.now_ms()
    clock.set_ms(now - 40 * DAY_MS)
    try:
        gone_spent = await spend(budgets, org, "a", usd("1"))  # its day is over: deleted
        lifetime = await spend(budgets, org, "b", usd("2"))  # a lifetime's period never ends
        idle = await spend(budgets, org, "c", usd("3"))  # Redis still counts that day
        released = await reserve(budgets, org, usd("4"), team="a")
        await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=released.reservation_id))
        still_held = await budgets.Reserve(pb.ReserveRequest(
            reservation_id=rid(), subject=pb.Subject(org=org, team="a"), amount_nanos=usd("5"),
            ttl=duration_pb2.Duration(seconds=3600)))  # fmt: skip
        refunded = await spend(budgets, org, "a", usd("6"))  # refunded today, below
    finally:
        clock.offset_ms = 0
    await budgets.Refund(pb.RefundRequest(org=org, reservation_id=refunded, refund_id=rid(),
                                          amount_nanos=usd("1")))  # fmt: skip
    today = await spend(budgets, org, "a", usd("7"))
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    effects_of = (
        "SELECT e.reservation_id, count(f.*) AS n FROM ledger_events e"
        " LEFT JOIN ledger_effects f USING (org, event_id) WHERE e.org = $1"
        " GROUP BY e.reservation_id"
    )
    before = {r["reservation_id"]: r["n"] for r in await app.pool.fetch(effects_of, org)}
    old_rollups = await app.pool.fetchval(
        "SELECT count(*) FROM spend_daily WHERE day < current_date - 30"
    )

    deleted = await app.retention.run_once()

    after = {r["reservation_id"]: r["n"] for r in await app.pool.fetch(effects_of, org)}
    kept = {lifetime, idle, still_held.reservation_id, refunded, today}
    assert set(after) == kept
    assert after == {k: before[k] for k in kept}  # a reservation's rows go together, or stay
    gone = (gone_spent, released.reservation_id)
    assert deleted is not None
    assert deleted["ledger_events"] == 4  # reserve + commit, reserve + release
    assert deleted["ledger_effects"] == sum(before[g] for g in gone)
    # Usage 40 days old: the four commits of that day; today's refund and commit stay.
    assert deleted["usage_records"] == 4
    usage = await app.pool.fetch("SELECT cost_nanos FROM usage_records WHERE org = $1", org)
    assert sorted(r["cost_nanos"] for r in usage) == [-usd("1"), usd("7")]
    assert old_rollups == deleted["spend_daily"] == 3  # teams a, b and c, 40 days ago
    # Reconciliation reads the same sums as before (and the open hold, rebuild's, is kept).
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org) == []
    # Nothing left to delete: the next run deletes nothing.
    assert await app.retention.run_once() == dict.fromkeys(TABLES, 0)
    assert app.retention.result.runs >= 2
