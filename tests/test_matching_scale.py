"""Budget matching scales: an org of 20,000 per-user budgets costs a Reserve what one of ten does.

Structural, never timed: a covering lookup touches only the budgets it returns, whatever the
org's size; a configuration change makes each replica parse the budgets that changed, not the
org; reconciling with nothing to mend reads no budget in full and never runs one long script.
Where the change log cannot say what changed, the whole org is read again, and answers stay
right. Every org here is built in PostgreSQL and reconciled into Redis, the path a service
start takes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from budget_service import server
from budget_service.config import budget_repo
from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig, subject_pairs, validate_budget
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.clock import OffsetClock
from servicekit.errors import FailedPrecondition
from tests.helpers import quota_failure, reserve, upsert, usd

BIG = 20_000  # per-user budgets of a big org (the bench measures 100,000)
TEAM = "team-a"


def user(i: int) -> str:
    return f"u{i:06d}"


def user_budget(i: int) -> str:
    return f"user-{i:06d}"


async def seed(app: server.App, org: str, users: int, *, caps: bool = True) -> None:
    """An org cap, a team budget and `users` per-user budgets, written to PostgreSQL and then
    reconciled into Redis (as a service start does)."""
    if caps:
        await app.pool.execute(
            "INSERT INTO budgets (org, id, selector, limit_nanos, period, timezone, mode,"
            " alert_thresholds_percent, version) VALUES"
            " ($1, 'org-cap', '{}', $2, $3, 'UTC', $4, '{100}', 1),"
            " ($1, $5, jsonb_build_object('team', $5::text), $2, $3, 'UTC', $4, '{100}', 1)",
            org, usd("1000"), pb.PERIOD_NONE, pb.MODE_HARD, TEAM,
        )  # fmt: skip
    await app.pool.execute(
        "INSERT INTO budgets (org, id, selector, limit_nanos, period, timezone, mode,"
        " alert_thresholds_percent, version)"
        " SELECT $1, 'user-' || lpad(i::text, 6, '0'),"
        " jsonb_build_object('user', 'u' || lpad(i::text, 6, '0')), $2, $3, 'UTC', $4,"
        " '{50,75,90,100}', 1 FROM generate_series(0, $5 - 1) AS i",
        org, usd("1"), pb.PERIOD_NONE, pb.MODE_HARD, users,
    )  # fmt: skip
    # a new org's first budgets, as a first start adopts them (they carry the data-set epoch)
    await ConfigSync(app.engine.scripts, app.engine.cache.epoch).reconcile(
        BudgetRepository(app.pool), adopt=True
    )


@pytest.fixture
async def parsed(app: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """The budget config JSONs parsed from Redis (BudgetConfig.from_json) from now on, by the
    calls a test makes: the session service's utilization refresh, which reads the same cache
    in the background, is paused meanwhile."""
    seen: list[str] = []
    original = BudgetConfig.from_json

    def counting(raw: str) -> BudgetConfig:
        seen.append(raw)
        return original(raw)

    job = next(j for j in app.background if j.name == "utilization")
    await job.stop()
    monkeypatch.setattr(BudgetConfig, "from_json", staticmethod(counting))
    try:
        yield seen
    finally:
        job.start()


async def test_covering_lookup_touches_only_the_budgets_it_returns_whatever_the_org_size(
    app, budgets, monkeypatch, org
):
    small, big = f"{org}-small", f"{org}-big"
    await seed(app, small, 8)  # 10 budgets
    await seed(app, big, BIG)
    original = BudgetConfig.__getattribute__
    for name, i in ((small, 3), (big, 12_345)):
        config = await app.engine.cache.get(name)
        pairs = subject_pairs(
            pb.Subject(org=name, team=TEAM, user=user(i), provider="openai", model="gpt-4o")
        )
        touched: set[int] = set()

        def counting(self: BudgetConfig, attr: str, touched: set[int] = touched) -> object:
            touched.add(id(self))
            return original(self, attr)

        monkeypatch.setattr(BudgetConfig, "__getattribute__", counting)
        covering = config.covering(pairs)
        monkeypatch.undo()
        assert [b.id for b in covering] == ["org-cap", TEAM, user_budget(i)]
        assert touched <= {id(b) for b in covering}, f"{len(touched)} budgets touched in {name}"
        held = await reserve(budgets, name, usd("0.01"), team=TEAM, user=user(i))
        assert [b.budget_id for b in held.budgets] == ["org-cap", TEAM, user_budget(i)]


async def test_a_change_costs_each_replica_only_the_changed_budget_whatever_the_org_size(
    app, admin, budgets, parsed, org
):
    await seed(app, org, BIG)
    await reserve(budgets, org, usd("0.01"), team=TEAM, user=user(7))  # cached on this replica
    parsed.clear()

    await upsert(admin, org, user_budget(7), usd("0.05"), selector={"user": user(7)})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.06"), team=TEAM, user=user(7))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [v.subject for v in quota_failure(refused.value).violations] == [user_budget(7)]
    assert len(parsed) == 1  # the changed budget, not the org's 20,002

    await admin.DeleteBudget(pb.DeleteBudgetRequest(org=org, budget_id=user_budget(7)))
    held = await reserve(budgets, org, usd("0.06"), team=TEAM, user=user(7))
    assert [b.budget_id for b in held.budgets] == ["org-cap", TEAM]
    assert len(parsed) == 1  # a deletion parses nothing


async def test_utilization_refresh_rereads_no_config_that_did_not_change(app, parsed, org):
    await seed(app, org, 2_000)
    clock = OffsetClock()
    await app.utilization.refresh(app.redis, app.engine.cache, clock)
    parsed.clear()
    await app.utilization.refresh(app.redis, app.engine.cache, clock)
    assert parsed == []
    assert app.utilization.ratios[(org, user_budget(1_999))] == 0.0


async def test_reconcile_with_nothing_to_mend_reads_no_budget_in_full_nor_one_long_script(
    app, monkeypatch, org
):
    await seed(app, org, BIG)
    scripts = app.engine.scripts
    calls: list[tuple[str, int]] = []
    run = scripts.run

    async def recording(name: str, script_keys: list[str], args: list[str | int]) -> object:
        if script_keys and f"{{{org}}}" in script_keys[0]:
            calls.append((name, len(script_keys)))
        return await run(name, script_keys, args)

    rows: list[str] = []
    to_config = budget_repo._row_to_config

    def counting(row: object) -> BudgetConfig:
        config = to_config(row)  # type: ignore[arg-type]
        if config.org == org:
            rows.append(config.id)
        return config

    monkeypatch.setattr(scripts, "run", recording)
    monkeypatch.setattr(budget_repo, "_row_to_config", counting)
    sync = ConfigSync(scripts, app.engine.cache.epoch)
    repo = BudgetRepository(app.pool)

    await sync.reconcile(repo)
    assert rows == []
    assert "sync_org" not in [name for name, _ in calls]
    assert calls and max(size for _, size in calls) <= 2_001, max(size for _, size in calls)

    # A budget's state lost in Redis: only that budget is read and written again.
    config = await app.engine.cache.get(org)
    lost = next(b for b in config.budgets if b.id == user_budget(4_321))
    await app.redis.delete(keys.budget(org, lost.uid))
    calls.clear()
    await sync.reconcile(repo)
    assert rows == [user_budget(4_321)]
    assert [size for name, size in calls if name == "sync_org"] == [3]  # config, log, budget
    assert await app.redis.hget(keys.budget(org, lost.uid), "id") == user_budget(4_321)


async def test_a_cache_behind_a_trimmed_change_log_reads_the_whole_org(
    app, admin, budgets, parsed, org
):
    await upsert(admin, org, "org-cap", usd("1000"))
    await reserve(budgets, org, usd("0.01"), user=user(123))  # cached: one budget
    await seed(app, org, BIG, caps=False)  # 20,000 changes: the log keeps the newest 10,000
    assert await app.redis.zcard(keys.config_changes(org)) == 10_000
    assert await app.redis.hget(keys.config(org), "_f") is not None
    parsed.clear()
    held = await reserve(budgets, org, usd("0.01"), user=user(123))
    assert [b.budget_id for b in held.budgets] == ["org-cap", user_budget(123)]
    assert len(parsed) == BIG + 1


async def test_a_lost_change_log_makes_the_cache_read_the_whole_org(
    app, admin, budgets, parsed, org
):
    await upsert(admin, org, "org-cap", usd("1000"))
    await reserve(budgets, org, usd("0.01"), team="t")  # cached: one budget
    await upsert(admin, org, "team-t", usd("0.02"), selector={"team": "t"})
    await app.redis.delete(keys.config_changes(org))
    parsed.clear()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.03"), team="t")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [v.subject for v in quota_failure(refused.value).violations] == ["team-t"]
    assert len(parsed) == 2


async def test_a_recreated_config_whose_version_caught_up_is_read_whole(
    app, admin, budgets, parsed, org
):
    await upsert(admin, org, "org-cap", usd("1000"))
    await upsert(admin, org, "team-t", usd("0.02"), selector={"team": "t"})
    await reserve(budgets, org, usd("0.01"))  # cached at version 2 with both budgets
    # Redis loses the org's configuration while team-t is deleted in PostgreSQL; reconciling
    # brings org-cap back (version 1: adopted, as a first start on a Redis without the epoch
    # would) and two upserts take the version past the cached one.
    await app.redis.delete(keys.config(org), keys.config_changes(org))
    await app.pool.execute("DELETE FROM budgets WHERE org = $1 AND id = 'team-t'", org)
    await ConfigSync(app.engine.scripts, app.engine.cache.epoch).reconcile(
        BudgetRepository(app.pool), adopt=True
    )
    await upsert(admin, org, "org-cap", usd("1000"))
    await upsert(admin, org, "org-cap", usd("1000"))
    parsed.clear()
    held = await reserve(budgets, org, usd("0.03"), team="t")
    assert [b.budget_id for b in held.budgets] == ["org-cap"]
    # The changed budget (org-cap), whose count did not add up; then the whole org: org-cap.
    assert len(parsed) == 2


async def test_bulk_create_writes_postgres_with_audit_rows_then_redis(app, budgets, org):
    repo = BudgetRepository(app.pool)
    batch = [
        validate_budget(
            pb.Budget(id=user_budget(i), org=org, limit_nanos=usd("1"), selector={"user": user(i)})
        )
        for i in range(2_500)
    ]
    created = await repo.create_many(batch, "bulk-test")
    await ConfigSync(app.engine.scripts, app.engine.cache.epoch).push_many(created, new_orgs=True)
    assert sorted(c.id for c in created) == [user_budget(i) for i in range(2_500)]
    [audit] = await repo.audit_trail(org, user_budget(7))
    assert (audit["action"], audit["actor"], audit["before"]) == ("create", "bulk-test", None)
    held = await reserve(budgets, org, usd("0.5"), user=user(7))
    assert [b.budget_id for b in held.budgets] == [user_budget(7)]

    again = [
        validate_budget(pb.Budget(id=name, org=org, limit_nanos=usd("1")))
        for name in ("brand-new", user_budget(7))
    ]
    with pytest.raises(FailedPrecondition):
        await repo.create_many(again, "bulk-test")
    count = await app.pool.fetchval("SELECT count(*) FROM budgets WHERE org = $1", org)
    assert count == 2_500


async def test_a_new_field_of_the_config_hash_is_no_budget_and_costs_one_whole_read(
    app, admin, budgets, parsed, org
):
    await upsert(admin, org, "org-cap", usd("1000"))
    await upsert(admin, org, "team-t", usd("0.02"), selector={"team": "t"})
    await reserve(budgets, org, usd("0.01"))  # cached: two budgets
    await app.redis.hset(keys.config(org), "_z", "7")  # e.g. a field a later version adds
    await upsert(admin, org, "team-t", usd("0.03"), selector={"team": "t"})
    parsed.clear()
    held = await reserve(budgets, org, usd("0.03"), team="t")
    assert [b.budget_id for b in held.budgets] == ["org-cap", "team-t"]
    assert len(parsed) == 1 + 2  # the change, then (one field more than known) the whole org
    await upsert(admin, org, "team-t", usd("0.10"), selector={"team": "t"})
    parsed.clear()
    held = await reserve(budgets, org, usd("0.05"), team="t")
    assert [b.budget_id for b in held.budgets] == ["org-cap", "team-t"]
    assert len(parsed) == 1
