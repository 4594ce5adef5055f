"""Nothing grows without bound: the org registry, an outbox PostgreSQL does not drain, refunds."""

from __future__ import annotations

import grpc
import pytest

from budget_service import server
from budget_service.hotpath import keys
from budget_service.hotpath.engine import MAX_REFUNDS
from budget_service.hotpath.sweeper import Sweeper
from budget_service.ledger.progress import last_event_id, wait_written
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import service_settings
from tests.helpers import reserve, rid, status, upsert, usd


async def _written(app: server.App, org: str) -> None:
    await wait_written(app.redis, org, await last_event_id(app.redis, org), 30)


async def test_an_org_only_seen_in_reserves_leaves_the_registry_once_idle(
    app, budgets, stack, clock, org
):
    held = await reserve(budgets, org, usd("0.10"))  # no budget covers it
    await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=held.reservation_id))
    busy = f"{org}-busy"  # an open hold keeps an org listed
    await reserve(budgets, busy, usd("0.10"))
    for name in (org, busy):
        await _written(app, name)
    sweeper = Sweeper(app.redis, app.engine, clock)
    # Idle for a day: nothing of its reservations can still be needed (`idle_ms` 0 here).
    assert await sweeper.prune_once(idle_ms=0) >= 1
    listed = await app.redis.smembers(keys.ORGS)
    assert org not in listed and busy in listed
    assert not await app.redis.exists(keys.ledger(org), keys.config(org))
    # Not idle long enough: kept.
    await reserve(budgets, f"{org}-recent", 0)
    await _written(app, f"{org}-recent")
    await sweeper.prune_once(idle_ms=3_600_000)
    assert f"{org}-recent" in await app.redis.smembers(keys.ORGS)
    # The org comes back with its next Reserve (on a replica that had not listed it lately).
    other = await server.start(service_settings(stack))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            await reserve(budget_pb2_grpc.BudgetServiceStub(channel), org, usd("0.10"))
    finally:
        await other.stop()
    assert org in await app.redis.smembers(keys.ORGS)


async def test_an_org_with_budgets_or_unwritten_events_stays_in_the_registry(
    app, budgets, admin, paused_writer, clock, org
):
    await upsert(admin, org, "cap", usd("1"))
    unwritten = f"{org}-unwritten"
    held = await reserve(budgets, unwritten, usd("0.10"))
    await budgets.Release(pb.ReleaseRequest(org=unwritten, reservation_id=held.reservation_id))
    await Sweeper(app.redis, app.engine, clock).prune_once(idle_ms=0)
    listed = await app.redis.smembers(keys.ORGS)
    assert org in listed and unwritten in listed


async def test_reserves_wait_when_the_outbox_is_that_far_behind_and_settles_still_work(
    stack, paused_writer, org
):
    limited = await server.start(service_settings(stack, ledger_outbox_limit=3))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.port}") as channel:
            stub = budget_pb2_grpc.BudgetServiceStub(channel)
            admin = budget_pb2_grpc.BudgetAdminServiceStub(channel)
            await upsert(admin, org, "cap", usd("1"))
            first = await reserve(stub, org, usd("0.10"))
            second = await reserve(stub, org, usd("0.10"))
            await stub.Commit(pb.CommitRequest(org=org, reservation_id=first.reservation_id,
                                               actual_nanos=usd("0.05")))  # fmt: skip
            assert await limited.redis.xlen(keys.ledger(org)) == 3
            with pytest.raises(grpc.aio.AioRpcError) as waiting:
                await reserve(stub, org, usd("0.10"))
            assert waiting.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "LEDGER_OUTBOX_LIMIT=3" in (waiting.value.details() or "")
            # What ends holds is never refused: a commit and a release past the limit.
            await stub.Release(pb.ReleaseRequest(org=org, reservation_id=second.reservation_id))
            st = await status(admin, org, "cap")
            assert (st.spent_nanos, st.reserved_nanos) == (usd("0.05"), 0)
    finally:
        await limited.stop()


async def test_a_reservation_takes_a_bounded_number_of_refunds_and_they_do_not_extend_it(
    app, budgets, admin, org
):
    await upsert(admin, org, "cap", usd("10"))
    held = await reserve(budgets, org, usd("1"))
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                          actual_nanos=usd("1")))  # fmt: skip
    record = keys.reservation(org, held.reservation_id)
    ttl_after_commit = await app.redis.pttl(record)
    refund_ids = [rid("rf") for _ in range(MAX_REFUNDS)]
    for refund_id in refund_ids:
        await budgets.Refund(pb.RefundRequest(org=org, reservation_id=held.reservation_id,
                                              refund_id=refund_id, amount_nanos=1))  # fmt: skip
    assert await app.redis.pttl(record) <= ttl_after_commit
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await budgets.Refund(pb.RefundRequest(org=org, reservation_id=held.reservation_id,
                                              refund_id=rid("rf"), amount_nanos=1))  # fmt: skip
    assert too_many.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(MAX_REFUNDS) in (too_many.value.details() or "")
    # an earlier refund id still answers its first answer
    again = await budgets.Refund(
        pb.RefundRequest(
            org=org, reservation_id=held.reservation_id, refund_id=refund_ids[0], amount_nanos=1
        )
    )
    assert again.refunded_nanos == 1
    assert (await status(admin, org, "cap")).spent_nanos == usd("1") - MAX_REFUNDS
