"""What a hard budget guarantees, exactly, and how spend above a limit is reported.

A hard budget admits a hold only when the whole hold fits, and refuses any hold, a zero-amount
one included, once it has no room left. Spend can still pass the limit: a commit above its hold
(the call happened), a commit after its hold expired, a critical request in the overdraft. A
token Reserve answers the most output tokens its hold pays for, so a gateway can make "actual
<= hold" true by construction; every over-limit commit is reported in status and metrics.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import grpc
import pytest

from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import reserve, rid, status, upsert, usd
from tests.test_metrics import scrape, value

CATALOG = Path(__file__).resolve().parents[1] / "pricing_service" / "catalog" / "bundled.json"


def catalog_price(model: str) -> dict[str, object]:
    """The bundled catalog's entry for `model`, read from the file (not the code under test)."""
    entries = json.loads(CATALOG.read_text())["models"]
    return next(e for e in entries if e["model"] == model)


def nanos(tokens_times_usd_per_million: Decimal) -> int:
    """Tokens x USD per million tokens, in nano-USD, rounded half-up (x 1e9 / 1e6 = x 1000)."""
    return int((tokens_times_usd_per_million * 1000).to_integral_value(rounding=ROUND_HALF_UP))


async def test_zero_amount_reserve_is_refused_on_a_hard_budget_with_no_room_left(
    budgets, admin, org
):
    await upsert(admin, org, "cap", usd("0.10"))
    await reserve(budgets, org, usd("0.10"))
    before = await status(admin, org, "cap")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, 0)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await status(admin, org, "cap") == before


async def test_a_zero_limit_hard_budget_refuses_even_a_zero_amount(budgets, admin, org):
    await upsert(admin, org, "blocked", 0, selector={"team": "frozen"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, 0, team="frozen")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await reserve(budgets, org, 0, team="other")  # not covered: admitted


async def test_a_full_soft_budget_still_admits_a_zero_amount_and_flags_it(budgets, admin, org):
    await upsert(admin, org, "soft", usd("0.10"), mode=pb.MODE_SOFT)
    await reserve(budgets, org, usd("0.10"))
    held = await reserve(budgets, org, 0)
    assert held.reserved_nanos == 0


async def test_token_reserve_answers_the_output_tokens_its_hold_pays_for(budgets, admin, org):
    entry = catalog_price("gpt-4o")
    prices = entry["prices"]
    assert isinstance(prices, dict)
    input_price, output_price = Decimal(prices["input"]), Decimal(prices["output"])
    input_tokens, output_tokens = 1_234, 777
    hold = nanos(input_tokens * input_price + output_tokens * output_price)
    # by hand: the largest n whose cost fits the hold (at most the model's maximum output)
    most = output_tokens
    while nanos(input_tokens * input_price + (most + 1) * output_price) <= hold:
        most += 1
    assert most < int(entry["max_output_tokens"])  # type: ignore[call-overload]
    await upsert(admin, org, "cap", usd("100"))
    held = await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id=rid("tok"),
            subject=pb.Subject(org=org, model="gpt-4o"),
            usage=pb.Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        )
    )
    assert held.reserved_nanos == hold
    assert held.max_output_tokens == most
    # A call that uses exactly that many output tokens is charged within its hold ...
    done = await budgets.Commit(
        pb.CommitRequest(
            org=org,
            reservation_id=held.reservation_id,
            usage=pb.Usage(input_tokens=input_tokens, output_tokens=held.max_output_tokens),
        )
    )
    assert done.charged_nanos <= hold and done.overage_nanos == 0
    # ... and one more token is not.
    again = await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id=rid("tok"),
            subject=pb.Subject(org=org, model="gpt-4o"),
            usage=pb.Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        )
    )
    over = await budgets.Commit(
        pb.CommitRequest(
            org=org,
            reservation_id=again.reservation_id,
            usage=pb.Usage(input_tokens=input_tokens, output_tokens=again.max_output_tokens + 1),
        )
    )
    assert over.overage_nanos > 0


