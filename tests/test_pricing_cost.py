"""Exact costs in nano-USD: every token kind at its own rate, tiers, fees, one rounding."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing_service.cost import Usage, cost_nanos, reserve_estimate_nanos
from pricing_service.prices import ModelPrice, PriceTier, price_problems

D = Decimal

GPT_4O = ModelPrice(
    provider="openai",
    model="gpt-4o",
    input=D("2.50"),
    output=D("10.00"),
    cached_input=D("1.25"),
    batch_input=D("1.25"),
    batch_output=D("5.00"),
    max_output_tokens=16384,
)
# Claude Sonnet 4.5 with its long-context tier, as Anthropic lists it.
SONNET = ModelPrice(
    provider="anthropic",
    model="claude-sonnet-4-5",
    input=D("3"),
    output=D("15"),
    cached_input=D("0.30"),
    cache_write=D("3.75"),
    cache_write_1h=D("6"),
    tiers=(
        PriceTier(
            threshold_tokens=200_000,
            input=D("6"),
            output=D("22.50"),
            cached_input=D("0.60"),
            cache_write=D("7.50"),
            cache_write_1h=D("12"),
        ),
    ),
)


def test_plain_input_and_output():
    # 1000 x $2.50/M + 500 x $10/M = $0.0025 + $0.005
    assert cost_nanos(GPT_4O, Usage(input_tokens=1000, output_tokens=500)) == 7_500_000


def test_cached_reads_cost_the_cached_rate_not_the_input_rate():
    # 600 uncached x 2.50 + 400 cached x 1.25 + 500 x 10 = 7000 $/M-units = $0.007
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=500)
    assert cost_nanos(GPT_4O, usage) == 7_000_000


def test_cached_reads_without_a_cached_price_cost_the_input_rate():
    price = ModelPrice(provider="p", model="m", input=D("2"), output=D("8"))
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=0)
    assert cost_nanos(price, usage) == 2_000_000


def test_cache_writes_5m_and_1h_each_at_their_rate():
    # 100 x 3 + 2000 x 0.30 + 1000 x 3.75 + 500 x 6 + 200 x 15
    # = 300 + 600 + 3750 + 3000 + 3000 = 10650 -> $0.01065
    usage = Usage(
        input_tokens=3600,
        cached_input_tokens=2000,
        cache_write_tokens=1000,
        cache_write_1h_tokens=500,
        output_tokens=200,
    )
    assert cost_nanos(SONNET, usage) == 10_650_000


def test_cache_writes_without_prices_fall_back_to_input_and_1h_to_5m():
    price = ModelPrice(provider="p", model="m", input=D("2"), output=D("8"), cache_write=D("3"))
    # 1h writes at the 5-minute price: 100 x 2 + 100 x 3 + 100 x 3 = 800
    usage = Usage(input_tokens=300, cache_write_tokens=100, cache_write_1h_tokens=100)
    assert cost_nanos(price, usage) == 800_000
    bare = ModelPrice(provider="p", model="m", input=D("2"), output=D("8"))
    assert cost_nanos(bare, usage) == 600_000


def test_reasoning_tokens_at_the_reasoning_rate_when_set():
    price = ModelPrice(provider="p", model="m", input=D("1"), output=D("4"), reasoning=D("3.5"))
    # 100 x 1 + 400 x 4 + 600 x 3.5 = 100 + 1600 + 2100 = 3800
    usage = Usage(input_tokens=100, output_tokens=1000, reasoning_tokens=600)
    assert cost_nanos(price, usage) == 3_800_000


def test_reasoning_tokens_without_a_reasoning_rate_cost_the_output_rate():
    price = ModelPrice(provider="p", model="m", input=D("1"), output=D("4"))
    usage = Usage(input_tokens=100, output_tokens=1000, reasoning_tokens=600)
    assert cost_nanos(price, usage) == 4_100_000


def test_at_the_threshold_the_base_prices_apply():
    usage = Usage(input_tokens=200_000, output_tokens=1000)
    # 200000 x 3 + 1000 x 15 = 615000 -> $0.615
    assert cost_nanos(SONNET, usage) == 615_000_000


def test_above_the_threshold_the_tier_applies_to_the_whole_request():
    usage = Usage(input_tokens=200_001, output_tokens=1000)
    # every token at the tier: 200001 x 6 + 1000 x 22.5 = 1222506 -> $1.222506
    assert cost_nanos(SONNET, usage) == 1_222_506_000


def test_tier_prices_every_kind_including_cache_reads_and_writes():
    usage = Usage(
        input_tokens=260_000,
        cached_input_tokens=150_000,
        cache_write_tokens=50_000,
        cache_write_1h_tokens=10_000,
        output_tokens=2000,
    )
    # 50000 x 6 + 150000 x 0.6 + 50000 x 7.5 + 10000 x 12 + 2000 x 22.5
    # = 300000 + 90000 + 375000 + 120000 + 45000 = 930000
    assert cost_nanos(SONNET, usage) == 930_000_000


def test_the_highest_exceeded_tier_wins_and_unset_tier_fields_keep_the_base_price():
    price = ModelPrice(
        provider="p",
        model="m",
        input=D("1"),
        output=D("2"),
        # Given out of order on purpose: the entry sorts them.
        tiers=(
            PriceTier(threshold_tokens=200_000, input=D("4"), output=D("8")),
            PriceTier(threshold_tokens=128_000, input=D("3")),
        ),
    )
    assert [tier.threshold_tokens for tier in price.tiers] == [128_000, 200_000]
    # 150k: the 128k tier sets input only, output stays at the base 2.
    assert cost_nanos(price, Usage(input_tokens=150_000, output_tokens=1000)) == (
        (150_000 * 3 + 1000 * 2) * 1000
    )
    assert cost_nanos(price, Usage(input_tokens=250_000, output_tokens=1000)) == (
        (250_000 * 4 + 1000 * 8) * 1000
    )


def test_request_fee_is_usd_per_request_added_once():
    price = ModelPrice(
        provider="perplexity",
        model="sonar-small-online",
        input=D("0"),
        output=D("0.28"),
        request_fee=D("0.005"),
    )
    # 1000 x 0.28 = 280 -> 280,000 nanos, + $0.005 = 5,000,000 nanos
    assert cost_nanos(price, Usage(input_tokens=100, output_tokens=1000)) == 5_280_000
    assert cost_nanos(price, Usage()) == 5_000_000


def test_batch_prices_replace_input_and_output():
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert cost_nanos(GPT_4O, usage, batch=True) == 6_250_000
    # No batch prices: the standard ones, never a free batch.
    assert cost_nanos(SONNET, usage, batch=True) == cost_nanos(SONNET, usage)


def test_batch_above_a_tier_pays_the_tier_price():
    price = ModelPrice(
        provider="p",
        model="m",
        input=D("2"),
        output=D("8"),
        batch_input=D("1"),
        batch_output=D("4"),
        tiers=(PriceTier(threshold_tokens=1000, input=D("3"), output=D("12")),),
    )
    assert cost_nanos(price, Usage(input_tokens=10, output_tokens=10), batch=True) == 50_000
    assert cost_nanos(price, Usage(input_tokens=2000, output_tokens=10), batch=True) == (
        (2000 * 3 + 10 * 12) * 1000
    )


def test_rounds_half_up_once_on_the_sum_not_per_part():
    # 0.0005 $/M = 0.5 nano per token: rounding each part would give 1 + 1 = 2 nanos.
    half = ModelPrice(provider="p", model="m", input=D("0.0005"), output=D("0.0005"))
    assert cost_nanos(half, Usage(input_tokens=1, output_tokens=1)) == 1
    # 0.4 nano per kind: each part would round to 0, the sum 1.2 rounds to 1.
    parts = ModelPrice(
        provider="p", model="m", input=D("0.0004"), output=D("0.0004"), cached_input=D("0.0004")
    )
    assert cost_nanos(parts, Usage(input_tokens=2, cached_input_tokens=1, output_tokens=1)) == 1


def test_half_a_nano_rounds_up_not_to_even():
    price = ModelPrice(provider="p", model="m", input=D("0.0025"), output=D("0"))
    assert cost_nanos(price, Usage(input_tokens=1)) == 3  # 2.5 -> 3 (banker's would give 2)
    price = ModelPrice(provider="p", model="m", input=D("0.0015"), output=D("0"))
    assert cost_nanos(price, Usage(input_tokens=1)) == 2
    price = ModelPrice(provider="p", model="m", input=D("0.00049"), output=D("0"))
    assert cost_nanos(price, Usage(input_tokens=1)) == 0


def test_exact_for_prices_a_float_cannot_hold():
    # 0.28 $/M, 1e9 tokens: $280 exactly; in floats 2.8e-07 * 1e9 is 280.00000000000006.
    price = ModelPrice(provider="deepseek", model="deepseek-chat", input=D("0.28"), output=D("1"))
    assert cost_nanos(price, Usage(input_tokens=10**9)) == 280 * 10**9


def test_inconsistent_usage_is_refused_naming_the_fields():
    with pytest.raises(ValueError, match=r"cached_input_tokens.*exceed input_tokens"):
        Usage(input_tokens=100, cached_input_tokens=80, cache_write_tokens=30)
    with pytest.raises(ValueError, match=r"reasoning_tokens \(600\) exceed output_tokens \(500\)"):
        Usage(output_tokens=500, reasoning_tokens=600)
    with pytest.raises(ValueError, match=r"usage\.input_tokens must be a non-negative int"):
        Usage(input_tokens=-1)
    with pytest.raises(ValueError, match=r"usage\.output_tokens"):
        Usage(output_tokens=True)
    with pytest.raises(ValueError, match=r"usage\.cache_write_1h_tokens"):
        Usage(cache_write_1h_tokens=1.5)  # type: ignore[arg-type]


def test_a_missing_price_never_costs_zero():
    embedding = ModelPrice(provider="openai", model="text-embedding-3-small", input=D("0.02"))
    assert cost_nanos(embedding, Usage(input_tokens=1000)) == 20_000
    with pytest.raises(ValueError, match="has no output price for 5 tokens"):
        cost_nanos(embedding, Usage(input_tokens=1000, output_tokens=5))


def test_a_negative_price_is_refused_at_costing():
    price = ModelPrice(provider="p", model="m", input=D("-1"), output=D("1"))
    with pytest.raises(ValueError, match="negative input price"):
        cost_nanos(price, Usage(input_tokens=10))


def test_a_cost_beyond_int64_is_refused():
    price = ModelPrice(provider="p", model="m", input=D("1000"), output=D("1"))
    with pytest.raises(ValueError, match="does not fit in int64"):
        cost_nanos(price, Usage(input_tokens=10**16))


def test_reserve_prices_input_at_input_rate_and_the_output_cap_at_the_dearer_rate():
    o1_pro = ModelPrice(
        provider="openai",
        model="o1-pro",
        input=D("150"),
        output=D("600"),
        max_output_tokens=100_000,
    )
    # Output cap clamped to the model's 100k: 1000 x 150 + 100000 x 600 = 60,150,000 -> $60.15
    assert reserve_estimate_nanos(o1_pro, 1000, 200_000) == 60_150_000_000
    assert reserve_estimate_nanos(o1_pro, 1000, 10) == (1000 * 150 + 10 * 600) * 1000
    dear_reasoning = ModelPrice(
        provider="dashscope",
        model="qwen-turbo",
        input=D("0.05"),
        output=D("0.2"),
        reasoning=D("0.5"),
    )
    assert reserve_estimate_nanos(dear_reasoning, 100, 1000) == (100 * D("0.05") + 500) * 1000


def test_reserve_uses_the_tier_the_prompt_falls_in_and_adds_the_fee():
    assert reserve_estimate_nanos(SONNET, 300_000, 1000) == (300_000 * 6 + 1000 * D("22.5")) * 1000
    with_fee = ModelPrice(
        provider="p", model="m", input=D("1"), output=D("1"), request_fee=D("0.005")
    )
    assert reserve_estimate_nanos(with_fee, 0, 0) == 5_000_000
    with pytest.raises(ValueError, match="max_output_tokens"):
        reserve_estimate_nanos(with_fee, 0, -1)


_RATE = st.one_of(
    st.none(),
    st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(
    rates=st.tuples(*[_RATE] * 6),
    fee=st.one_of(st.none(), st.decimals(min_value=0, max_value=1, places=9)),
    parts=st.tuples(*[st.integers(min_value=0, max_value=10**7)] * 6),
)
def test_cost_equals_an_exact_fraction_sum_rounded_half_up_once(rates, fee, parts):
    input_rate, output_rate, cached, write, write_1h, reasoning = rates
    input_rate = input_rate if input_rate is not None else D("1")
    output_rate = output_rate if output_rate is not None else D("2")
    price = ModelPrice(
        provider="p",
        model="m",
        input=input_rate,
        output=output_rate,
        cached_input=cached,
        cache_write=write,
        cache_write_1h=write_1h,
        reasoning=reasoning,
        request_fee=fee,
    )
    uncached, n_cached, n_write, n_write_1h, plain_out, n_reasoning = parts
    usage = Usage(
        input_tokens=uncached + n_cached + n_write + n_write_1h,
        cached_input_tokens=n_cached,
        cache_write_tokens=n_write,
        cache_write_1h_tokens=n_write_1h,
        output_tokens=plain_out + n_reasoning,
        reasoning_tokens=n_reasoning,
    )

    # Independent arithmetic: Fractions of a USD, per token = per million / 10^6.
    def rate(value: Decimal | None, fallback: Decimal) -> Fraction:
        return Fraction(value if value is not None else fallback) / 10**6

    write_rate = write if write is not None else input_rate
    usd = (
        uncached * rate(input_rate, input_rate)
        + n_cached * rate(cached, input_rate)
        + n_write * rate(write, input_rate)
        + n_write_1h * rate(write_1h, write_rate)
        + plain_out * rate(output_rate, output_rate)
        + n_reasoning * rate(reasoning, output_rate)
        + Fraction(fee or 0)
    )
    nanos = usd * 10**9
    expected = nanos.numerator // nanos.denominator
    if nanos - expected >= Fraction(1, 2):
        expected += 1
    assert cost_nanos(price, usage) == expected


def test_canonical_form_round_trips_and_ignores_decimal_spelling():
    again = ModelPrice.from_dict(json.loads(SONNET.canonical_json()))
    assert again == SONNET
    assert again.fingerprint() == SONNET.fingerprint()
    data = SONNET.to_dict()
    assert data["input"] == "3" and data["cached_input"] == "0.3"
    assert data["tiers"][0] == {
        "threshold_tokens": 200_000,
        "input": "6",
        "output": "22.5",
        "cached_input": "0.6",
        "cache_write": "7.5",
        "cache_write_1h": "12",
    }
    # "2.50", "2.5" and "25E-1" are one price: one fingerprint.
    spelled = ModelPrice.from_dict({**GPT_4O.to_dict(), "input": "25E-1", "output": "10.000"})
    assert spelled.fingerprint() == GPT_4O.fingerprint()
    assert spelled.to_dict()["output"] == "10"


def test_fingerprint_changes_with_any_price():
    changed = ModelPrice.from_dict({**GPT_4O.to_dict(), "cached_input": "1.2500001"})
    assert changed.fingerprint() != GPT_4O.fingerprint()
    tier_changed = ModelPrice.from_dict(
        {**SONNET.to_dict(), "tiers": [{**SONNET.to_dict()["tiers"][0], "output": "22.6"}]}
    )
    assert tier_changed.fingerprint() != SONNET.fingerprint()


def test_floats_never_become_prices():
    with pytest.raises(TypeError, match="input must be a Decimal"):
        ModelPrice(provider="p", model="m", input=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decimal string"):
        ModelPrice.from_dict({**GPT_4O.to_dict(), "output": 10.0})
    with pytest.raises(ValueError, match="unknown fields"):
        ModelPrice.from_dict({**GPT_4O.to_dict(), "outptu": "1"})


def test_price_problems_flag_negative_and_absurd_prices():
    assert price_problems(SONNET) == []
    bad = ModelPrice(
        provider="wandb",
        model="m",
        input=D("-0.1"),
        output=D("60000"),
        tiers=(PriceTier(threshold_tokens=1000, output=D("1001")),),
    )
    problems = price_problems(bad)
    assert any("input is negative" in problem for problem in problems)
    assert any("output = 60000 is absurd" in problem for problem in problems)
    assert any("tiers[>1000].output" in problem for problem in problems)
