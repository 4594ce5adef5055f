"""Readiness: the budget service reports SERVING only once it can price, and a fresh process
loads the whole LiteLLM catalog (thousands of models) in a few stream events and queries."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budget_service import server
from budget_service.hotpath import keys
from budget_service.hotpath.price_table import PriceTable
from devstack import free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from genproto.pricing.v1 import pricing_pb2 as ppb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service import server as pricing_server
from pricing_service.catalog_repo import CatalogRepository
from tests.conftest import SHARED_DATA, Stack, service_settings
from tests.helpers import reserve, upsert, usd

LITELLM = SHARED_DATA / "litellm_model_prices_2026-07-24.json"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The names operators probe: the whole server and each service (pinned in the protos).
NAMES = ("", "budget.v1.BudgetService", "budget.v1.BudgetAdminService")
PER_EVENT = 1000  # the most versions one WatchPrices event carries (documented in the proto)


async def statuses(channel: grpc.aio.Channel, names: tuple[str, ...]) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(channel)
    out = {}
    for name in names:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        out[name] = reply.status
    return out


async def until_serving(channel: grpc.aio.Channel, seconds: float) -> dict[str, int]:
    """Health of every name once "" says SERVING (bounded poll), or the last answer."""
    seen: dict[str, int] = {}
    for _ in range(int(seconds / 0.05)):
        seen = await statuses(channel, NAMES)
        if seen[""] == SERVING:
            break
        await asyncio.sleep(0.05)
    return seen


async def test_health_is_not_serving_until_prices_load_then_serving_until_stop(
    stack: Stack, app: server.App, org: str
) -> None:
    # The config of an org is in PostgreSQL but Redis lost it: a SERVING service has it back.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        await upsert(budget_pb2_grpc.BudgetAdminServiceStub(ch), org, "cap", usd("1"))
    await app.redis.delete(keys.config(org))
    pricing_port = free_port()  # nothing listens there yet: the pricing service is down
    late = await server.start(service_settings(stack, pricing_addr=f"127.0.0.1:{pricing_port}"))
    pricing: pricing_server.PricingApp | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{late.port}") as ch:
            assert await statuses(ch, NAMES) == dict.fromkeys(NAMES, NOT_SERVING)
            # The process is alive: liveness probes must not restart a pod waiting for prices.
            assert await statuses(ch, ("liveness",)) == {"liveness": SERVING}
            await asyncio.sleep(1.5)  # a retry of the price stream has failed meanwhile
            assert (await statuses(ch, ("",)))[""] == NOT_SERVING
            assert not late.prices.ready.is_set()

            pricing = await pricing_server.start(
                service_settings(stack, pricing_addr=f"127.0.0.1:{pricing_port}")
            )
            assert await until_serving(ch, 30) == dict.fromkeys(NAMES, SERVING)
            assert late.prices.ready.is_set() and late.prices.version > 0
            assert await app.redis.hlen(keys.config(org)) > 0  # reconciled before serving

            # Shutdown: NOT_SERVING reaches a watcher before the server goes away.
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(late.stop())
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
            await stopping
    finally:
        await late.stop()
        if pricing is not None:
            await pricing.stop()


async def test_amount_reserves_work_while_the_service_waits_for_prices(
    stack: Stack, org: str
) -> None:
    """NOT_SERVING keeps traffic away; a caller that comes anyway gets honest answers."""
    late = await server.start(service_settings(stack, pricing_addr=f"127.0.0.1:{free_port()}"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{late.port}") as ch:
            assert (await statuses(ch, ("",)))[""] == NOT_SERVING
            budgets = budget_pb2_grpc.BudgetServiceStub(ch)
            await upsert(budget_pb2_grpc.BudgetAdminServiceStub(ch), org, "cap", usd("1"))
            held = await reserve(budgets, org, usd("0.10"))
            assert held.reserved_nanos == usd("0.10")
            with pytest.raises(grpc.aio.AioRpcError) as waiting:
                await budgets.Reserve(pb.ReserveRequest(
                    reservation_id=f"tok-{uuid.uuid4().hex}",
                    subject=pb.Subject(org=org, model="gpt-4o"),
                    usage=pb.Usage(input_tokens=10, output_tokens=10)))  # fmt: skip
            assert waiting.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await late.stop()


# -- the whole LiteLLM catalog ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def litellm_db(stack: Stack) -> AsyncIterator[str]:
    """A database of its own: thousands of LiteLLM names must not change other tests' prices."""
    name = f"litellm_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack.postgres.url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield stack.postgres.url.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture(scope="module")
async def litellm_pricing(
    _logging: None, stack: Stack, litellm_db: str
) -> AsyncIterator[pricing_server.PricingApp]:
    """A pricing service holding the bundled catalog plus the real LiteLLM price file."""
    settings = service_settings(stack, database_url=litellm_db, pricing_addr="127.0.0.1:0",
                                pricing_source_urls=str(LITELLM))  # fmt: skip
    running = await pricing_server.start(settings)
    try:
        yield running
    finally:
        await running.stop()


