"""Exact cost of a usage under a model's price, in int nano-USD, rounded half-up once.

Token convention (usage_shapes.py produces it from every provider's shape):

- `input_tokens` is the TOTAL prompt: uncached input + cached reads + cache writes (5-minute and
  1-hour). Anthropic reports input without the cache tokens; it is converted, not passed through.
- `output_tokens` is the TOTAL output INCLUDING reasoning tokens, as OpenAI reports it (Gemini's
  candidates count excludes thoughts; it is converted too).
- The detail counts (`cached_input_tokens`, `cache_write_tokens`, `cache_write_1h_tokens`,
  `reasoning_tokens`) are parts of those totals, each priced at its own rate instead of the base.
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from pricing_service.prices import EXACT, ModelPrice

Nanos = int

INT64_MAX = 2**63 - 1
# Per-million price x tokens = USD x 1e6; x 1000 = nano-USD. Multiplying avoids any division.
_NANOS_PER_MILLION_UNIT = 1000
_NANOS_PER_USD = 10**9


@dataclass(frozen=True)
class Usage:
    """Token counts of one request; input and output are totals that include their details."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for name in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"usage.{name} must be a non-negative int, got {value!r}")
            if value > INT64_MAX:  # a sum of provider counts can pass what the wire carries
                raise ValueError(f"usage.{name} is {value}, above {INT64_MAX} (int64)")
        if self.uncached_input_tokens < 0:
            raise ValueError(
                "usage is inconsistent: cached_input_tokens + cache_write_tokens + "
                f"cache_write_1h_tokens ({self.cached_input_tokens} + {self.cache_write_tokens} + "
                f"{self.cache_write_1h_tokens}) exceed input_tokens ({self.input_tokens}); "
                "input_tokens must be the total prompt, cache reads and writes included"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"usage is inconsistent: reasoning_tokens ({self.reasoning_tokens}) exceed "
                f"output_tokens ({self.output_tokens}); output_tokens must include reasoning"
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input rate."""
        return (
            self.input_tokens
            - self.cached_input_tokens
            - self.cache_write_tokens
            - self.cache_write_1h_tokens
        )

    @property
    def non_reasoning_output_tokens(self) -> int:
        """Output tokens billed at the plain output rate."""
        return self.output_tokens - self.reasoning_tokens


@dataclass(frozen=True)
class Rates:
    """The per-million rates one request pays, after tier and batch selection and fallbacks."""

    input: Decimal | None
    output: Decimal | None
    cached_input: Decimal | None
    cache_write: Decimal | None
    cache_write_1h: Decimal | None
    reasoning: Decimal | None


def _first(*values: Decimal | None) -> Decimal | None:
    for value in values:
        if value is not None:
            return value
    return None


def rates_for(price: ModelPrice, input_tokens: int, *, batch: bool = False) -> Rates:
    """The rates that apply to a request with this many total input tokens.

    A tier, once the prompt exceeds its threshold, replaces the base price for every kind it
    sets; kinds it leaves unset keep the base price. Batch prices replace the base input and
    output prices; a tier's prices still win over them, because the catalog has no batch tier
    prices and the standard long-context price overestimates rather than undercharges. Kinds
    with no price of their own fall back: cached reads and 5-minute writes to input, 1-hour
    writes to 5-minute writes, reasoning to output.
    """
    tier = price.tier_for(input_tokens)
    base_input = _first(price.batch_input if batch else None, price.input)
    base_output = _first(price.batch_output if batch else None, price.output)
    if tier is None:
        input_rate, output_rate = base_input, base_output
        cached, write, write_1h = price.cached_input, price.cache_write, price.cache_write_1h
    else:
        input_rate = _first(tier.input, base_input)
        output_rate = _first(tier.output, base_output)
        cached = _first(tier.cached_input, price.cached_input)
        write = _first(tier.cache_write, price.cache_write)
        write_1h = _first(tier.cache_write_1h, price.cache_write_1h)
    write = _first(write, input_rate)
    return Rates(
        input=input_rate,
        output=output_rate,
        cached_input=_first(cached, input_rate),
        cache_write=write,
        cache_write_1h=_first(write_1h, write),
        reasoning=_first(price.reasoning, output_rate),
    )


def _line(price: ModelPrice, kind: str, tokens: int, rate: Decimal | None) -> Decimal:
    # Zero tokens of a kind cost nothing even without a price; any other count needs one, so a
    # model with a missing price can never silently cost $0.
    if tokens == 0:
        return Decimal(0)
    if rate is None:
        raise ValueError(f"{price.provider}/{price.model} has no {kind} price for {tokens} tokens")
    if rate < 0:
        raise ValueError(f"{price.provider}/{price.model} has a negative {kind} price: {rate}")
    return Decimal(tokens) * rate


def _to_nanos(price: ModelPrice, per_million_total: Decimal) -> Nanos:
    with decimal.localcontext(EXACT):
        exact = per_million_total * _NANOS_PER_MILLION_UNIT
        if price.request_fee is not None:
            if price.request_fee < 0:
                raise ValueError(f"{price.provider}/{price.model} has a negative request fee")
            exact += price.request_fee * _NANOS_PER_USD
    # The one rounding of a charge; to_integral_value never raises Inexact.
    nanos = int(exact.to_integral_value(rounding=decimal.ROUND_HALF_UP))
    if nanos > INT64_MAX:
        raise ValueError(f"cost of {nanos} nanos does not fit in int64")
    return nanos


def cost_nanos(price: ModelPrice, usage: Usage, *, batch: bool = False) -> Nanos:
    """The exact cost of `usage` in nano-USD: every kind at its rate, rounded half-up once."""
    rates = rates_for(price, usage.input_tokens, batch=batch)
    with decimal.localcontext(EXACT):
        total = (
            _line(price, "input", usage.uncached_input_tokens, rates.input)
            + _line(price, "cached input", usage.cached_input_tokens, rates.cached_input)
            + _line(price, "cache write", usage.cache_write_tokens, rates.cache_write)
            + _line(price, "1-hour cache write", usage.cache_write_1h_tokens, rates.cache_write_1h)
            + _line(price, "output", usage.non_reasoning_output_tokens, rates.output)
            + _line(price, "reasoning", usage.reasoning_tokens, rates.reasoning)
        )
    return _to_nanos(price, total)


def reserve_estimate_nanos(
    price: ModelPrice, input_tokens: int, max_output_tokens: int, *, batch: bool = False
) -> Nanos:
    """The hold for a request: all input at the input rate, the output cap at the dearer of the
    output and reasoning rates, plus the request fee.

    The output cap is clamped to the model's own max_output_tokens when the catalog knows it, and
    the tier is chosen by `input_tokens`, as the actual charge will be. Cache writes cost more
    than input, so a request that writes a cache can exceed this estimate; commit charges the
    actual cost either way.
    """
    for name, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if price.max_output_tokens is not None:
        max_output_tokens = min(max_output_tokens, price.max_output_tokens)
    rates = rates_for(price, input_tokens, batch=batch)
    output_rates = [rate for rate in (rates.output, rates.reasoning) if rate is not None]
    output_rate = max(output_rates) if output_rates else None
    with decimal.localcontext(EXACT):
        total = _line(price, "input", input_tokens, rates.input) + _line(
            price, "output", max_output_tokens, output_rate
        )
    return _to_nanos(price, total)


def max_output_for_hold(
    price: ModelPrice,
    input_tokens: int,
    requested_output_tokens: int,
    hold_nanos: Nanos,
    *,
    batch: bool = False,
) -> int:
    """The most output tokens `hold_nanos` pays for with `input_tokens` of prompt.

    The inverse of `reserve_estimate_nanos`: the largest n, at most the model's max_output_tokens,
    with reserve_estimate_nanos(price, input_tokens, n) <= hold_nanos. Where output costs nothing
    the hold limits nothing: the model's maximum, else the requested count.
    """
    rates = rates_for(price, input_tokens, batch=batch)
    output_rates = [rate for rate in (rates.output, rates.reasoning) if rate is not None]
    cap = price.max_output_tokens
    if not output_rates:
        return 0  # output has no price: any output token would fail to price
    output_rate = max(output_rates)
    if output_rate == 0:
        return cap if cap is not None else requested_output_tokens
    with decimal.localcontext(EXACT):
        fixed = _line(price, "input", input_tokens, rates.input) * _NANOS_PER_MILLION_UNIT
        if price.request_fee is not None:
            fixed += price.request_fee * _NANOS_PER_USD
        # half-up rounding: round(x) <= hold exactly when x < hold + 1/2
        room = Decimal(hold_nanos) + Decimal("0.5") - fixed
    # the largest n with n * rate < room, rate = nano-USD per output token: exact as fractions
    per_token = Fraction(output_rate) * _NANOS_PER_MILLION_UNIT
    most = max(math.ceil(Fraction(room) / per_token) - 1, 0)
    return min(most, cap) if cap is not None else most
