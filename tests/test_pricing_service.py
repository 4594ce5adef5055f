"""The pricing service over gRPC: prices by name and instant, exact estimates, live changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from genproto.budget.v1 import budget_pb2
from genproto.pricing.v1 import pricing_pb2 as pb
from genproto.pricing.v1 import pricing_pb2_grpc


@pytest.fixture(scope="session")
async def pricing(pricing_app) -> AsyncIterator[pricing_pb2_grpc.PricingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pricing_app.port}") as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)


async def test_get_price_resolves_prefixed_and_dated_names(pricing):
    for name in ("gpt-4o", "openai/gpt-4o", "gpt-4o-2024-08-06"):
        price = await pricing.GetPrice(pb.GetPriceRequest(model=name))
        assert (price.provider, price.model) == ("openai", "gpt-4o")
        assert Decimal(price.prices.input) == Decimal("2.50")
        assert Decimal(price.prices.cached_input) == Decimal("1.25")
        assert price.version > 0 and price.source == "bundled"


async def test_unknown_model_is_not_found_and_says_how_to_add_it(pricing):
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await pricing.GetPrice(pb.GetPriceRequest(model="made-up-model-9"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "made-up-model-9" in (missing.value.details() or "")
    assert "UpsertPrice" in (missing.value.details() or "")


async def test_estimate_bills_each_token_kind_at_its_rate_exactly(pricing):
    price = await pricing.GetPrice(pb.GetPriceRequest(model="claude-sonnet-4-5"))
    p = price.prices
    usage = budget_pb2.Usage(input_tokens=12_345, cached_input_tokens=4_000,
                             cache_write_tokens=1_000, output_tokens=777)  # fmt: skip
    got = await pricing.EstimateCost(pb.EstimateCostRequest(model="claude-sonnet-4-5", usage=usage))
    per_million = (
        (12_345 - 4_000 - 1_000) * Decimal(p.input)
        + 4_000 * Decimal(p.cached_input)
        + 1_000 * Decimal(p.cache_write)
        + 777 * Decimal(p.output)
    )
    expected = int((per_million * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert got.cost_nanos == expected
    assert got.price_version == price.version


async def test_inconsistent_usage_is_refused_naming_the_field(pricing):
    usage = budget_pb2.Usage(input_tokens=10, cached_input_tokens=20)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await pricing.EstimateCost(pb.EstimateCostRequest(model="gpt-4o", usage=usage))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "usage" in (bad.value.details() or "")


async def test_upsert_is_a_new_version_watchers_see_at_once_and_history_stays(pricing):
    before = await pricing.GetPrice(pb.GetPriceRequest(model="gpt-4.1-mini"))
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    watch = pricing.WatchPrices(pb.WatchPricesRequest(since_version=before.version))
    seen: list[pb.PriceEvent] = []

    async def until_caught_up() -> None:
        async for event in watch:
            seen.append(event)
            if event.caught_up:
                return

    await asyncio.wait_for(until_caught_up(), 10)
    changed = pb.ModelPrice()
    changed.CopyFrom(before)
    changed.prices.input = str(Decimal(before.prices.input) * 2)
    await asyncio.sleep(0.01)
    after = await pricing.UpsertPrice(pb.UpsertPriceRequest(price=changed))
    assert after.version > before.version
    assert after.source.startswith("admin:")

    async def next_price() -> pb.PriceEvent:
        async for event in watch:
            if event.HasField("price"):
                return event
        raise AssertionError("stream ended")

    event = await asyncio.wait_for(next_price(), 1.0)  # live, within a second
    assert event.price.version == after.version
    watch.cancel()
    old = await pricing.GetPrice(pb.GetPriceRequest(model="gpt-4.1-mini", at=stamp))
    assert old.version == before.version and old.prices.input == before.prices.input


async def test_list_models_pages_by_provider(pricing):
    seen: list[str] = []
    token = ""
    for _ in range(20):
        page = await pricing.ListModels(
            pb.ListModelsRequest(provider="anthropic", page_size=4, page_token=token)
        )
        seen += [m.model for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert "claude-sonnet-4-5" in seen and len(seen) == len(set(seen)) >= 5
    assert all(m.startswith("claude") for m in seen)
