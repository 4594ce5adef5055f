"""Commit, release, refund and extend: the hold always ends, spend is charged exactly once."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from budget_service import server
from budget_service.hotpath import keys
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import service_settings
from tests.helpers import reserve, rid, status, upsert, usd


async def commit(budgets, org: str, reservation_id: str, actual: int) -> pb.CommitResponse:
    return await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=reservation_id, actual_nanos=actual)
    )


async def test_commit_of_smaller_actual_frees_the_difference(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.04"))
    done = await commit(budgets, org, held.reservation_id, usd("0.031"))
    assert (done.charged_nanos, done.released_nanos, done.overage_nanos) == (
        usd("0.031"),
        usd("0.009"),
        0,
    )
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.031"), 0)
    assert done.budgets[0].spent_nanos == usd("0.031")


async def test_commit_of_larger_actual_is_charged_and_reported_as_overage(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.04"))
    done = await commit(budgets, org, held.reservation_id, usd("0.05"))
    assert (done.charged_nanos, done.released_nanos, done.overage_nanos) == (
        usd("0.05"),
        0,
        usd("0.01"),
    )
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.05"), 0)


async def test_release_returns_the_whole_hold(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.40"))
    released = await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=held.reservation_id))
    assert released.released_nanos == usd("0.40")
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos, st.remaining_nanos) == (0, 0, usd("1"))
    again = await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=held.reservation_id))
    assert again.released_nanos == usd("0.40")
    assert (await status(admin, org, "cap")).reserved_nanos == 0


async def test_refund_is_capped_at_what_was_committed_and_idempotent(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.10"))
    await commit(budgets, org, held.reservation_id, usd("0.08"))

    async def refund(refund_id: str, amount: int) -> int:
        response = await budgets.Refund(
            pb.RefundRequest(
                org=org,
                reservation_id=held.reservation_id,
                refund_id=refund_id,
                amount_nanos=amount,
            )
        )
        return int(response.refunded_nanos)

    assert await refund("rf-1", usd("0.05")) == usd("0.05")
    assert await refund("rf-1", usd("0.05")) == usd("0.05")  # retry: same answer, no change
    assert (await status(admin, org, "cap")).spent_nanos == usd("0.03")
    assert await refund("rf-2", usd("0.05")) == usd("0.03")  # capped at what is left
    assert await refund("rf-3", usd("0.01")) == 0
    assert (await status(admin, org, "cap")).spent_nanos == 0
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await refund("rf-1", usd("0.02"))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "refund_id" in (conflict.value.details() or "")


async def test_refund_of_a_reservation_not_committed_is_refused(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    held = await reserve(budgets, org, usd("0.10"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await budgets.Refund(
            pb.RefundRequest(
                org=org, reservation_id=held.reservation_id, refund_id="rf", amount_nanos=1
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.10")


async def test_retried_reserve_and_commit_never_double_charge(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    reservation_id = rid()
    first = await reserve(budgets, org, usd("0.10"), reservation_id=reservation_id)
    for _ in range(3):
        again = await reserve(budgets, org, usd("0.10"), reservation_id=reservation_id)
        assert again == first
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.10")
    done = await commit(budgets, org, reservation_id, usd("0.07"))
    for _ in range(3):
        assert await commit(budgets, org, reservation_id, usd("0.07")) == done
    # A retried Reserve after the commit still answers the first answer and holds nothing.
    assert await reserve(budgets, org, usd("0.10"), reservation_id=reservation_id) == first
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.07"), 0)


async def test_reused_reservation_id_with_different_content_is_refused(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    reservation_id = rid()
    await reserve(budgets, org, usd("0.10"), reservation_id=reservation_id)
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await reserve(budgets, org, usd("0.20"), reservation_id=reservation_id)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "reservation_id" in (conflict.value.details() or "")
    await commit(budgets, org, reservation_id, usd("0.05"))
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await commit(budgets, org, reservation_id, usd("0.06"))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.05"), 0)


async def test_release_after_commit_and_commit_after_release_are_refused(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    committed = await reserve(budgets, org, usd("0.10"))
    await commit(budgets, org, committed.reservation_id, usd("0.10"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=committed.reservation_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    released = await reserve(budgets, org, usd("0.10"))
    await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=released.reservation_id))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await commit(budgets, org, released.reservation_id, usd("0.10"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.10"), 0)


async def test_unknown_reservation_is_not_found(budgets, org):
    for call in (
        budgets.Commit(pb.CommitRequest(org=org, reservation_id="nope", actual_nanos=1)),
        budgets.Release(pb.ReleaseRequest(org=org, reservation_id="nope")),
        budgets.Refund(
            pb.RefundRequest(org=org, reservation_id="nope", refund_id="x", amount_nanos=1)
        ),
        budgets.Extend(
            pb.ExtendRequest(org=org, reservation_id="nope", ttl=duration_pb2.Duration(seconds=10))
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (missing.value.details() or "")


async def test_reservation_in_an_org_without_budgets_is_admitted_and_settles(budgets, org):
    held = await reserve(budgets, org, usd("0.10"))
    assert list(held.budgets) == []
    done = await commit(budgets, org, held.reservation_id, usd("0.02"))
    assert done.charged_nanos == usd("0.02")


async def test_ended_reservation_answers_retries_for_at_least_a_day(app, budgets, org):
    held = await reserve(budgets, org, usd("0.10"))
    first = await commit(budgets, org, held.reservation_id, usd("0.10"))
    ttl_ms = await app.redis.pttl(keys.reservation(org, held.reservation_id))
    assert ttl_ms >= 24 * 3600 * 1000
    assert await commit(budgets, org, held.reservation_id, usd("0.10")) == first


async def test_retries_answer_until_the_retention_ends_then_never_charge_again(stack, org):
    """IDEMPOTENCY_RETENTION_SECONDS, shortened to see both sides of it."""
    short = await server.start(service_settings(stack, retention_seconds=2.0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{short.port}") as channel:
            stub = budget_pb2_grpc.BudgetServiceStub(channel)
            admin = budget_pb2_grpc.BudgetAdminServiceStub(channel)
            await upsert(admin, org, "cap", usd("1"))
            held = await reserve(stub, org, usd("0.10"))
            first = await commit(stub, org, held.reservation_id, usd("0.10"))
            await asyncio.sleep(1.0)  # within the retention: the first answer, no new charge
            assert await commit(stub, org, held.reservation_id, usd("0.10")) == first
            for _ in range(60):  # bounded: the record expires about 2 s after the commit
                if not await short.redis.exists(keys.reservation(org, held.reservation_id)):
                    break
                await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await commit(stub, org, held.reservation_id, usd("0.10"))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            assert (await status(admin, org, "cap")).spent_nanos == usd("0.10")
    finally:
        await short.stop()


async def test_zero_estimate_hold_commits_and_releases(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    free = await reserve(budgets, org, 0)
    released = await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=free.reservation_id))
    assert released.released_nanos == 0
    held = await reserve(budgets, org, 0)
    done = await commit(budgets, org, held.reservation_id, 5)
    assert (done.charged_nanos, done.overage_nanos) == (5, 5)
    assert await commit(budgets, org, held.reservation_id, 5) == done
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (5, 0)
