"""Redis losing data fails closed, and a rebuild from the ledger restores exactly what it lost.

Each test runs a budget service on a Redis and a PostgreSQL of this module's own, so it can
flush, rewind and restart them without touching the rest of the suite.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2

from budget_service import server
from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys
from budget_service.hotpath.sweeper import Sweeper
from budget_service.ledger import reconcile
from budget_service.ledger.progress import last_event_id, wait_written
from devstack import free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import Stack, own_stack, service_settings
from tests.helpers import error_info, reserve, rid, status, upsert, usd


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with own_stack(tmp_path_factory.mktemp("data-loss")) as started:
        yield started


class Service:
    """A budget service on the module's stores, with stubs."""

    def __init__(self, app: server.App, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.budgets = budget_pb2_grpc.BudgetServiceStub(channel)
        self.admin = budget_pb2_grpc.BudgetAdminServiceStub(channel)


async def _start(stores: Stack, clock: Any, **overrides: object) -> AsyncIterator[Service]:
    settings = service_settings(
        stores, pricing_addr=f"127.0.0.1:{free_port()}", ledger_poll_seconds=0.05, **overrides
    )
    app = await server.start(settings, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Service(app, channel)
    finally:
        await app.stop()


@pytest.fixture
async def manual(stores: Stack, clock: Any) -> AsyncIterator[Service]:
    """A service that leaves the rebuild to an operator (AUTO_REBUILD=false)."""
    async for service in _start(stores, clock, auto_rebuild=False):
        yield service


@pytest.fixture
async def automatic(stores: Stack, clock: Any) -> AsyncIterator[Service]:
    async for service in _start(stores, clock):
        yield service


async def eventually(check: Callable[[], Awaitable[bool]], what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def written(app: server.App, org: str) -> None:
    """The ledger has every event of the org, and its counters equal it."""
    await wait_written(app.redis, org, await last_event_id(app.redis, org), 30)
    assert await reconcile.compare(app.engine.scripts, app.pool, org=org, wait_seconds=30) == []


async def refused_code(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


async def commit(service: Service, org: str, reservation_id: str, amount: int) -> Any:
    return await service.budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=reservation_id, actual_nanos=amount)
    )


async def spend(service: Service, org: str, amount: int, **subject: object) -> str:
    held = await reserve(service.budgets, org, amount, **subject)
    await commit(service, org, held.reservation_id, amount)
    return held.reservation_id


async def test_a_redis_that_lost_its_data_fails_closed_until_the_org_is_rebuilt(
    manual, stores, org
):
    s = manual
    await upsert(s.admin, org, "cap", usd("1.00"))
    await spend(s, org, usd("0.90"))
    await written(s.app, org)

    await s.app.redis.flushall()
    lost = await refused_code(reserve(s.budgets, org, usd("0.50")))
    assert lost.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(lost)
    assert (info.reason, info.metadata["org"], info.metadata["rebuilding"]) == (
        "REDIS_DATA_LOST",
        org,
        "false",
    )
    assert f"budgetctl reconcile --rebuild --org {org}" in (lost.details() or "")
    status_call = await refused_code(status(s.admin, org, "cap"))  # never "spent 0"
    assert status_call.code() == grpc.StatusCode.UNAVAILABLE

    # The periodic config sync must not re-create the budget with its spend at zero.
    await ConfigSync(s.app.engine.scripts, s.app.engine.cache.epoch).reconcile(
        BudgetRepository(s.app.pool)
    )
    assert await s.app.redis.exists(keys.config(org)) == 0
    again = await refused_code(reserve(s.budgets, org, usd("0.50")))
    assert again.code() == grpc.StatusCode.UNAVAILABLE

    # The operator's fix, as the error names it.
    env = {**os.environ, "REDIS_URL": stores.redis.url, "DATABASE_URL": stores.postgres.url}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "budgetctl", "reconcile", "--rebuild", "--org", org],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{org}: 1 budgets" in done.stdout
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.90"), 0)
    refused = await refused_code(reserve(s.budgets, org, usd("0.50")))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await reserve(s.budgets, org, usd("0.10"))


async def test_the_service_rebuilds_an_org_whose_data_redis_lost_by_itself(automatic, org):
    s = automatic
    await upsert(s.admin, org, "cap", usd("1.00"))
    await upsert(s.admin, org, "team", usd("0.50"), selector={"team": "a"})
    await spend(s, org, usd("0.30"), team="a")
    open_hold = await reserve(s.budgets, org, usd("0.15"), team="a")
    await written(s.app, org)

    await s.app.redis.flushall()
    lost = await refused_code(reserve(s.budgets, org, usd("0.01"), team="a"))
    assert lost.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(lost).reason == "REDIS_DATA_LOST"

    async def serving() -> bool:
        try:
            await reserve(s.budgets, org, usd("0.01"), team="b")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return False
        return True

    await eventually(serving, "the org answers again")
    team = await status(s.admin, org, "team")
    assert (team.spent_nanos, team.reserved_nanos) == (usd("0.30"), usd("0.15"))
    # the hold made before the loss is live again: its commit is charged once
    done = await commit(s, org, open_hold.reservation_id, usd("0.10"))
    assert (done.charged_nanos, done.released_nanos) == (usd("0.10"), usd("0.05"))
    refused = await refused_code(reserve(s.budgets, org, usd("0.11"), team="a"))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await written(s.app, org)


async def test_one_orgs_lost_config_is_caught_by_the_scripts_and_by_a_fresh_replica(
    automatic, stores, clock, org
):
    s = automatic
    await upsert(s.admin, org, "cap", usd("1.00"))
    await spend(s, org, usd("0.70"))  # this replica now caches the org's config
    await written(s.app, org)
    # Only this org's config is gone (an eviction, a bad script): the sentinel is intact.
    await s.app.redis.delete(keys.config(org))
    # A fresh replica, which has no cached config, refuses too.
    async for other in _start(stores, clock, auto_rebuild=False):
        fresh = await refused_code(reserve(other.budgets, org, usd("0.50")))
        assert fresh.code() == grpc.StatusCode.UNAVAILABLE
    # The replica with the cached config: the script compares the epoch and says LOST.
    cached = await refused_code(reserve(s.budgets, org, usd("0.50")))
    assert cached.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(cached).metadata["rebuilding"] == "true"

    async def rebuilt() -> bool:
        return await s.app.redis.hget(keys.config(org), "_e") is not None

    await eventually(rebuilt, "the org is rebuilt")
    refused = await refused_code(reserve(s.budgets, org, usd("0.50")))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await status(s.admin, org, "cap")).spent_nanos == usd("0.70")


