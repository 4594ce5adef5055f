"""Redis failing: the service fails closed, fast; lost scripts and restarts are transparent."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from budget_service import server
from devstack import RedisProcess, free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import Stack, service_settings
from tests.helpers import reserve, status, upsert, usd


@pytest.fixture
async def own_redis(tmp_path) -> AsyncIterator[RedisProcess]:
    """A Redis only this test uses, so it can be stopped and restarted."""
    redis = RedisProcess(tmp_path / "redis", free_port())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
async def isolated(stack: Stack, own_redis: RedisProcess) -> AsyncIterator[tuple]:
    app = await server.start(
        service_settings(
            stack, redis_url=own_redis.url, redis_timeout_seconds=0.3, config_reconcile_seconds=0.3
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            yield (
                app,
                own_redis,
                budget_pb2_grpc.BudgetServiceStub(ch),
                budget_pb2_grpc.BudgetAdminServiceStub(ch),
            )
    finally:
        await app.stop()


async def test_redis_down_fails_closed_with_unavailable_within_the_deadline(isolated, org):
    _app, redis, budgets, admin = isolated
    await upsert(admin, org, "cap", usd("1"))
    await reserve(budgets, org, usd("0.10"))
    redis.stop()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await budgets.Reserve(
            pb.ReserveRequest(
                reservation_id="while-down", subject=pb.Subject(org=org), amount_nanos=usd("0.10")
            ),
            timeout=5,
        )
    elapsed = time.monotonic() - started
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Redis" in (down.value.details() or "")
    assert elapsed < 5  # answered, not timed out by the client's deadline
    redis.start()
    # Back up: the same reservation id now succeeds, and AOF kept the earlier hold.
    await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id="while-down", subject=pb.Subject(org=org), amount_nanos=usd("0.10")
        )
    )
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.20")


async def test_lost_script_cache_is_reloaded_transparently(isolated, org):
    app, _redis, budgets, admin = isolated
    await upsert(admin, org, "cap", usd("1"))
    await app.redis.script_flush()
    held = await reserve(budgets, org, usd("0.10"))
    await app.redis.script_flush()
    await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=held.reservation_id, actual_nanos=usd("0.05"))
    )
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.05"), 0)


async def test_counters_and_holds_survive_a_redis_restart(isolated, org):
    _app, redis, budgets, admin = isolated
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.30"))
    spent = await reserve(budgets, org, usd("0.20"))
    await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=spent.reservation_id, actual_nanos=usd("0.20"))
    )
    redis.stop()  # graceful: AOF flushed
    redis.start()
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.20"), usd("0.30"))
    await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=held.reservation_id))
    assert (await status(admin, org, "cap")).reserved_nanos == 0


async def test_budget_saved_while_redis_is_down_is_applied_when_it_returns(isolated, org):
    _app, redis, budgets, admin = isolated
    await upsert(admin, org, "cap", usd("1"))
    redis.stop()
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await upsert(admin, org, "cap", usd("0.01"))
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "saved in PostgreSQL" in (down.value.details() or "")
    redis.start()
    for _ in range(50):  # the periodic reconcile applies the new limit (bounded wait)
        if (await status(admin, org, "cap")).budget.limit_nanos == usd("0.01"):
            try:
                await reserve(budgets, org, usd("0.02"))
            except grpc.aio.AioRpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the new limit never reached Redis")


async def test_calls_cancelled_by_client_deadlines_leave_the_service_healthy(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1000"))

    async def impatient(i: int) -> None:
        try:
            await budgets.Reserve(
                pb.ReserveRequest(reservation_id=f"hurry-{i}", subject=pb.Subject(org=org),
                                  amount_nanos=usd("0.01")),
                timeout=0.0005,
            )  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await asyncio.gather(*(impatient(i) for i in range(300)))
    # Every call, cancelled or not, either held its 0.01 or held nothing: retrying all of them
    # with the same ids (idempotent) must end with exactly 300 holds.
    for i in range(300):
        await budgets.Reserve(
            pb.ReserveRequest(reservation_id=f"hurry-{i}", subject=pb.Subject(org=org),
                              amount_nanos=usd("0.01")),
            timeout=5,
        )  # fmt: skip
    assert (await status(admin, org, "cap")).reserved_nanos == 300 * usd("0.01")


async def test_frozen_redis_fails_closed_within_the_call_deadline(isolated, org):
    _app, redis, budgets, admin = isolated
    await upsert(admin, org, "cap", usd("1"))
    await reserve(budgets, org, usd("0.10"))
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as frozen:
            await budgets.Reserve(
                pb.ReserveRequest(reservation_id="frozen", subject=pb.Subject(org=org),
                                  amount_nanos=usd("0.10")),
                timeout=3,
            )  # fmt: skip
        assert frozen.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 3
    finally:
        os.kill(redis.pid, signal.SIGCONT)
    held = await reserve(budgets, org, usd("0.10"), reservation_id="frozen")
    # The frozen call may have run once Redis woke: its retry answers the same single hold.
    assert held.reserved_nanos == usd("0.10")
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.20")
