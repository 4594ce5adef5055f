"""Per-org price overrides: discounts and explicit prices change EstimateCost exactly, the most
specific override wins, other orgs are unaffected, and bad input names its field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal

import grpc
import pytest
from google.rpc import error_details_pb2

from genproto.budget.v1 import budget_pb2
from genproto.pricing.v1 import pricing_pb2 as pb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service import overrides
from pricing_service import server as pricing_server
from pricing_service.cost import Usage, cost_nanos
from pricing_service.overrides import PriceOverride
from pricing_service.overrides_repo import OverrideRepository
from pricing_service.prices import ModelPrice, PriceTier
from tests.conftest import Stack, service_settings
from tests.helpers import rich_status

D = Decimal
USAGE = budget_pb2.Usage(input_tokens=12_345, cached_input_tokens=4_000, output_tokens=777)


@pytest.fixture(scope="module")
async def app(_logging: None, stack: Stack) -> AsyncIterator[pricing_server.PricingApp]:
    running = await pricing_server.start(service_settings(stack, pricing_addr="127.0.0.1:0"))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="module")
async def pricing(
    app: pricing_server.PricingApp,
) -> AsyncIterator[pricing_pb2_grpc.PricingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)


def nanos(per_million: Decimal) -> int:
    return int((per_million * 1000).quantize(D(1), rounding=ROUND_HALF_UP))


def list_cost(price: pb.ModelPrice, usage: budget_pb2.Usage = USAGE) -> Decimal:
    """USD x 1e6 of USAGE (no cache writes, no reasoning) at a price's list prices."""
    p = price.prices
    return (
        (usage.input_tokens - usage.cached_input_tokens) * D(p.input)
        + usage.cached_input_tokens * D(p.cached_input or p.input)
        + usage.output_tokens * D(p.output)
    )


async def estimate(pricing, model: str, org: str = "", **kw) -> pb.EstimateCostResponse:
    response: pb.EstimateCostResponse = await pricing.EstimateCost(
        pb.EstimateCostRequest(model=model, usage=kw.pop("usage", USAGE), org=org, **kw)
    )
    return response


async def set_override(pricing, org: str, **fields) -> pb.PriceOverride:
    result: pb.PriceOverride = await pricing.SetPriceOverride(
        pb.SetPriceOverrideRequest(price_override=pb.PriceOverride(org=org, **fields)),
        metadata=(("x-actor", "finance-bot"),),
    )
    return result


async def test_an_org_wide_discount_scales_every_charge_exactly(pricing, org):
    price = await pricing.GetPrice(pb.GetPriceRequest(model="claude-sonnet-4-5"))
    stored = await set_override(pricing, org, discount_percent="12.5")
    assert (stored.org, stored.provider, stored.model) == (org, "", "")
    assert stored.discount_percent == "12.5" and stored.updated_by == "finance-bot"
    got = await estimate(pricing, "claude-sonnet-4-5", org)
    assert got.override_applied and got.price_version == price.version
    assert got.cost_nanos == nanos(list_cost(price) * D("0.875"))
    plain = await estimate(pricing, "claude-sonnet-4-5")
    assert not plain.override_applied and plain.cost_nanos == nanos(list_cost(price))


async def test_a_discount_applies_to_long_context_tiers_and_batch_prices(pricing, org):
    price = await pricing.GetPrice(pb.GetPriceRequest(model="gemini-2.5-pro"))
    tier = price.prices.tiers[0]
    await set_override(pricing, org, provider="google", discount_percent="33.333")
    big = budget_pb2.Usage(input_tokens=tier.above_input_tokens + 1, output_tokens=1_001)
    got = await estimate(pricing, "gemini-2.5-pro", org, usage=big)
    full = big.input_tokens * D(tier.input) + big.output_tokens * D(tier.output)
    assert got.cost_nanos == nanos(full * D("0.66667"))
    batch = await estimate(pricing, "gemini-2.5-pro", org, batch=True)
    full_batch = (
        (USAGE.input_tokens - USAGE.cached_input_tokens) * D(price.prices.batch_input)
        + USAGE.cached_input_tokens * D(price.prices.cached_input)
        + USAGE.output_tokens * D(price.prices.batch_output)
    )
    assert batch.cost_nanos == nanos(full_batch * D("0.66667"))