async def test_max_output_tokens_is_clamped_to_the_models_maximum(budgets, admin, org):
    entry = catalog_price("gpt-4o")
    cap = int(entry["max_output_tokens"])  # type: ignore[call-overload]
    await upsert(admin, org, "cap", usd("100"))
    held = await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id=rid("tok"),
            subject=pb.Subject(org=org, model="gpt-4o"),
            usage=pb.Usage(input_tokens=10, output_tokens=cap * 4),
        )
    )
    assert held.max_output_tokens == cap


async def test_amount_reserve_has_no_output_token_answer(budgets, admin, org):
    await upsert(admin, org, "cap", usd("1"))
    assert (await reserve(budgets, org, usd("0.01"))).max_output_tokens == 0


async def _commit(budgets, org: str, reservation_id: str, amount: int) -> pb.CommitResponse:
    response: pb.CommitResponse = await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=reservation_id, actual_nanos=amount)
    )
    return response


async def test_over_hold_and_late_commits_are_reported_as_overage(app, budgets, admin, clock, org):
    await upsert(admin, org, "cap", usd("1.00"))
    first = await reserve(budgets, org, usd("0.60"))
    await _commit(budgets, org, first.reservation_id, usd("0.90"))  # above its hold, in limit
    assert (await status(admin, org, "cap")).overage_nanos == 0
    second = await reserve(budgets, org, usd("0.10"))  # exactly the room left
    await _commit(budgets, org, second.reservation_id, usd("0.25"))  # 0.15 above the limit
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # no room: nothing more is admitted
        await reserve(budgets, org, 1)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    st = await status(admin, org, "cap")
    assert st.spent_nanos == usd("1.15")
    assert st.overage_nanos == usd("0.15")
    assert st.overage_commit_count == 1
    assert [
        (c.reservation_id, c.above_limit_nanos, c.late, c.above_hold)
        for c in st.recent_overage_commits
    ] == [(second.reservation_id, usd("0.15"), False, True)]

    # A late commit: reserved, the clock passes its expiry, then it is committed.
    await upsert(admin, org, "cap", usd("2.00"))
    held = await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id=rid("late"),
            subject=pb.Subject(org=org),
            amount_nanos=usd("0.80"),
            ttl={"seconds": 1},
        )
    )
    # the limit drops below what is spent and held, then the expired hold is committed
    await upsert(admin, org, "cap", usd("1.00"))
    try:
        clock.set_ms(held.expires_at.ToMilliseconds() + 1)
        done = await _commit(budgets, org, held.reservation_id, usd("0.05"))
    finally:
        clock.offset_ms = 0
    assert done.late
    st = await status(admin, org, "cap")
    assert st.overage_nanos == usd("0.20")
    assert st.overage_commit_count == 2
    assert [
        (c.reservation_id, c.above_limit_nanos, c.late, c.above_hold)
        for c in st.recent_overage_commits
    ] == [
        (held.reservation_id, usd("0.05"), True, False),
        (second.reservation_id, usd("0.15"), False, True),
    ]

    await app.utilization.refresh(app.redis, app.engine.cache, clock)
    samples = await asyncio.to_thread(scrape, app)
    assert value(samples, "budget_overage_nanos", org=org, budget="cap") == usd("0.20")
    assert value(samples, "budget_overage_commits", org=org, budget="cap") == 2


async def test_overage_record_belongs_to_its_period(app, budgets, admin, clock, org):
    await upsert(admin, org, "daily", usd("0.10"), period=pb.PERIOD_DAY)
    held = await reserve(budgets, org, usd("0.10"))
    await _commit(budgets, org, held.reservation_id, usd("0.30"))
    assert (await status(admin, org, "daily")).overage_nanos == usd("0.20")
    try:
        clock.set_ms(int(time.time() * 1000) + 86_400_000)  # the next day
        st = await status(admin, org, "daily")
        assert (st.spent_nanos, st.overage_nanos, st.overage_commit_count) == (0, 0, 0)
        again = await reserve(budgets, org, usd("0.10"))
        await _commit(budgets, org, again.reservation_id, usd("0.11"))
        st = await status(admin, org, "daily")
    finally:
        clock.offset_ms = 0
    assert (st.overage_nanos, st.overage_commit_count) == (usd("0.01"), 1)
    assert [c.reservation_id for c in st.recent_overage_commits] == [again.reservation_id]