async def _dump(url: str, org: str) -> dict[bytes, bytes]:
    """Every key of the org, serialized (what a replica had at this instant)."""
    client = aioredis.Redis.from_url(url)  # bytes in and out
    try:
        names = [k async for k in client.scan_iter(match=f"ba:{{{org}}}:*")]
        return {name: await client.dump(name) for name in names}
    finally:
        await client.aclose()


async def _restore(url: str, org: str, dumped: dict[bytes, bytes]) -> None:
    """Put the org's keys back as they were dumped and drop later ones: a promoted replica
    that missed the latest writes."""
    client = aioredis.Redis.from_url(url)
    try:
        now = [k async for k in client.scan_iter(match=f"ba:{{{org}}}:*")]
        if now:
            await client.delete(*now)
        for name, value in dumped.items():
            await client.restore(name, 0, value)
    finally:
        await client.aclose()


async def test_a_rebuild_after_a_partial_loss_ends_the_holds_the_ledger_says_ended(
    manual, stores, clock, org
):
    s = manual
    await upsert(s.admin, org, "cap", usd("1.00"))
    first = await s.budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid("c"), subject=pb.Subject(org=org), amount_nanos=usd("0.40"),
        ttl=duration_pb2.Duration(seconds=60)))  # fmt: skip
    extended = await s.budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid("x"), subject=pb.Subject(org=org), amount_nanos=usd("0.10"),
        ttl=duration_pb2.Duration(seconds=60)))  # fmt: skip
    await written(s.app, org)
    before_loss = await _dump(stores.redis.url, org)  # the replica that will be promoted stops here

    await commit(s, org, first.reservation_id, usd("0.30"))
    moved = await s.budgets.Extend(pb.ExtendRequest(
        org=org, reservation_id=extended.reservation_id,
        ttl=duration_pb2.Duration(seconds=3600)))  # fmt: skip
    late = await reserve(s.budgets, org, usd("0.05"))
    await written(s.app, org)  # the ledger has all of it
    await _restore(stores.redis.url, org, before_loss)  # ... Redis does not

    differences = await reconcile.compare(s.app.engine.scripts, s.app.pool, org=org)
    assert differences, "reconciliation sees the lost writes"
    rebuilt = await s.app.rebuilder.rebuild(org, force=True)
    assert rebuilt is not None
    assert (rebuilt.budgets, rebuilt.holds, rebuilt.ended) == (1, 2, 1)
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.30"), usd("0.15"))
    record = await s.app.redis.hgetall(keys.reservation(org, extended.reservation_id))
    assert int(record["exp"]) == moved.expires_at.ToMilliseconds()
    # The committed one answers a retried commit as committed, and is never expired.
    again = await commit(s, org, first.reservation_id, usd("0.30"))
    assert again.charged_nanos == usd("0.30")
    try:
        clock.set_ms(first.expires_at.ToMilliseconds() + 10_000)
        await Sweeper(s.app.redis, s.app.engine, clock).sweep_once()
    finally:
        clock.offset_ms = 0
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.30"), usd("0.15")), "never negative"
    await commit(s, org, late.reservation_id, usd("0.05"))
    await written(s.app, org)


