"""Token-based Reserve and Commit: priced in process, exactly as EstimateCost prices them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from importlib.resources import files

import grpc
import pytest

from budget_service import server
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from genproto.pricing.v1 import pricing_pb2 as ppb
from genproto.pricing.v1 import pricing_pb2_grpc
from tests.conftest import service_settings
from tests.helpers import bad_field, rid, status, upsert, usd


@pytest.fixture(scope="session")
async def pricing(pricing_app) -> AsyncIterator[pricing_pb2_grpc.PricingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pricing_app.port}") as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)


async def reserve_tokens(budgets, org: str, model: str, input_tokens: int, max_output: int,
                         provider: str = "") -> pb.ReserveResponse:  # fmt: skip
    return await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid(), subject=pb.Subject(org=org, model=model, provider=provider),
        usage=pb.Usage(input_tokens=input_tokens, output_tokens=max_output)))  # fmt: skip


async def estimate(pricing, model: str, usage: pb.Usage) -> int:
    answer = await pricing.EstimateCost(ppb.EstimateCostRequest(model=model, usage=usage))
    return int(answer.cost_nanos)


def catalog_cost_nanos(model: str, tokens_by_kind: dict[str, int]) -> int:
    """Tokens x the bundled catalog's per-million price of each kind, by hand, in nano-USD."""
    catalog = json.loads((files("pricing_service") / "catalog" / "bundled.json").read_text())
    [entry] = [m for m in catalog["models"] if m["model"] == model]
    usd_times_million = sum(
        tokens * Decimal(entry["prices"][kind]) for kind, tokens in tokens_by_kind.items()
    )
    nanos = usd_times_million * 1000  # USD per million tokens x tokens / 1e6 x 1e9
    assert nanos == int(nanos)  # these prices need no rounding
    return int(nanos)


# (model, the provider's usage object, the Usage it means, its tokens split by price kind)
SHAPES = [
    (
        "gpt-4o",
        {"prompt_tokens": 1200, "completion_tokens": 300,
         "prompt_tokens_details": {"cached_tokens": 1024},
         "completion_tokens_details": {"reasoning_tokens": 0}},
        pb.Usage(input_tokens=1200, output_tokens=300, cached_input_tokens=1024),
        {"input": 1200 - 1024, "cached_input": 1024, "output": 300},
    ),
    (
        "claude-sonnet-4-5",
        {"input_tokens": 50, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200,
         "output_tokens": 400},
        pb.Usage(input_tokens=1250, output_tokens=400, cached_input_tokens=1000,
                 cache_write_tokens=200),
        {"input": 50, "cached_input": 1000, "cache_write": 200, "output": 400},
    ),
    (
        "gemini-2.5-pro",
        {"usageMetadata": {"promptTokenCount": 3000, "candidatesTokenCount": 500,
                           "cachedContentTokenCount": 1000, "thoughtsTokenCount": 250}},
        pb.Usage(input_tokens=3000, output_tokens=750, cached_input_tokens=1000,
                 reasoning_tokens=250),
        # Gemini sells no separate reasoning price: thoughts cost the output price.
        {"input": 2000, "cached_input": 1000, "output": 500 + 250},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("model", "raw", "usage", "tokens_by_kind"), SHAPES,
                         ids=[s[0] for s in SHAPES])  # fmt: skip
async def test_commit_of_provider_usage_charges_the_catalog_price_as_estimate_cost_does(
    app, budgets, admin, pricing, org, model, raw, usage, tokens_by_kind
):
    await upsert(admin, org, "cap", usd("100"))
    held = await reserve_tokens(budgets, org, model, usage.input_tokens, 4096)
    assert held.price_version > 0
    assert held.reserved_nanos > 0
    request = pb.CommitRequest(
        org=org, reservation_id=held.reservation_id, provider_usage_json=json.dumps(raw)
    )
    done = await budgets.Commit(request)
    expected = catalog_cost_nanos(model, tokens_by_kind)
    assert done.charged_nanos == expected > 0
    assert await estimate(pricing, model, usage) == expected  # the pricing service agrees
    assert done.usage == usage
    st = await status(admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (expected, 0)
    # The same usage sent as a Usage message is the same commit: idempotent.
    again = await budgets.Commit(pb.CommitRequest(
        org=org, reservation_id=held.reservation_id, usage=usage))  # fmt: skip
    assert again.charged_nanos == expected


async def test_token_reserve_holds_input_plus_max_output_at_the_output_rate(
    budgets, admin, pricing, org
):
    await upsert(admin, org, "cap", usd("100"))
    held = await reserve_tokens(budgets, org, "openai/gpt-4o", 1000, 800)
    price = await pricing.GetPrice(ppb.GetPriceRequest(model="gpt-4o"))
    per_million = 1000 * Decimal(price.prices.input) + 800 * Decimal(price.prices.output)
    assert held.reserved_nanos == int(per_million * 1000)


async def test_reservation_made_before_a_price_change_commits_at_its_old_price(
    app, budgets, admin, pricing, org
):
    await upsert(admin, org, "cap", usd("100"))
    usage = pb.Usage(input_tokens=10_000, output_tokens=2_000)
    held = await reserve_tokens(budgets, org, "gpt-4.1-nano", 10_000, 2_000)
    current = await pricing.GetPrice(ppb.GetPriceRequest(model="gpt-4.1-nano"))
    assert current.version == held.price_version
    # USD per million tokens x tokens / 1e6 x 1e9 nanos: by hand, from the catalog's numbers.
    old_cost = int((10_000 * Decimal(current.prices.input)
                    + 2_000 * Decimal(current.prices.output)) * 1000)  # fmt: skip
    dearer = ppb.ModelPrice()
    dearer.CopyFrom(current)
    dearer.prices.input = str(Decimal(current.prices.input) * 3)
    changed = await pricing.UpsertPrice(ppb.UpsertPriceRequest(price=dearer))
    for _ in range(100):  # the budget service's table follows WatchPrices (bounded wait)
        if app.prices.version >= changed.version:
            break
        await asyncio.sleep(0.02)
    assert app.prices.version >= changed.version
    done = await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                                 usage=usage))  # fmt: skip
    assert done.charged_nanos == old_cost
    later = await reserve_tokens(budgets, org, "gpt-4.1-nano", 10_000, 2_000)
    assert later.price_version == changed.version


