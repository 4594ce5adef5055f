"""How the service runs rebuilds: many orgs at once, beside config changes, and never over a
data set that belongs to another database.

Each test runs a budget service on a Redis and a PostgreSQL of this module's own, so it can
flush them and plant another deployment's epoch without touching the rest of the suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys
from budget_service.hotpath.errors import ForeignDataSet
from budget_service.ledger.progress import last_event_id, wait_written
from genproto.budget.v1 import budget_pb2 as pb
from tests.conftest import Stack, own_stack
from tests.helpers import error_info, reserve, status, upsert, usd
from tests.test_data_loss import Service, _start, commit, refused_code

POLL_DEADLINE_SECONDS = 60.0  # how long a test waits for the service to answer again


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with own_stack(tmp_path_factory.mktemp("rebuild-orchestration")) as started:
        yield started


@pytest.fixture
async def automatic(stores: Stack, clock: Any) -> AsyncIterator[Service]:
    async for service in _start(stores, clock):
        yield service


@pytest.fixture
async def small_pool(stores: Stack, clock: Any) -> AsyncIterator[Service]:
    """A service whose PostgreSQL pool has only three connections."""
    async for service in _start(stores, clock, database_pool_size=3):
        yield service


async def _answers(s: Service, org: str) -> grpc.StatusCode:
    try:
        await reserve(s.budgets, org, usd("0.01"))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _lose_many_orgs_at_once(s: Service, prefix: str, count: int) -> None:
    """`count` orgs with spend lose their data together, each is hit by a Reserve (each call
    asks for its org's rebuild, and the service notices the whole data set gone); every org
    answers again, with its spend restored."""
    orgs = [f"{prefix}-{i:02d}" for i in range(count)]

    async def prepare(org: str) -> None:
        await upsert(s.admin, org, "cap", usd("1.00"))
        held = await reserve(s.budgets, org, usd("0.30"))
        await commit(s, org, held.reservation_id, usd("0.20"))
        await wait_written(s.app.redis, org, await last_event_id(s.app.redis, org), 30)

    await asyncio.gather(*(prepare(org) for org in orgs))
    await s.app.redis.flushall()
    first = await asyncio.gather(*(_answers(s, org) for org in orgs))
    assert set(first) == {grpc.StatusCode.UNAVAILABLE}, first

    waiting = set(orgs)
    deadline = time.monotonic() + POLL_DEADLINE_SECONDS
    while waiting and time.monotonic() < deadline:
        codes = await asyncio.gather(*(_answers(s, org) for org in sorted(waiting)))
        for org, code in zip(sorted(waiting), codes, strict=True):
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), (org, code)
            if code == grpc.StatusCode.OK:
                waiting.discard(org)
        await asyncio.sleep(0.1)
    assert not waiting, f"still UNAVAILABLE after {POLL_DEADLINE_SECONDS:g}s: {sorted(waiting)}"
    for org in orgs:
        assert (await status(s.admin, org, "cap")).spent_nanos == usd("0.20"), org


async def test_many_orgs_lost_at_once_are_all_rebuilt_with_a_small_pool(small_pool, org):
    await _lose_many_orgs_at_once(small_pool, org, 8)


async def test_many_orgs_lost_at_once_are_all_rebuilt_with_the_default_pool(automatic, org):
    await _lose_many_orgs_at_once(automatic, org, 24)


async def test_a_limit_lowered_during_a_rebuild_is_the_one_in_force_after_it(automatic, org):
    s = automatic
    await upsert(s.admin, org, "cap", usd("1.00"))
    spent = await reserve(s.budgets, org, usd("0.30"))
    await commit(s, org, spent.reservation_id, usd("0.30"))
    writer = next(j for j in s.app.background if j.name == "ledger-writer")
    await writer.stop()
    try:
        # an event the writer has not written: the rebuild waits for it once fenced
        await reserve(s.budgets, org, usd("0.10"))
        rebuild = asyncio.create_task(s.app.rebuilder.rebuild(org, force=True))
        for _ in range(400):
            if await s.app.redis.hget(keys.config(org), "_x") is not None or rebuild.done():
                break
            await asyncio.sleep(0.01)
        assert await s.app.redis.hget(keys.config(org), "_x") is not None, "never fenced"
        lowered = await refused_code(upsert(s.admin, org, "cap", usd("0.50")))
        assert lowered.code() == grpc.StatusCode.UNAVAILABLE
        assert "being rebuilt" in (lowered.details() or "")
        assert error_info(lowered).reason == "ORG_REBUILDING"
    finally:
        writer.start()
    assert await asyncio.wait_for(rebuild, 30) is not None
    st = await status(s.admin, org, "cap")
    assert (st.budget.limit_nanos, st.spent_nanos, st.reserved_nanos) == (
        usd("0.50"),
        usd("0.30"),
        usd("0.10"),
    )
    refused = await refused_code(reserve(s.budgets, org, usd("0.11")))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await reserve(s.budgets, org, usd("0.10"))


async def test_a_foreign_data_set_found_at_run_time_is_never_overwritten(automatic, org):
    s = automatic
    await upsert(s.admin, org, "cap", usd("1.00"))
    await reserve(s.budgets, org, usd("0.10"))
    own = await s.app.redis.get(keys.EPOCH)
    assert own is not None
    uid = (await s.app.engine.cache.refresh(org)).budgets[0].uid
    # REDIS_URL now reaches another deployment's data set (its epoch in the sentinel and in
    # its org's config): nothing here may write into it
    try:
        await s.app.redis.set(keys.EPOCH, "f0f0f0f0f0f0f0f0")
        await s.app.redis.hset(keys.config(org), "_e", "f0f0f0f0f0f0f0f0")
        config_before = await s.app.redis.hgetall(keys.config(org))
        budget_before = await s.app.redis.hgetall(keys.budget(org, uid))

        found = None
        for _ in range(100):
            refused = await refused_code(reserve(s.budgets, org, usd("0.01")))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            if error_info(refused).reason == "REDIS_FOREIGN_DATA_SET":
                found = refused
                break
            await asyncio.sleep(0.05)
        assert found is not None, "never named the other data set"
        assert "REDIS_URL" in (found.details() or "")
        assert "DATABASE_URL" in (found.details() or "")
        await asyncio.sleep(1.5)  # the rebuilder had every chance to write
        again = await refused_code(reserve(s.budgets, org, usd("0.01")))
        assert again.code() == grpc.StatusCode.UNAVAILABLE
        assert await s.app.redis.get(keys.EPOCH) == "f0f0f0f0f0f0f0f0"
        assert await s.app.redis.hgetall(keys.config(org)) == config_before
        assert await s.app.redis.hgetall(keys.budget(org, uid)) == budget_before
        # nor by hand (budgetctl reconcile --rebuild), for one org or for all
        with pytest.raises(ForeignDataSet):
            await s.app.rebuilder.rebuild(org, force=True)
        with pytest.raises(ForeignDataSet):
            await s.app.rebuilder.rebuild_all()
        assert await s.app.redis.get(keys.EPOCH) == "f0f0f0f0f0f0f0f0"
        assert await s.app.redis.hgetall(keys.config(org)) == config_before
        assert await s.app.redis.hgetall(keys.budget(org, uid)) == budget_before
    finally:
        await s.app.redis.set(keys.EPOCH, own)
        await s.app.redis.hset(keys.config(org), "_e", own)


async def test_budget_changes_are_refused_while_fenced_and_synced_after_the_rebuild(automatic, org):
    s = automatic
    await upsert(s.admin, org, "cap", usd("1.00"))
    await upsert(s.admin, org, "team", usd("0.40"), selector={"team": "a"})
    spent = await reserve(s.budgets, org, usd("0.30"))
    await commit(s, org, spent.reservation_id, usd("0.30"))
    config = await s.app.engine.cache.refresh(org)
    cap_uid = next(b.uid for b in config.budgets if b.id == "cap")
    # fenced as a rebuild fences it, past the point where it read PostgreSQL
    await s.app.redis.hset(keys.config(org), "_x", "1")
    fenced_config = await s.app.redis.hgetall(keys.config(org))
    fenced_cap = await s.app.redis.hgetall(keys.budget(org, cap_uid))

    lowered = await refused_code(upsert(s.admin, org, "cap", usd("0.50")))
    assert lowered.code() == grpc.StatusCode.UNAVAILABLE
    assert (error_info(lowered).reason, error_info(lowered).metadata["org"]) == (
        "ORG_REBUILDING",
        org,
    )
    dropped = await refused_code(
        s.admin.DeleteBudget(pb.DeleteBudgetRequest(org=org, budget_id="team"))
    )
    assert dropped.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(dropped).reason == "ORG_REBUILDING"
    # the periodic sync leaves a fenced org alone too
    await ConfigSync(s.app.engine.scripts, s.app.engine.cache.epoch).reconcile(
        BudgetRepository(s.app.pool)
    )
    assert await s.app.redis.hgetall(keys.config(org)) == fenced_config
    assert await s.app.redis.hgetall(keys.budget(org, cap_uid)) == fenced_cap

    # the rebuild lifts the fence, then has the org synced: what PostgreSQL saved applies
    await s.app.redis.hdel(keys.config(org), "_x")
    assert s.app.rebuilder.after_rebuild is not None
    await s.app.rebuilder.after_rebuild(org)
    st = await status(s.admin, org, "cap")
    assert (st.budget.limit_nanos, st.spent_nanos) == (usd("0.50"), usd("0.30"))
    refused = await refused_code(reserve(s.budgets, org, usd("0.21")))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    after = await s.app.engine.cache.refresh(org)
    assert [b.id for b in after.budgets] == ["cap"]
