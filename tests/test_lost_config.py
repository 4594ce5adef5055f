"""A replica never admits a budgeted org uncharged after the org's config hash vanished, even
when it cached the org before the org had any budget.

Two budget services share one Redis and one PostgreSQL (this module's own, so keys can be
deleted freely): replica A caches an org while it has no budget, replica B creates the org's
first budget, and then the org's config hash is lost in Redis (deleted: a partial loss, an
eviction). A must answer UNAVAILABLE until the org is rebuilt, or charge the budget once it is;
it must never admit the request against no budget at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from budget_service import server
from budget_service.hotpath import keys
from devstack import free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import Stack, own_stack, service_settings
from tests.helpers import error_info, reserve, upsert, usd

ATTEMPTS = 200  # reserves tried while an automatic rebuild runs (bounded)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with own_stack(tmp_path_factory.mktemp("lost-config")) as started:
        yield started


class Replica:
    def __init__(self, app: server.App, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.budgets = budget_pb2_grpc.BudgetServiceStub(channel)
        self.admin = budget_pb2_grpc.BudgetAdminServiceStub(channel)


async def _start(stores: Stack, clock: Any, *, auto_rebuild: bool) -> AsyncIterator[Replica]:
    # The periodic reconcile (which tells a replica which orgs PostgreSQL has budgets for) is
    # kept out of the way: the scripts and the cache must catch the loss on their own.
    settings = service_settings(
        stores,
        pricing_addr=f"127.0.0.1:{free_port()}",
        ledger_poll_seconds=0.05,
        config_reconcile_seconds=3600.0,
        auto_rebuild=auto_rebuild,
    )
    app = await server.start(settings, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Replica(app, channel)
    finally:
        await app.stop()


@pytest.fixture
async def replica_a(stores: Stack, clock: Any) -> AsyncIterator[Replica]:
    async for replica in _start(stores, clock, auto_rebuild=False):
        yield replica


@pytest.fixture
async def replica_b(stores: Stack, clock: Any) -> AsyncIterator[Replica]:
    async for replica in _start(stores, clock, auto_rebuild=False):
        yield replica


@pytest.fixture
async def rebuilding_a(stores: Stack, clock: Any) -> AsyncIterator[Replica]:
    async for replica in _start(stores, clock, auto_rebuild=True):
        yield replica


async def _counters(replica: Replica, org: str, uid: int) -> tuple[int, int]:
    spent, reserved = await replica.app.redis.hmget(keys.budget(org, uid), "spent", "reserved")
    return int(spent), int(reserved)


async def _cap_uid(replica: Replica, org: str) -> int:
    return (await replica.app.engine.cache.refresh(org)).budgets[0].uid


async def _refused_as_lost(replica: Replica, org: str, amount: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        held = await reserve(replica.budgets, org, amount)
        pytest.fail(f"admitted with the org's config lost: {held}")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
    assert error_info(failed.value).reason == "REDIS_DATA_LOST"


async def test_a_replica_that_charged_the_first_budget_refuses_once_the_config_is_lost(
    replica_a, replica_b, org
):
    a, b = replica_a, replica_b
    free = await reserve(a.budgets, org, usd("0.10"))  # no budget yet: admitted, nothing held
    assert list(free.budgets) == []
    await upsert(b.admin, org, "cap", usd("1.00"), mode=pb.MODE_HARD)
    charged = await reserve(a.budgets, org, usd("0.20"))  # A catches up: the cap is charged
    assert [(x.budget_id, x.reserved_nanos) for x in charged.budgets] == [("cap", usd("0.20"))]
    uid = await _cap_uid(b, org)

    await a.app.redis.delete(keys.config(org))
    await _refused_as_lost(a, org, usd("0.30"))
    await _refused_as_lost(a, org, usd("0.30"))  # and again: no cached state lets it through
    assert await _counters(a, org, uid) == (0, usd("0.20"))


async def test_a_replica_that_never_saw_the_first_budget_refuses_once_the_config_is_lost(
    replica_a, replica_b, org
):
    a, b = replica_a, replica_b
    await reserve(a.budgets, org, usd("0.10"))  # A caches the org with no budget
    await upsert(b.admin, org, "cap", usd("1.00"), mode=pb.MODE_HARD)
    uid = await _cap_uid(b, org)
    await b.app.redis.delete(keys.config(org))  # before A ever called for the org again

    await _refused_as_lost(a, org, usd("0.30"))
    assert await _counters(a, org, uid) == (0, 0)


async def test_after_the_automatic_rebuild_the_budget_is_charged_never_skipped(
    rebuilding_a, replica_b, org
):
    a, b = rebuilding_a, replica_b
    await reserve(a.budgets, org, usd("0.10"))  # A caches the org with no budget
    await upsert(b.admin, org, "cap", usd("1.00"), mode=pb.MODE_HARD)
    await reserve(b.budgets, org, usd("0.20"))
    uid = await _cap_uid(b, org)
    await b.app.redis.delete(keys.config(org))

    held = None
    for _ in range(ATTEMPTS):
        try:
            held = await reserve(a.budgets, org, usd("0.30"))
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert error_info(exc).reason == "REDIS_DATA_LOST"
            await asyncio.sleep(0.05)
    assert held is not None, "the org was never rebuilt"
    assert [(x.budget_id, x.reserved_nanos) for x in held.budgets] == [("cap", usd("0.50"))]
    assert await _counters(a, org, uid) == (0, usd("0.50"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # 0.50 held of 1.00: 0.60 is too much
        await reserve(a.budgets, org, usd("0.60"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