async def test_the_most_specific_override_wins(pricing, org):
    gpt4o = await pricing.GetPrice(pb.GetPriceRequest(model="gpt-4o"))
    mini = await pricing.GetPrice(pb.GetPriceRequest(model="gpt-4o-mini"))
    claude = await pricing.GetPrice(pb.GetPriceRequest(model="claude-sonnet-4-5"))
    await set_override(pricing, org, discount_percent="10")
    await set_override(pricing, org, provider="openai", discount_percent="20")
    stored = await set_override(
        pricing,
        org,
        model="gpt-4o-2024-08-06",  # an alias: stored as the catalog entry's own names
        prices=pb.Prices(input="1", output="4", cached_input="0.5"),
    )
    assert (stored.provider, stored.model) == ("openai", "gpt-4o")
    assert stored.WhichOneof("kind") == "prices" and stored.prices.input == "1"

    explicit = await estimate(pricing, "openai/gpt-4o", org)
    assert explicit.override_applied
    assert explicit.cost_nanos == nanos(8_345 * D(1) + 4_000 * D("0.5") + 777 * D(4))
    assert explicit.price_version == gpt4o.version  # the catalog version it was based on
    provider_wide = await estimate(pricing, "gpt-4o-mini", org)
    assert provider_wide.cost_nanos == nanos(list_cost(mini) * D("0.8"))
    org_wide = await estimate(pricing, "claude-sonnet-4-5", org)
    assert org_wide.cost_nanos == nanos(list_cost(claude) * D("0.9"))

    listed = await pricing.ListPriceOverrides(pb.ListPriceOverridesRequest(org=org))
    assert [(o.provider, o.model) for o in listed.price_overrides] == [
        ("", ""),
        ("openai", ""),
        ("openai", "gpt-4o"),
    ]
    only = await pricing.ListPriceOverrides(
        pb.ListPriceOverridesRequest(org=org, provider="openai", model="gpt-4o")
    )
    assert len(only.price_overrides) == 1

    await pricing.DeletePriceOverride(pb.DeletePriceOverrideRequest(org=org, model="gpt-4o"))
    fallback = await estimate(pricing, "gpt-4o", org)
    assert fallback.cost_nanos == nanos(list_cost(gpt4o) * D("0.8"))
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await pricing.DeletePriceOverride(pb.DeletePriceOverrideRequest(org=org, model="gpt-4o"))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


async def test_setting_again_replaces_and_other_orgs_are_unaffected(pricing, org):
    other = org + "-other"
    price = await pricing.GetPrice(pb.GetPriceRequest(model="gpt-4o"))
    await set_override(pricing, org, provider="openai", discount_percent="50")
    await set_override(pricing, org, provider="openai", discount_percent="100")
    assert (await estimate(pricing, "gpt-4o", org)).cost_nanos == 0
    theirs = await estimate(pricing, "gpt-4o", other)
    assert not theirs.override_applied and theirs.cost_nanos == nanos(list_cost(price))
    listed = await pricing.ListPriceOverrides(pb.ListPriceOverridesRequest(org=org))
    assert [o.discount_percent for o in listed.price_overrides] == ["100"]


async def test_the_repository_and_apply_price_in_process(app, pricing, org):
    """What the budget service calls without gRPC: load an org's overrides, pick, apply."""
    await set_override(pricing, org, provider="anthropic", discount_percent="15")
    loaded = await OverrideRepository(app.pool).for_org(org)
    assert [(o.provider, o.discount_percent) for o in loaded] == [("anthropic", D(15))]
    version = await app.catalog.price_at((await app.catalog.resolve("claude-sonnet-4-5"))[0])
    usage = Usage(input_tokens=12_345, cached_input_tokens=4_000, output_tokens=777)
    mine = overrides.price_for(version.price, loaded)
    got = await estimate(pricing, "claude-sonnet-4-5", org)
    assert cost_nanos(mine, usage) == got.cost_nanos