async def test_the_litellm_catalog_is_thousands_of_versions(
    litellm_pricing: pricing_server.PricingApp,
) -> None:
    """What the load tests below rely on: a catalog far bigger than one event."""
    assert await litellm_pricing.catalog.latest_version() > 2 * PER_EVENT


async def test_a_fresh_price_table_loads_the_whole_litellm_catalog_in_a_few_events(
    litellm_pricing: pricing_server.PricingApp,
) -> None:
    catalog = litellm_pricing.catalog
    rows = await catalog.pool.fetch(
        "SELECT v.version, m.provider, m.model FROM price_versions v"
        " JOIN price_models m ON m.id = v.model_id ORDER BY v.version"
    )
    table = PriceTable(f"127.0.0.1:{litellm_pricing.port}")
    table.start()
    try:
        assert await table.wait_ready(60)
        # At most PER_EVENT versions per event, then the caught_up marker: not one per model.
        assert table.events <= -(-len(rows) // PER_EVENT) + 1
        assert table.version == rows[-1]["version"]
        for row in rows:  # every version, under the right model
            price = table.by_version(row["version"]).price
            assert (price.provider, price.model) == (row["provider"], row["model"])
        assert table.load_seconds is not None
        # A LiteLLM-only model prices a reserve from the file's per-token numbers.
        entry = json.loads(LITELLM.read_text())["mistral/devstral-medium-2507"]
        per_token_in = Decimal(str(entry["input_cost_per_token"]))  # 4e-07 USD
        per_token_out = Decimal(str(entry["output_cost_per_token"]))  # 2e-06 USD
        expected = (1000 * per_token_in + 500 * per_token_out) * 10**9  # 400,000 + 1,000,000
        found = table.lookup("mistral/devstral-medium-2507")
        assert found.estimator is not None
        assert found.estimator(1000, 500) == int(expected) == 1_400_000
    finally:
        await table.stop()


async def test_the_backlog_is_read_with_one_query_per_page_of_versions(litellm_db: str,
        litellm_pricing: pricing_server.PricingApp) -> None:  # fmt: skip
    queries: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: queries.append(record.query))

    pool = await asyncpg.create_pool(litellm_db, min_size=1, max_size=1, init=log_queries)
    try:
        page = await CatalogRepository(pool).changes_since(0, PER_EVENT)
    finally:
        await pool.close()
    assert len(page) == PER_EVENT
    catalog_queries = [q for q in queries if "price_" in q]  # not the pool's own reset
    assert len(catalog_queries) == 1, catalog_queries[:3]
    assert all(v.price.aliases == tuple(sorted(v.price.aliases)) for v in page)
    assert any(v.price.aliases for v in page)


async def collect(stub: pricing_pb2_grpc.PricingServiceStub,
                  request: ppb.WatchPricesRequest) -> list[ppb.PriceEvent]:  # fmt: skip
    events = []
    async for event in stub.WatchPrices(request):
        events.append(event)
        if event.caught_up:
            break
    return events


async def test_batched_watch_sends_the_same_versions_as_one_per_event(
    litellm_pricing: pricing_server.PricingApp,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{litellm_pricing.port}") as ch:
        stub = pricing_pb2_grpc.PricingServiceStub(ch)  # type: ignore[no-untyped-call]
        single = await collect(stub, ppb.WatchPricesRequest(since_version=10))
        batched = await collect(
            stub, ppb.WatchPricesRequest(since_version=10, max_prices_per_event=700)
        )
        huge = await collect(
            stub, ppb.WatchPricesRequest(since_version=10, max_prices_per_event=50_000)
        )
    # Subscribers that do not ask for batches (gateways) see one version per event, as before.
    assert all(e.HasField("price") and not e.prices for e in single[:-1])
    one_by_one = [e.price for e in single[:-1]]
    assert len(one_by_one) > 2 * PER_EVENT and one_by_one[0].version == 11
    assert [len(e.prices) for e in batched[:-1]][:-1] == [700] * (len(batched) - 2)
    assert [p for e in batched[:-1] for p in e.prices] == one_by_one
    assert max(len(e.prices) for e in huge) == PER_EVENT  # capped
    assert [p for e in huge[:-1] for p in e.prices] == one_by_one
    for events in (single, batched, huge):
        assert events[-1].caught_up and not events[-1].HasField("price")


async def test_watch_refuses_a_negative_batch_size_naming_the_field(
    litellm_pricing: pricing_server.PricingApp,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{litellm_pricing.port}") as ch:
        stub = pricing_pb2_grpc.PricingServiceStub(ch)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect(stub, ppb.WatchPricesRequest(max_prices_per_event=-1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_prices_per_event" in (refused.value.details() or "")
