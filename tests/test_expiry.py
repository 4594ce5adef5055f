"""Holds end when their caller vanishes: the sweeper expires them; late commits still charge."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from budget_service.hotpath import keys
from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import rid, status, upsert, usd

WAIT_SECONDS = 10.0


async def reserve_with_ttl(budgets, org: str, amount: int, ttl_seconds: int) -> str:
    reservation_id = rid()
    await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id=reservation_id,
            subject=pb.Subject(org=org),
            amount_nanos=amount,
            ttl=duration_pb2.Duration(seconds=ttl_seconds),
        )
    )
    return reservation_id


async def wait_for_reserved(admin, org: str, budget_id: str, expected: int) -> int:
    """Poll the budget's holds until they equal `expected` or the bound runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    reserved = -1
    while loop.time() < deadline:
        reserved = (await status(admin, org, budget_id)).reserved_nanos
        if reserved == expected:
            break
        await asyncio.sleep(0.1)
    return reserved


async def test_hold_with_one_second_ttl_is_released_by_the_sweeper(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    await reserve_with_ttl(budgets, org, usd("0.30"), ttl_seconds=1)
    kept = await reserve_with_ttl(budgets, org, usd("0.20"), ttl_seconds=60)
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.50")
    assert await wait_for_reserved(admin, org, "cap", usd("0.20")) == usd("0.20")
    release = await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=kept))
    assert release.released_nanos == usd("0.20")


async def test_commit_after_expiry_is_still_charged_and_marked_late(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    reservation_id = await reserve_with_ttl(budgets, org, usd("0.30"), ttl_seconds=1)
    assert await wait_for_reserved(admin, org, "cap", 0) == 0
    done = await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=reservation_id, actual_nanos=usd("0.25"))
    )
    assert done.late
    assert (done.charged_nanos, done.released_nanos) == (usd("0.25"), 0)
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.25"), 0)


async def test_extend_keeps_a_hold_past_its_first_ttl(app, budgets, admin, clock, org):
    await upsert(admin, org, "cap", usd("1"))
    reservation_id = await reserve_with_ttl(budgets, org, usd("0.30"), ttl_seconds=1)
    before = clock.now_ms()
    extended = await budgets.Extend(
        pb.ExtendRequest(
            org=org, reservation_id=reservation_id, ttl=duration_pb2.Duration(seconds=60)
        )
    )
    after = clock.now_ms()
    expires = extended.expires_at.ToMilliseconds()
    # 60 s from the moment the service handled the call, on the service's clock
    assert before + 60_000 <= expires <= after + 60_000
    # what the sweeper and a rebuild go by: the record, the expiry index, the ledger
    assert int(await app.redis.hget(keys.reservation(org, reservation_id), "exp")) == expires
    assert await app.redis.zscore(keys.expiries(org), reservation_id) == expires
    await asyncio.sleep(1.6)  # past the first TTL, several sweeper passes
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.30")


async def test_extend_of_an_expired_hold_is_refused(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    reservation_id = await reserve_with_ttl(budgets, org, usd("0.30"), ttl_seconds=1)
    assert await wait_for_reserved(admin, org, "cap", 0) == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await budgets.Extend(
            pb.ExtendRequest(
                org=org, reservation_id=reservation_id, ttl=duration_pb2.Duration(seconds=60)
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await status(admin, org, "cap")).reserved_nanos == 0