async def test_unknown_model_is_refused_never_priced_at_zero(budgets, admin, org):
    await upsert(admin, org, "cap", usd("100"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve_tokens(budgets, org, "no-such-model-x", 10, 10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no-such-model-x" in (refused.value.details() or "")
    assert "UpsertPrice" in (refused.value.details() or "")
    assert (await status(admin, org, "cap")).reserved_nanos == 0


def fallback(input_usd_per_million: int, output_usd_per_million: int) -> pb.UnknownModelPrice:
    return pb.UnknownModelPrice(
        input_nanos_per_million=input_usd_per_million * 10**9,
        output_nanos_per_million=output_usd_per_million * 10**9,
    )


async def test_budget_opted_in_prices_unknown_models_at_the_highest_covering_default(
    stack, pricing_app, budgets, admin, org
):
    await upsert(admin, org, "cap", usd("100"), unknown_model_price=fallback(2, 8))
    await upsert(admin, org, "search", usd("100"), selector={"team": "search"},
                 unknown_model_price=fallback(1, 10))  # fmt: skip
    subject = pb.Subject(org=org, team="search", model="in-house-llm-7")
    held = await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid(), subject=subject,
        usage=pb.Usage(input_tokens=1000, output_tokens=500)))  # fmt: skip
    # the highest rates of the opted-in budgets: $2/M input (cap), $10/M output (search)
    assert held.reserved_nanos == 1000 * 2_000 + 500 * 10_000
    assert held.unknown_model_price_used and held.price_version == 0
    # a change of the default after the reserve does not reprice it; neither does the replica
    await upsert(admin, org, "cap", usd("100"), unknown_model_price=fallback(50, 50))
    other = await server.start(
        service_settings(stack, pricing_addr=f"127.0.0.1:{pricing_app.port}")
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as ch:
            done = await budget_pb2_grpc.BudgetServiceStub(ch).Commit(pb.CommitRequest(
                org=org, reservation_id=held.reservation_id,
                usage=pb.Usage(input_tokens=1000, cached_input_tokens=600, output_tokens=200,
                               reasoning_tokens=50)))  # fmt: skip
    finally:
        await other.stop()
    # cached input at the input rate, reasoning at the output rate
    assert done.charged_nanos == 1000 * 2_000 + 200 * 10_000
    assert (await status(admin, org, "search")).spent_nanos == done.charged_nanos
    assert (await status(admin, org, "cap")).reserved_nanos == 0


async def test_unknown_model_price_leaves_catalog_models_and_other_subjects_alone(
    budgets, admin, org
):
    await upsert(admin, org, "cap", usd("100"))
    await upsert(admin, org, "labs", usd("100"), selector={"team": "labs"},
                 unknown_model_price=fallback(1, 1))  # fmt: skip
    known = await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid(), subject=pb.Subject(org=org, team="labs", model="gpt-4o"),
        usage=pb.Usage(input_tokens=10, output_tokens=10)))  # fmt: skip
    assert known.price_version > 0 and not known.unknown_model_price_used
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # "labs" does not cover team "ops"
        await budgets.Reserve(pb.ReserveRequest(
            reservation_id=rid(), subject=pb.Subject(org=org, team="ops", model="in-house-llm-7"),
            usage=pb.Usage(input_tokens=10, output_tokens=10)))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown_model_price" in (refused.value.details() or "")


