"""The price catalog in PostgreSQL: versions never rewritten, names resolved by clear rules."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from pricing_service import bundled
from pricing_service.catalog_repo import AmbiguousModel, CatalogRepository, UnknownModel
from pricing_service.prices import ModelPrice
from servicekit import db
from tests.conftest import Stack


@pytest.fixture(scope="session")
async def catalog(stack: Stack) -> AsyncIterator[CatalogRepository]:
    """The catalog schema on the run's PostgreSQL, loaded with the bundled catalog."""
    pool = await asyncpg.create_pool(stack.postgres.url, min_size=1, max_size=4)
    assert pool is not None
    await db.migrate(pool, "pricing_service", record_prefix="pricing_service/")
    repo = CatalogRepository(pool)
    for price in bundled.load():
        await repo.record(price, source=bundled.SOURCE)
    try:
        yield repo
    finally:
        await pool.close()


def test_bundled_catalog_covers_the_main_providers():
    models = bundled.load()
    assert len(models) >= 40
    providers = {m.provider for m in models}
    assert {"openai", "anthropic", "google", "mistral", "deepseek"} <= providers
    assert providers & {"together_ai", "groq", "bedrock"}
    names = [n for m in models for n in (m.model, *m.aliases)]
    assert len(names) == len(set(names)), "a name may mean one entry only"


@pytest.mark.parametrize(
    ("name", "provider", "expected"),
    [
        ("gpt-4o", "", ("openai", "gpt-4o")),
        ("openai/gpt-4o", "", ("openai", "gpt-4o")),
        ("gpt-4o-2024-08-06", "", ("openai", "gpt-4o")),
        ("claude-sonnet-4-5-20250929", "", ("anthropic", "claude-sonnet-4-5")),
        ("anthropic/claude-sonnet-4-5", "", ("anthropic", "claude-sonnet-4-5")),
        (
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "",
            ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ),
        ("gemini-2.5-pro", "google", ("google", "gemini-2.5-pro")),
    ],
)
async def test_names_resolve_to_the_right_entry(catalog, name, provider, expected):
    _, got_provider, got_model = await catalog.resolve(name, provider)
    assert (got_provider, got_model) == expected


async def test_unknown_model_is_an_error_that_says_how_to_add_a_price(catalog):
    with pytest.raises(UnknownModel) as unknown:
        await catalog.resolve("gpt-99-turbo")
    assert "gpt-99-turbo" in str(unknown.value)
    assert "UpsertPrice" in str(unknown.value)


async def test_same_name_from_two_providers_needs_the_provider(catalog):
    shared = ModelPrice(provider="hostA", model="shared-model", input=Decimal(1), output=Decimal(2))
    await catalog.record(shared, source="test")
    await catalog.record(dataclasses.replace(shared, provider="hostB"), source="test")
    with pytest.raises(AmbiguousModel, match="hostA, hostB"):
        await catalog.resolve("shared-model")
    assert (await catalog.resolve("shared-model", "hostB"))[1] == "hostB"


async def test_a_price_change_is_a_new_version_and_history_stays(catalog):
    model_id, _, _ = await catalog.resolve("gpt-4o-mini")
    before = await catalog.price_at(model_id)
    assert await catalog.record(before.price, source="test") is None  # unchanged: no version
    cheaper = dataclasses.replace(before.price, input=before.price.input / 2)
    start = datetime.now(UTC) + timedelta(milliseconds=5)
    changed = await catalog.record(cheaper, source="test", effective_from=start)
    assert changed is not None and changed.version > before.version
    await asyncio.sleep(0.02)  # past effective_from
    assert (await catalog.price_at(model_id)).price.input == cheaper.input
    old = await catalog.price_at(model_id, start - timedelta(milliseconds=1))
    assert old.price.input == before.price.input and old.version == before.version
    assert (await catalog.by_version(before.version)).price == before.price
    backlog = await catalog.changes_since(before.version)
    assert changed.version in [v.version for v in backlog]
