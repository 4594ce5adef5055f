"""Input bounds past the basic field checks: provider usage JSON, one Unicode form per value,
and the pricing service's own fields. Each refusal is INVALID_ARGUMENT and changes nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import timestamp_pb2

from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from genproto.budget.v1 import budget_pb2 as pb
from genproto.pricing.v1 import pricing_pb2 as ppb
from genproto.pricing.v1 import pricing_pb2_grpc
from tests.helpers import bad_field, reserve, rid, status, upsert, usd

INT64_MAX = 2**63 - 1
# "José" and "café" typed two ways: one precomposed é, or e and a combining acute accent.
JOSE_NFC, JOSE_NFD = "Jos\u00e9", "Jose\u0301"
CAFE_NFC, CAFE_NFD = "caf\u00e9", "cafe\u0301"


@pytest.fixture(scope="module")
async def pricing(pricing_app) -> AsyncIterator[pricing_pb2_grpc.PricingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pricing_app.port}") as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)


async def refused_with(call: object, field: str) -> str:
    """The details of the INVALID_ARGUMENT `call` must end in, naming `field`."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert bad_field(refused.value) == field
    return refused.value.details() or ""


# -- provider_usage_json -----------------------------------------------------------------------


def nested(depth: int) -> str:
    """A usage object whose extra field nests `depth` arrays deep."""
    return '{"prompt_tokens": 10, "completion_tokens": 5, "x": ' + "[" * depth + "]" * depth + "}"


BAD_USAGE_JSON = [
    (
        "over 64 KiB",
        json.dumps({"prompt_tokens": 10, "completion_tokens": 5, "pad": "x" * 70_000}),
        "MAX_USAGE_JSON_BYTES",
    ),
    ("nested 40 deep", nested(40), "nests deeper than 32"),
    ("nested 20,000 deep, within 64 KiB", nested(20_000), "nests deeper than 32"),
    (
        "a count of 2^63",
        json.dumps({"prompt_tokens": 2**63, "completion_tokens": 5}),
        "usage.prompt_tokens",
    ),
    (
        "a count of 5,000 digits",
        '{"prompt_tokens": ' + "9" * 5000 + ', "completion_tokens": 5}',
        "usage.prompt_tokens",
    ),
    (
        "a count of 1e30",
        '{"prompt_tokens": 1e30, "completion_tokens": 5}',
        "usage.prompt_tokens",
    ),
    (
        "counts whose sum passes int64",  # Anthropic's input is the sum of three counts
        json.dumps(
            {"input_tokens": INT64_MAX, "output_tokens": 5, "cache_read_input_tokens": INT64_MAX}
        ),
        "usage.input_tokens",
    ),
    (
        "a Gemini count of 2^64",
        json.dumps({"usageMetadata": {"promptTokenCount": 2**64}}),
        "usageMetadata.promptTokenCount",
    ),
]


async def test_bad_provider_usage_json_is_refused_and_the_hold_stays(budgets, admin, org):
    await upsert(admin, org, "cap", usd("100"))
    held = await budgets.Reserve(
        pb.ReserveRequest(
            reservation_id=rid(),
            subject=pb.Subject(org=org, model="gpt-4o"),
            usage=pb.Usage(input_tokens=1000, output_tokens=500),
        )
    )
    before = await status(admin, org, "cap")
    assert before.reserved_nanos == held.reserved_nanos > 0
    for case, text, named in BAD_USAGE_JSON:
        commit = budgets.Commit(
            pb.CommitRequest(org=org, reservation_id=held.reservation_id, provider_usage_json=text)
        )
        details = await refused_with(commit, "provider_usage_json")
        assert named in details, case
        assert len(details) < 1100, case
        assert await status(admin, org, "cap") == before, case
    done = await budgets.Commit(
        pb.CommitRequest(
            org=org,
            reservation_id=held.reservation_id,
            provider_usage_json=json.dumps({"prompt_tokens": 1000, "completion_tokens": 100}),
        )
    )
    assert done.usage.input_tokens == 1000 and done.charged_nanos > 0


# -- one Unicode form per value ----------------------------------------------------------------


async def test_one_user_is_one_budget_whichever_unicode_form_names_them(budgets, admin, org):
    saved = await upsert(admin, org, "per-user", usd("1"), selector={"user": JOSE_NFD})
    assert saved.selector["user"] == JOSE_NFC  # stored, and shown, in NFC
    first = await reserve(budgets, org, usd("0.10"), user=JOSE_NFC)
    second = await reserve(budgets, org, usd("0.20"), user=JOSE_NFD)
    assert [b.budget_id for b in first.budgets] == ["per-user"]
    assert [b.budget_id for b in second.budgets] == ["per-user"]
    assert (await status(admin, org, "per-user")).reserved_nanos == usd("0.30")


