"""Reserve: all applicable budgets checked and held at once, exactly, under concurrency."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import CENT, error_info, quota_failure, reserve, status, upsert, usd


async def test_thousand_concurrent_reserves_admit_exactly_what_the_org_cap_allows(
    budgets, admin, org
):
    await upsert(admin, org, "org-cap", usd("1.00"))

    async def one() -> bool:
        try:
            await reserve(budgets, org, CENT)
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False

    results = await asyncio.gather(*(one() for _ in range(1000)))
    assert sum(results) == 100
    st = await status(admin, org, "org-cap")
    assert st.reserved_nanos == usd("1.00")
    assert st.remaining_nanos == 0


async def test_team_budget_refuses_while_org_has_room_and_refusal_names_it(budgets, admin, org):
    await upsert(admin, org, "org-cap", usd("100"))
    await upsert(admin, org, "team-search", usd("0.05"), selector={"team": "search"})
    await reserve(budgets, org, usd("0.04"), team="search")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.02"), team="search")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    violations = quota_failure(refused.value).violations
    assert [v.subject for v in violations] == ["team-search"]
    assert "remaining_nanos=10000000" in violations[0].description
    info = error_info(refused.value)
    assert info.reason == "BUDGET_EXCEEDED"
    assert info.metadata["budget_ids"] == "team-search"
    # Another team is only under the org cap, which has room.
    other = await reserve(budgets, org, usd("0.02"), team="ads")
    assert [b.budget_id for b in other.budgets] == ["org-cap"]
    # The refusal held nothing anywhere.
    assert (await status(admin, org, "org-cap")).reserved_nanos == usd("0.06")


async def test_refusal_names_every_refusing_budget(budgets, admin, org):
    await upsert(admin, org, "org-cap", usd("0.01"))
    await upsert(admin, org, "user-u1", usd("0.01"), selector={"user": "u1"})
    await upsert(admin, org, "openai", usd("5"), selector={"provider": "openai"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.02"), user="u1", provider="openai")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    subjects = sorted(v.subject for v in quota_failure(refused.value).violations)
    assert subjects == ["org-cap", "user-u1"]


async def test_budget_applies_only_when_selector_is_subset_of_subject(budgets, admin, org):
    await upsert(
        admin, org, "vk1-anthropic", usd("1"), selector={"project": "vk1", "provider": "anthropic"}
    )
    await upsert(admin, org, "tag-env-prod", usd("1"), selector={"tag:env": "prod"})
    held = await reserve(
        budgets, org, CENT, project="vk1", provider="anthropic", tags={"env": "prod"}
    )
    assert sorted(b.budget_id for b in held.budgets) == ["tag-env-prod", "vk1-anthropic"]
    held = await reserve(budgets, org, CENT, project="vk1", provider="openai", tags={"env": "dev"})
    assert list(held.budgets) == []


async def test_soft_budget_admits_over_its_limit_and_reports_it(budgets, admin, org):
    await upsert(admin, org, "soft", usd("0.01"), mode=pb.MODE_SOFT)
    await reserve(budgets, org, CENT)
    over = await reserve(budgets, org, CENT)
    (balance,) = over.budgets
    assert balance.mode == pb.MODE_SOFT
    assert balance.exceeded
    assert balance.remaining_nanos == -CENT


async def test_shadow_budget_admits_and_reports_what_hard_would_refuse(budgets, admin, org):
    await upsert(admin, org, "shadow", usd("0.01"), mode=pb.MODE_SHADOW)
    await upsert(admin, org, "hard", usd("1"))
    first = await reserve(budgets, org, CENT)
    assert not any(b.exceeded for b in first.budgets)
    second = await reserve(budgets, org, CENT)
    by_id = {b.budget_id: b for b in second.budgets}
    assert by_id["shadow"].exceeded and by_id["shadow"].mode == pb.MODE_SHADOW
    assert not by_id["hard"].exceeded


async def test_only_critical_priority_may_use_the_overdraft_band(budgets, admin, org):
    await upsert(admin, org, "capped", usd("0.10"), overdraft_nanos=usd("0.05"))
    await reserve(budgets, org, usd("0.10"))
    for priority in (pb.PRIORITY_UNSPECIFIED, pb.PRIORITY_NORMAL, pb.PRIORITY_HIGH):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reserve(budgets, org, usd("0.01"), priority=priority)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    held = await reserve(budgets, org, usd("0.05"), priority=pb.PRIORITY_CRITICAL)
    assert held.budgets[0].overdraft_remaining_nanos == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, 1, priority=pb.PRIORITY_CRITICAL)
    assert "remaining_nanos=0" in quota_failure(refused.value).violations[0].description


async def test_reserve_answers_balances_of_every_held_budget(app, budgets, admin, clock, org):
    await upsert(admin, org, "org-cap", usd("1"))
    before = clock.now_ms()
    held = await reserve(budgets, org, usd("0.25"))
    after = clock.now_ms()
    assert held.reserved_nanos == usd("0.25")
    (balance,) = held.budgets
    assert (
        balance.limit_nanos,
        balance.spent_nanos,
        balance.reserved_nanos,
        balance.remaining_nanos,
    ) == (usd("1"), 0, usd("0.25"), usd("0.75"))
    ttl_ms = int(app.settings.default_ttl_seconds * 1000)  # no ttl asked: the default
    assert before + ttl_ms <= held.expires_at.ToMilliseconds() <= after + ttl_ms


async def test_budget_limits_above_two_to_the_53_nanos_compare_exactly(budgets, admin, org):
    limit = 2**60 + 7  # far above where doubles stop being exact
    await upsert(admin, org, "huge", limit)
    await upsert(admin, org, "huge-team", 2**53 + 1, selector={"team": "t"})
    max_one = 10**15
    for _ in range(9):
        await reserve(budgets, org, max_one, team="t")
    # 9e15 + 7,199,254,740,993 would be over 2^53 + 1 only by exact arithmetic
    st = await status(admin, org, "huge-team")
    room = st.remaining_nanos
    assert room == 2**53 + 1 - 9 * max_one
    await reserve(budgets, org, room, team="t")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, 1, team="t")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await status(admin, org, "huge")).reserved_nanos == 2**53 + 1