def test_apply_discounts_every_price_exactly_request_fee_and_tiers_included():
    price = ModelPrice(
        provider="p", model="m", input=D("2.5"), output=D(10), cached_input=D("0.25"),
        request_fee=D("0.01"), batch_input=D("1.25"),
        tiers=(PriceTier(threshold_tokens=200_000, input=D(5), output=D(15)),),
    )  # fmt: skip
    cheaper = overrides.apply(price, PriceOverride("o", discount_percent=D("12.5")))
    assert (cheaper.input, cheaper.output, cheaper.cached_input) == (
        D("2.1875"), D("8.75"), D("0.21875"))  # fmt: skip
    assert (cheaper.request_fee, cheaper.batch_input) == (D("0.00875"), D("1.09375"))
    assert (cheaper.tiers[0].input, cheaper.tiers[0].output) == (D("4.375"), D("13.125"))
    assert cheaper.cache_write is None and (cheaper.provider, cheaper.model) == ("p", "m")
    assert cost_nanos(cheaper, Usage(input_tokens=1, output_tokens=1)) == 8_750_000 + 10_938
    explicit = ModelPrice(provider="p", model="m", input=D(1), output=D(2))
    replaced = overrides.apply(price, PriceOverride("o", "p", "m", prices=explicit))
    assert (replaced.input, replaced.request_fee, replaced.tiers) == (D(1), None, ())
    assert overrides.most_specific(
        [PriceOverride("o", discount_percent=D(1)), PriceOverride("o", "q", discount_percent=D(2))],
        "p", "m",
    ) == PriceOverride("o", discount_percent=D(1))  # fmt: skip
    with pytest.raises(ValueError, match="does not cover"):
        overrides.apply(price, PriceOverride("o", "q", discount_percent=D(1)))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"discount_percent": "10"}, "price_override.org"),
        ({"org": "bad org!", "discount_percent": "10"}, "price_override.org"),
        ({"org": "{o}"}, "price_override"),
        ({"org": "{o}", "discount_percent": "150"}, "price_override.discount_percent"),
        ({"org": "{o}", "discount_percent": "-1"}, "price_override.discount_percent"),
        ({"org": "{o}", "discount_percent": "ten"}, "price_override.discount_percent"),
        ({"org": "{o}", "discount_percent": "NaN"}, "price_override.discount_percent"),
        ({"org": "{o}", "discount_percent": "1.0000001"}, "price_override.discount_percent"),
        ({"org": "{o}", "prices": pb.Prices(input="1", output="2")}, "price_override.model"),
        ({"org": "{o}", "model": "made-up-model-9", "discount_percent": "5"},
         "price_override.model"),
        ({"org": "{o}", "provider": "nosuchprovider", "discount_percent": "5"},
         "price_override.provider"),
        ({"org": "{o}", "model": "gpt-4o", "prices": pb.Prices(input="-1", output="2")},
         "price_override.prices.input"),
        ({"org": "{o}", "model": "gpt-4o", "prices": pb.Prices(input="1")},
         "price_override.prices"),
        ({"org": "{o}", "model": "gpt-4o", "prices": pb.Prices(input="1", output="5000")},
         "price_override.prices"),
    ],
)  # fmt: skip
async def test_bad_overrides_are_refused_naming_the_field(pricing, org, fields, field):
    if fields.get("org") == "{o}":
        fields = {**fields, "org": org}
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await set_override(pricing, **{"org": "", **fields})
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad.value.details()
    violations = []
    for detail in rich_status(bad.value).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            violations += [v.field for v in request.field_violations]
    assert violations == [field], bad.value.details()
    listed = await pricing.ListPriceOverrides(pb.ListPriceOverridesRequest(org=org))
    assert not listed.price_overrides  # nothing stored


async def test_estimate_refuses_a_bad_org_and_list_needs_one(pricing):
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await estimate(pricing, "gpt-4o", "no spaces allowed")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad.value.details() or "").startswith("org:")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await pricing.ListPriceOverrides(pb.ListPriceOverridesRequest())
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