async def test_unknown_model_price_round_trips_and_is_validated(admin, org):
    saved = await upsert(admin, org, "cap", usd("1"), unknown_model_price=fallback(3, 15))
    got = await admin.GetBudget(pb.GetBudgetRequest(org=org, budget_id="cap"))
    assert got.unknown_model_price == saved.unknown_model_price == fallback(3, 15)
    cleared = await upsert(admin, org, "cap", usd("1"))
    assert not cleared.HasField("unknown_model_price")
    for bad, field in [
        (pb.UnknownModelPrice(), "budget.unknown_model_price"),
        (pb.UnknownModelPrice(input_nanos_per_million=-1, output_nanos_per_million=5),
         "budget.unknown_model_price.input_nanos_per_million"),
        (fallback(1, 5000), "budget.unknown_model_price.output_nanos_per_million"),
    ]:  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await upsert(admin, org, "cap", usd("1"), unknown_model_price=bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_field(refused.value) == field


async def test_usage_commit_of_an_amount_reservation_is_refused(budgets, admin, org):
    await upsert(admin, org, "cap", usd("100"))
    held = await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid(), subject=pb.Subject(org=org), amount_nanos=usd("0.10")))  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                              usage=pb.Usage(input_tokens=5)))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await status(admin, org, "cap")).reserved_nanos == usd("0.10")


async def test_bad_provider_usage_is_refused_naming_the_field(budgets, admin, org):
    await upsert(admin, org, "cap", usd("100"))
    held = await reserve_tokens(budgets, org, "gpt-4o", 10, 10)
    for bad in ("not json", "[1, 2]", json.dumps({"prompt_tokens": -3})):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                                  provider_usage_json=bad))  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "provider_usage_json" in (refused.value.details() or "")


async def test_commit_with_tokens_at_zero_cost_is_counted_as_a_warning(app, budgets, admin,
                                                                       pricing, org):  # fmt: skip
    await upsert(admin, org, "cap", usd("100"))
    free = ppb.ModelPrice(provider="selfhost", model="free-llm",
                          prices=ppb.Prices(input="0", output="0"))  # fmt: skip
    recorded = await pricing.UpsertPrice(ppb.UpsertPriceRequest(price=free))
    for _ in range(100):
        if app.prices.version >= recorded.version:
            break
        await asyncio.sleep(0.02)
    held = await reserve_tokens(budgets, org, "free-llm", 100, 100)
    before = app.budget_service.zero_cost_commits
    done = await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                                 usage=pb.Usage(input_tokens=100)))  # fmt: skip
    assert done.charged_nanos == 0
    assert app.budget_service.zero_cost_commits == before + 1


async def test_org_discount_applies_to_token_reserve_and_commit(app, budgets, admin, pricing,
                                                                org):  # fmt: skip
    await upsert(admin, org, "cap", usd("100"))
    usage = pb.Usage(input_tokens=100_000, output_tokens=10_000)
    list_price = await estimate(pricing, "gpt-4o", usage)
    before = await reserve_tokens(budgets, org, "gpt-4o", 100_000, 10_000)
    await pricing.SetPriceOverride(ppb.SetPriceOverrideRequest(price_override=ppb.PriceOverride(
        org=org, provider="openai", discount_percent="20")))  # fmt: skip
    discounted = (await pricing.EstimateCost(ppb.EstimateCostRequest(
        model="gpt-4o", usage=usage, org=org))).cost_nanos  # fmt: skip
    assert discounted == list_price * 8 // 10
    for _ in range(100):  # the change reaches the budget service by NOTIFY (bounded wait)
        held = await reserve_tokens(budgets, org, "gpt-4o", 100_000, 10_000)
        await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=held.reservation_id))
        if held.reserved_nanos < before.reserved_nanos:
            break
        await asyncio.sleep(0.02)
    assert held.reserved_nanos == before.reserved_nanos * 8 // 10
    done = await budgets.Commit(pb.CommitRequest(org=org, reservation_id=before.reservation_id,
                                                 usage=usage))  # fmt: skip
    assert done.charged_nanos == discounted
