"""The budget service's in-process price table: names, versions, scheduled changes."""

from __future__ import annotations

import pytest

from budget_service.hotpath.price_table import PriceTable
from genproto.pricing.v1 import pricing_pb2 as ppb
from servicekit.errors import InvalidArgument


def version(number: int, input_price: str, effective_ms: int) -> ppb.ModelPrice:
    message = ppb.ModelPrice(
        provider="openai", model="gpt-x", aliases=["gpt-x-2026-01-01"], version=number,
        prices=ppb.Prices(input=input_price, output="1"),
    )  # fmt: skip
    message.effective_from.FromMilliseconds(effective_ms)
    return message


def loaded(*versions: ppb.ModelPrice) -> PriceTable:
    table = PriceTable("127.0.0.1:1")
    for v in versions:
        table.apply(v)
    table.ready.set()
    return table


def test_a_scheduled_price_takes_over_at_its_instant_even_after_a_cached_lookup():
    table = loaded(version(1, "2", 1_000), version(2, "3", 5_000))
    assert table.lookup("gpt-x", now_ms=4_999).version == 1  # cached until 5,000
    assert table.lookup("openai/gpt-x-2026-01-01", now_ms=4_999).version == 1
    assert table.lookup("gpt-x", now_ms=5_000).version == 2
    assert table.by_version(1).price.input == 2


def test_a_new_version_replaces_a_cached_lookup():
    table = loaded(version(1, "2", 1_000))
    assert table.lookup("gpt-x", now_ms=2_000).version == 1
    table.apply(version(3, "4", 1_500))
    assert table.lookup("gpt-x", now_ms=2_000).version == 3


def test_unknown_model_names_the_field_and_the_fix():
    table = loaded(version(1, "2", 1_000))
    with pytest.raises(InvalidArgument) as unknown:
        table.lookup("gpt-y", now_ms=2_000)
    assert unknown.value.field == "subject.model" and "UpsertPrice" in unknown.value.message