async def test_a_rebuild_of_the_whole_data_set_covers_orgs_without_budgets(automatic, org):
    s = automatic
    no_budget = f"{org}-free"
    held = await reserve(s.budgets, no_budget, usd("0.20"))  # no budget covers it
    await written(s.app, no_budget)
    await s.app.redis.flushall()

    async def rebuilt() -> bool:
        return await s.app.redis.get(keys.EPOCH) is not None

    await eventually(rebuilt, "the data set is rebuilt")
    done = await commit(s, no_budget, held.reservation_id, usd("0.15"))
    assert (done.charged_nanos, done.released_nanos) == (usd("0.15"), usd("0.05"))


async def test_reconciliation_reports_a_negative_counter_even_where_the_ledger_agrees(manual, org):
    s = manual
    await upsert(s.admin, org, "cap", usd("1.00"))
    uid = (await s.app.engine.cache.refresh(org)).budgets[0].uid
    # a ledger whose holds on the budget sum below zero, and a Redis that agrees with it
    await s.app.pool.execute(
        "INSERT INTO ledger_events (org, event_id, type, reservation_id, at, amount_nanos,"
        " stream_id, created_ms) VALUES ($1, 'release|ghost|1', 'release', 'ghost', now(), 5,"
        " '1-1', 1)",
        org,
    )
    await s.app.pool.execute(
        "INSERT INTO ledger_effects (org, event_id, budget_uid, period_start_ms, spent_delta,"
        " reserved_delta) VALUES ($1, 'release|ghost|1', $2, 0, 0, -5)",
        org,
        uid,
    )
    await s.app.redis.hset(keys.budget(org, uid), "reserved", "-5")
    found = await reconcile.compare(s.app.engine.scripts, s.app.pool, org=org)
    assert [(d.counter, d.redis_nanos, d.ledger_nanos) for d in found] == [("reserved", -5, -5)]
