"""LiteLLM's price file imported exactly: the real 2026-07-24 catalog, costs checked to the nano."""

from __future__ import annotations

import hashlib
import json
import random
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from pricing_service.cost import Usage, cost_nanos
from pricing_service.litellm_source import (
    ImportResult,
    load_litellm_text,
    parse_litellm,
    validate_catalog,
)
from pricing_service.prices import ModelPrice

CATALOG = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "litellm_model_prices_2026-07-24.json"
)
D = Decimal


@pytest.fixture(scope="module")
def text() -> bytes:
    return CATALOG.read_bytes()


@pytest.fixture(scope="module")
def raw(text: bytes) -> dict[str, Any]:
    """The file as the test reads it on its own: every number an exact Decimal."""
    return json.loads(text, parse_float=Decimal)


@pytest.fixture(scope="module")
def catalog(text: bytes) -> ImportResult:
    return load_litellm_text(text)


def test_real_catalog_import_counts(catalog: ImportResult):
    assert catalog.total_entries == 2984
    assert len(catalog.models) == 2365
    assert catalog.skipped == {
        "sample_spec": 1,
        "no_provider": 1,  # fallback_generalizations: routing rules, not a model
        "no_mode": 8,  # fireworks-ai size buckets
        "no_token_prices": 113,
        "priced_in_other_units": 33,  # per second, per character, per session ...
        "missing_input_price": 3,
        "absurd_price": 16,  # per-token or per-1K prices read as per million
        "mode:image_generation": 209,
        "mode:audio_transcription": 62,
        "mode:image_edit": 31,
        "mode:realtime": 28,
        "mode:audio_speech": 27,
        "mode:rerank": 25,
        "mode:video_generation": 25,
        "mode:search": 18,
        "mode:ocr": 13,
        "mode:moderation": 5,
        "mode:vector_store": 1,
    }
    assert len(catalog.models) + sum(catalog.skipped.values()) == catalog.total_entries
    assert {price.mode for price in catalog.models.values()} == {
        "chat",
        "completion",
        "responses",
        "embedding",
    }
    assert "wandb/openai/gpt-oss-120b" in catalog.skipped_examples["absurd_price"]
    assert catalog.ignored_fields["search_context_cost_per_query"] > 100
    assert catalog.source_sha256 == hashlib.sha256(CATALOG.read_bytes()).hexdigest()
    assert validate_catalog(catalog, None) == []
    assert validate_catalog(catalog, len(catalog.models)) == []


def test_claude_sonnet_4_5_with_its_long_context_tier(catalog: ImportResult):
    price = catalog.models["claude-sonnet-4-5"]
    assert (price.provider, price.mode, price.aliases) == (
        "anthropic",
        "chat",
        ("anthropic/claude-sonnet-4-5",),
    )
    assert (price.input, price.output, price.cached_input) == (D("3"), D("15"), D("0.3"))
    assert (price.cache_write, price.cache_write_1h) == (D("3.75"), D("6"))
    assert [(t.threshold_tokens, t.input, t.output, t.cache_write_1h) for t in price.tiers] == [
        (200_000, D("6"), D("22.5"), D("12"))
    ]
    assert (price.max_input_tokens, price.max_output_tokens) == (200_000, 64_000)


def test_per_million_prices_are_exact_not_float_products(catalog: ImportResult):
    price = catalog.models["deepseek-chat"]
    # 2.8e-07 * 1e6 is 0.27999999999999997 in floats.
    assert price.input == D("0.28") and str(price.input) == "0.28"
    assert price.to_dict()["cached_input"] == "0.028"


def test_every_price_equals_the_files_number_times_a_million(
    catalog: ImportResult, raw: dict[str, Any]
):
    fields = {
        "input": "input_cost_per_token",
        "output": "output_cost_per_token",
        "cache_write": "cache_creation_input_token_cost",
        "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
        "reasoning": "output_cost_per_reasoning_token",
        "batch_input": "input_cost_per_token_batches",
        "batch_output": "output_cost_per_token_batches",
    }
    for name, price in catalog.models.items():
        entry = raw[name]
        for attr, key in fields.items():
            expected = None if entry.get(key) is None else D(entry[key]) * 10**6
            assert getattr(price, attr) == expected, (name, attr)


def test_cache_hit_name_used_when_the_standard_field_is_absent():
    data = {
        "m": {
            "litellm_provider": "novita",
            "mode": "chat",
            "input_cost_per_token": "2e-7",
            "output_cost_per_token": 1e-6,
            "input_cost_per_token_cache_hit": D("1E-8"),
        }
    }
    price = parse_litellm(data).models["m"]
    assert (price.input, price.output, price.cached_input) == (D("0.2"), D("1"), D("0.01"))


def test_priority_and_flex_variants_are_not_tiers(catalog: ImportResult):
    price = catalog.models["gpt-5.4"]
    assert [tier.threshold_tokens for tier in price.tiers] == [272_000]
    assert catalog.ignored_fields["input_cost_per_token_priority"] >= 100