async def test_tag_names_and_values_match_in_either_unicode_form(budgets, admin, org):
    await upsert(admin, org, "cafe-tag", usd("1"), selector={f"tag:{CAFE_NFD}": JOSE_NFC})
    held = await reserve(budgets, org, usd("0.10"), tags={CAFE_NFC: JOSE_NFD})
    assert [b.budget_id for b in held.budgets] == ["cafe-tag"]
    listed = await admin.ListReservations(pb.ListReservationsRequest(org=org))
    [hold] = listed.reservations
    assert dict(hold.subject) == {f"tag:{CAFE_NFC}": JOSE_NFC}  # recorded in NFC


async def test_budget_stored_before_normalization_still_covers_its_user(app, budgets, admin, org):
    # As an older release stored it: the selector exactly as the caller typed it (NFD).
    old = pb.Budget(org=org, id="legacy", limit_nanos=usd("1"), selector={"user": JOSE_NFD},
                    period=pb.PERIOD_NONE, mode=pb.MODE_HARD, timezone="UTC",
                    alert_thresholds_percent=[50, 75, 90, 100])  # fmt: skip
    config = await BudgetRepository(app.pool).upsert(old, "test:old-release")
    await ConfigSync(app.engine.scripts, app.engine.cache.epoch).push(config, first_of_org=True)
    held = await reserve(budgets, org, usd("0.10"), user=JOSE_NFC)
    assert [b.budget_id for b in held.budgets] == ["legacy"]
    assert (await status(admin, org, "legacy")).reserved_nanos == usd("0.10")


async def test_report_tag_names_are_bounded_like_subjects(admin, org):
    report = pb.GetSpendReportRequest(org=org, group_by=["tag:" + "k" * 65])
    report.start_time.FromSeconds(0)
    report.end_time.FromSeconds(86_400)
    await refused_with(admin.GetSpendReport(report), "group_by")


# -- the pricing service -----------------------------------------------------------------------


def model_price(**fields: object) -> ppb.ModelPrice:
    values: dict[str, object] = {
        "provider": "bounds-test",
        "model": "bounds-model",
        "prices": ppb.Prices(input="1", output="2"),
    }
    values.update(fields)
    return ppb.ModelPrice(**values)  # type: ignore[arg-type]


BAD_PRICES = [
    ("a NUL in the model", model_price(model="bounds\x00model"), "price.model"),
    ("a model of 300 bytes", model_price(model="m" * 300), "price.model"),
    ("a NUL in an alias", model_price(aliases=["ok", "a\x00"]), "price.aliases[1]"),
    ("65 aliases", model_price(aliases=[f"alias-{i}" for i in range(65)]), "price.aliases"),
    (
        "a price of 200 digits",
        model_price(prices=ppb.Prices(input="0." + "1" * 200, output="2")),
        "price.prices.input",
    ),
    (
        "a price of 10^1000000",
        model_price(prices=ppb.Prices(input="1", output="1E+1000000")),
        "price.prices.output",
    ),
    (
        "a price of 10^-1000000",
        model_price(prices=ppb.Prices(input="1E-1000000", output="1")),
        "price.prices.input",
    ),
]


@pytest.mark.parametrize(("case", "price", "field"), BAD_PRICES, ids=[c[0] for c in BAD_PRICES])
async def test_bad_upsert_price_is_refused_and_records_nothing(
    pricing, pricing_app, case, price, field
):
    before = await pricing_app.catalog.latest_version()
    await refused_with(pricing.UpsertPrice(ppb.UpsertPriceRequest(price=price)), field)
    assert await pricing_app.catalog.latest_version() == before


async def test_pricing_lookups_refuse_what_the_catalog_cannot_hold(pricing):
    far = timestamp_pb2.Timestamp(seconds=2**62)
    for call, field in (
        (pricing.GetPrice(ppb.GetPriceRequest(model="gpt-4o", provider="open\x00ai")), "provider"),
        (pricing.GetPrice(ppb.GetPriceRequest(model="gpt-4o", provider="p" * 300)), "provider"),
        (pricing.GetPrice(ppb.GetPriceRequest(model="gpt-4o", at=far)), "at"),
        (pricing.ListModels(ppb.ListModelsRequest(provider="a\x00")), "provider"),
        (pricing.ListModels(ppb.ListModelsRequest(mode="chat\x00")), "mode"),
        (pricing.ListModels(ppb.ListModelsRequest(page_token="\u0663" * 4)), "page_token"),
        (
            pricing.ListModels(
                ppb.ListModelsRequest(page_token=base64.urlsafe_b64encode(b"a\x00b").decode())
            ),
            "page_token",
        ),
    ):
        await refused_with(call, field)
    found = await pricing.GetPrice(ppb.GetPriceRequest(model="gpt-4o"))
    assert found.model == "gpt-4o"
