"""Budget administration: PostgreSQL is the source of truth, audited, mirrored into Redis."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from budget_service import server
from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import service_settings
from tests.helpers import reserve, status, upsert, usd


async def test_upsert_fills_defaults_and_bumps_the_version(admin, org):
    created = await admin.UpsertBudget(
        pb.UpsertBudgetRequest(budget=pb.Budget(org=org, id="b1", limit_nanos=usd("5")))
    )
    assert created.period == pb.PERIOD_MONTH
    assert created.mode == pb.MODE_HARD
    assert created.timezone == "UTC"
    assert list(created.alert_thresholds_percent) == [50, 75, 90, 100]
    assert created.version == 1
    updated = await upsert(admin, org, "b1", usd("7"), mode=pb.MODE_SOFT)
    assert (updated.version, updated.limit_nanos, updated.mode) == (2, usd("7"), pb.MODE_SOFT)
    got = await admin.GetBudget(pb.GetBudgetRequest(org=org, budget_id="b1"))
    assert got == updated


async def test_every_change_writes_an_audit_row_with_actor_before_and_after(app, admin, org):
    metadata = (("x-actor", "alice@example.com"),)
    budget = pb.Budget(org=org, id="audited", limit_nanos=100, period=pb.PERIOD_DAY)
    await admin.UpsertBudget(pb.UpsertBudgetRequest(budget=budget), metadata=metadata)
    budget.limit_nanos = 200
    await admin.UpsertBudget(pb.UpsertBudgetRequest(budget=budget), metadata=metadata)
    await admin.DeleteBudget(pb.DeleteBudgetRequest(org=org, budget_id="audited"))
    trail = await BudgetRepository(app.pool).audit_trail(org, "audited")
    assert [row["action"] for row in trail] == ["create", "update", "delete"]
    assert [row["actor"] for row in trail[:2]] == ["alice@example.com"] * 2
    assert trail[2]["actor"].startswith("peer:")
    assert trail[0]["before"] is None
    assert json.loads(trail[1]["before"])["limit"] == "100"
    assert json.loads(trail[1]["after"])["limit"] == "200"
    assert trail[2]["after"] is None


async def test_list_budgets_pages_through_every_budget_in_id_order(admin, org):
    ids = [f"b{i:02d}" for i in range(7)]
    for budget_id in reversed(ids):
        await upsert(admin, org, budget_id, 1)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await admin.ListBudgets(
            pb.ListBudgetsRequest(org=org, page_size=3, page_token=token)
        )
        seen += [b.id for b in page.budgets]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


async def test_delete_removes_the_budget_from_enforcement(budgets, admin, org):
    await upsert(admin, org, "tiny", 1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, 2)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await admin.DeleteBudget(pb.DeleteBudgetRequest(org=org, budget_id="tiny"))
    held = await reserve(budgets, org, 2)
    assert list(held.budgets) == []


async def test_recreated_budget_starts_afresh_and_old_holds_never_touch_it(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    old = await reserve(budgets, org, usd("0.50"))
    await admin.DeleteBudget(pb.DeleteBudgetRequest(org=org, budget_id="cap"))
    await upsert(admin, org, "cap", usd("1"))
    await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=old.reservation_id, actual_nanos=usd("0.50"))
    )
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (0, 0)


async def test_status_reports_utilization_and_the_alert_threshold_reached(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.80"))
    await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=held.reservation_id, actual_nanos=usd("0.76"))
    )
    st = await status(admin, org, "cap")
    assert (st.utilization_percent, st.alert_threshold_reached_percent) == (76, 75)
    assert st.remaining_nanos == usd("0.24")


async def test_budget_added_through_another_replica_is_enforced_at_once(stack, budgets, admin, org):
    await upsert(admin, org, "org-cap", usd("10"))
    await reserve(budgets, org, usd("0.01"))  # this replica now caches the org's config
    other = await server.start(service_settings(stack))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as ch:
            other_admin = budget_pb2_grpc.BudgetAdminServiceStub(ch)
            await upsert(other_admin, org, "team-x", usd("0.01"), selector={"team": "x"})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reserve(budgets, org, usd("0.02"), team="x")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await other.stop()


async def test_start_reconciles_redis_config_from_postgres(stack, app, budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    await upsert(admin, org, "gone", usd("1"), selector={"team": "t"})
    held = await reserve(budgets, org, usd("0.25"))
    # Redis loses the config (and gains a budget PostgreSQL never had); counters stay.
    config = await app.redis.hgetall(keys.config(org))
    await app.redis.delete(keys.config(org))
    gone_uid = next(uid for uid, raw in config.items() if '"id":"gone"' in raw)
    await app.redis.hset(keys.config(org), "999999", config[gone_uid].replace(gone_uid, "999999"))
    await app.pool.execute("DELETE FROM budgets WHERE org = $1 AND id = 'gone'", org)
    restarted = await server.start(service_settings(stack))
    try:
        # The config hash lost its data-set epoch with it: the org is rebuilt from PostgreSQL
        # and the ledger (in the background), never re-created with counters from zero.
        for _ in range(100):
            reconciled = await app.redis.hgetall(keys.config(org))
            if "_e" in reconciled:
                break
            await asyncio.sleep(0.05)
        ids = sorted(
            raw.split('"id":"')[1].split('"')[0]
            for uid, raw in reconciled.items()
            if not uid.startswith("_")
        )
        assert ids == ["cap"]
    finally:
        await restarted.stop()
    st = await status(admin, org, "cap")
    assert st.reserved_nanos == held.reserved_nanos