def test_request_fee_kept_in_usd_per_request(catalog: ImportResult):
    price = catalog.models["perplexity/sonar-small-online"]
    assert price.request_fee == D("0.005")
    assert cost_nanos(price, Usage(input_tokens=10, output_tokens=1000)) == 5_000_000 + 280_000


def test_whole_number_limits_written_as_decimals_are_read(catalog: ImportResult):
    price = catalog.models["xai/grok-4-1-fast"]  # "max_input_tokens": 2000000.0 in the file
    assert price.max_input_tokens == 2_000_000
    assert price.aliases == ("grok-4-1-fast",)


def test_aliases_never_shadow_another_entry(catalog: ImportResult):
    # "deepseek-chat" is its own entry, so "deepseek/deepseek-chat" does not take it as alias.
    assert catalog.models["deepseek/deepseek-chat"].aliases == ()
    owners: dict[tuple[str, str], str] = {}
    for name, price in catalog.models.items():
        for alias in price.aliases:
            assert alias not in catalog.models
            assert owners.setdefault((price.provider, alias), name) == name


def test_parsing_floats_gives_the_same_catalog(text: bytes, catalog: ImportResult):
    # A caller that used plain json.loads still gets the numbers the file wrote.
    assert parse_litellm(json.loads(text)).models == catalog.models


def _tiers(entry: dict[str, Any]) -> list[int]:
    found = set()
    for key in entry:
        match = re.fullmatch(r"(input|output)_cost_per_token_above_(\d+)k_tokens", key)
        if match:
            found.add(int(match.group(2)) * 1000)
    return sorted(found)


def _expected_nanos(entry: dict[str, Any], usage: Usage) -> int:
    """The cost from the file's own per-token numbers, computed here independently."""

    def get(key: str) -> Decimal | None:
        value = entry.get(key)
        return None if value is None else D(value)

    suffix = ""
    for threshold in _tiers(entry):
        if usage.input_tokens > threshold:
            suffix = f"_above_{threshold // 1000}k_tokens"

    def tier_or_base(tier_key: str, base: Decimal | None) -> Decimal | None:
        tiered = get(tier_key) if suffix else None
        return tiered if tiered is not None else base

    input_rate = tier_or_base(f"input_cost_per_token{suffix}", get("input_cost_per_token"))
    output_rate = tier_or_base(f"output_cost_per_token{suffix}", get("output_cost_per_token"))
    cached = get("cache_read_input_token_cost")
    if cached is None:
        cached = get("input_cost_per_token_cache_hit")
    cached = tier_or_base(f"cache_read_input_token_cost{suffix}", cached)
    write = tier_or_base(
        f"cache_creation_input_token_cost{suffix}", get("cache_creation_input_token_cost")
    )
    write_1h = tier_or_base(
        f"cache_creation_input_token_cost_above_1hr{suffix}",
        get("cache_creation_input_token_cost_above_1hr"),
    )
    reasoning = get("output_cost_per_reasoning_token")
    assert input_rate is not None and output_rate is not None
    cached = input_rate if cached is None else cached
    write = input_rate if write is None else write
    write_1h = write if write_1h is None else write_1h
    reasoning = output_rate if reasoning is None else reasoning
    usd = (
        usage.uncached_input_tokens * input_rate
        + usage.cached_input_tokens * cached
        + usage.cache_write_tokens * write
        + usage.cache_write_1h_tokens * write_1h
        + (usage.output_tokens - usage.reasoning_tokens) * output_rate
        + usage.reasoning_tokens * reasoning
        + (get("input_cost_per_request") or 0)
    )
    return int((usd * 10**9).quantize(D(1), rounding=ROUND_HALF_UP))


def _usages(rng: random.Random, entry: dict[str, Any]) -> list[Usage]:
    sizes = [rng.randint(1, 5000), rng.randint(5000, 120_000)]
    sizes += [threshold + rng.randint(1, 50_000) for threshold in _tiers(entry)]
    usages = []
    for size in sizes:
        cached = rng.randint(0, size // 2)
        write = rng.randint(0, (size - cached) // 3)
        write_1h = rng.randint(0, (size - cached - write) // 3)
        output = rng.randint(0, 20_000)
        usages.append(
            Usage(
                input_tokens=size,
                cached_input_tokens=cached,
                cache_write_tokens=write,
                cache_write_1h_tokens=write_1h,
                output_tokens=output,
                reasoning_tokens=rng.randint(0, output),
            )
        )
    return usages


def test_costs_match_the_files_own_per_token_numbers(catalog: ImportResult, raw: dict[str, Any]):
    rng = random.Random(20260724)
    chat = sorted(name for name, price in catalog.models.items() if price.mode != "embedding")
    # Every entry with tiers, cache or reasoning prices, plus a random sample of the rest.
    special = [
        name
        for name in chat
        if catalog.models[name].tiers
        or catalog.models[name].cache_write_1h is not None
        or catalog.models[name].reasoning is not None
        or catalog.models[name].request_fee is not None
    ]
    names = sorted(set(special) | set(rng.sample(chat, 300)))
    assert len(names) > 400
    checked = 0
    for name in names:
        for usage in _usages(rng, raw[name]):
            assert cost_nanos(catalog.models[name], usage) == _expected_nanos(raw[name], usage), (
                name,
                usage,
            )
            checked += 1
    assert checked > 1000


def _entry(**fields: Any) -> dict[str, Any]:
    return {"litellm_provider": "p", "mode": "chat", **fields}


def test_unusable_entries_are_counted_by_reason_not_fatal():
    result = load_litellm_text(
        json.dumps(
            {
                "sample_spec": {"mode": "one of: chat, ..."},
                "good": _entry(input_cost_per_token="1e-6", output_cost_per_token="2e-6"),
                "free-local": _entry(input_cost_per_token=0, output_cost_per_token=0),
                "negative": _entry(input_cost_per_token=-1e-6, output_cost_per_token=1e-6),
                "per-token-as-per-million": _entry(
                    input_cost_per_token=0.015, output_cost_per_token=0.06
                ),
                "absurd-tier": _entry(
                    input_cost_per_token=1e-6,
                    output_cost_per_token=1e-6,
                    output_cost_per_token_above_200k_tokens=0.5,
                ),
                "no-prices": _entry(max_tokens=4096),
                "per-second": _entry(input_cost_per_second=0.01, output_cost_per_second=0.02),
                "zero-tokens-paid-images": _entry(
                    input_cost_per_token=0, output_cost_per_token=0, output_cost_per_image=0.04
                ),
                "no-output": _entry(input_cost_per_token=1e-6),
                "embedding": {
                    "litellm_provider": "p",
                    "mode": "embedding",
                    "input_cost_per_token": 2e-8,
                },
                "image": {"litellm_provider": "p", "mode": "image_generation"},
                "modeless": {"litellm_provider": "p", "input_cost_per_token": 1e-6},
                "text-price": _entry(input_cost_per_token="cheap", output_cost_per_token=1e-6),
                "bool-price": _entry(input_cost_per_token=True, output_cost_per_token=1e-6),
                "not-a-number": _entry(input_cost_per_token=1e-6, output_cost_per_token="NaN"),
                "list": [1, 2],
                "mode-list": {"litellm_provider": "p", "mode": ["chat"]},
            }
        ).replace('"NaN"', "NaN")
    )
    assert sorted(result.models) == ["embedding", "free-local", "good"]
    assert result.skipped == {
        "sample_spec": 1,
        "negative_price": 1,
        "absurd_price": 2,
        "no_token_prices": 1,
        "priced_in_other_units": 2,
        "missing_output_price": 1,
        "mode:image_generation": 1,
        "no_mode": 1,
        "bad_value": 4,
        "not_an_object": 1,
    }
    assert result.skipped_examples["absurd_price"] == ["per-token-as-per-million", "absurd-tier"]


def test_validate_rejects_a_catalog_that_lost_more_than_half(catalog: ImportResult):
    previous = len(catalog.models)
    kept = dict(list(catalog.models.items())[: previous // 2 - 1])
    problems = validate_catalog(ImportResult(models=kept), previous)
    assert len(problems) == 1 and "lost more than half" in problems[0]
    half = dict(list(catalog.models.items())[: (previous + 1) // 2])
    assert validate_catalog(ImportResult(models=half), previous) == []
    assert validate_catalog(ImportResult(), None) == ["the catalog has no usable model"]


def test_validate_rejects_a_catalog_with_a_negative_or_absurd_price(catalog: ImportResult):
    models = dict(catalog.models)
    gpt = models["gpt-4o"]
    models["gpt-4o"] = ModelPrice.from_dict({**gpt.to_dict(), "output": "-10"})
    problems = validate_catalog(ImportResult(models=models), len(catalog.models))
    assert problems == ["negative or absurd prices: gpt-4o: output is negative (-10)"]
    models["gpt-4o"] = ModelPrice.from_dict({**gpt.to_dict(), "input": "2500000"})
    (problem,) = validate_catalog(ImportResult(models=models), len(catalog.models))
    assert "gpt-4o: input = 2500000 is absurd" in problem


def test_validate_rejects_a_source_whose_prices_went_absurd_wholesale(catalog: ImportResult):
    # Many entries skipped for absurd prices means the units changed, not a few typos.
    result = ImportResult(models=dict(catalog.models), skipped={"absurd_price": 1000})
    (problem,) = validate_catalog(result, len(catalog.models))
    assert "units or format probably changed" in problem


def test_a_file_that_is_not_an_object_is_an_error():
    with pytest.raises(ValueError, match="JSON object"):
        load_litellm_text("[]")
