"""Reserve estimates in integer arithmetic, for prices whose rates allow it exactly.

`cost.reserve_estimate_nanos` is exact Decimal arithmetic; on the Reserve hot path that costs
tens of microseconds. Most published prices have at most six decimals per million tokens, so
rate x 10^6 is an integer, tokens x that integer is a count of milli-nanos, and the one
half-up rounding is integer division: the same answer, with no Decimal at call time. Prices
that do not fit (more decimals) answer None from `compile_estimator`, and callers use the
Decimal path.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from pricing_service.cost import INT64_MAX, rates_for
from pricing_service.prices import ModelPrice

Estimator = Callable[[int, int], int]
# (input tokens, requested output tokens, hold nano-USD) -> the most output tokens it pays for
OutputLimit = Callable[[int, int, int], int]
_MICRO = Decimal(10**6)


def _scaled(rate: Decimal | None, factor: Decimal = _MICRO) -> int | None:
    if rate is None:
        return None
    value = rate * factor
    if value != value.to_integral_value() or value < 0:
        raise ArithmeticError("not exact at this scale")
    return int(value)


def _band(price: ModelPrice, input_tokens: int) -> tuple[int | None, int | None]:
    rates = rates_for(price, input_tokens)
    outputs = [r for r in (rates.output, rates.reasoning) if r is not None]
    return _scaled(rates.input), _scaled(max(outputs)) if outputs else None


def compile_estimator(price: ModelPrice) -> Estimator | None:
    """An integer estimator equal to reserve_estimate_nanos(price, ...), or None."""
    try:
        thresholds = [t.threshold_tokens for t in price.tiers]
        bands = [_band(price, 0)] + [_band(price, t + 1) for t in thresholds]
        fee = _scaled(price.request_fee, Decimal(10**12)) or 0
    except ArithmeticError:
        return None
    max_output = price.max_output_tokens

    def estimate(input_tokens: int, max_output_tokens: int) -> int:
        if input_tokens < 0 or max_output_tokens < 0:
            raise ValueError("token counts must be non-negative")
        if max_output is not None and max_output_tokens > max_output:
            max_output_tokens = max_output
        band = 0
        for i, threshold in enumerate(thresholds):
            if input_tokens > threshold:
                band = i + 1
        input_rate, output_rate = bands[band]
        total = fee
        for tokens, rate in ((input_tokens, input_rate), (max_output_tokens, output_rate)):
            if tokens:
                if rate is None:
                    raise ValueError(f"{price.provider}/{price.model} has no price for {tokens}")
                total += tokens * rate
        nanos = (total + 500) // 1000  # milli-nanos to nanos, half-up, once
        if nanos > INT64_MAX:
            raise ValueError(f"cost of {nanos} nanos does not fit in int64")
        return nanos

    return estimate


def compile_output_limit(price: ModelPrice) -> OutputLimit | None:
    """An integer `cost.max_output_for_hold(price, ...)`, or None where the rates don't allow it."""
    try:
        thresholds = [t.threshold_tokens for t in price.tiers]
        bands = [_band(price, 0)] + [_band(price, t + 1) for t in thresholds]
        fee = _scaled(price.request_fee, Decimal(10**12)) or 0
    except ArithmeticError:
        return None
    cap = price.max_output_tokens

    def limit(input_tokens: int, requested_output_tokens: int, hold_nanos: int) -> int:
        band = 0
        for i, threshold in enumerate(thresholds):
            if input_tokens > threshold:
                band = i + 1
        input_rate, output_rate = bands[band]
        if output_rate is None:
            return 0
        if output_rate == 0:
            return cap if cap is not None else requested_output_tokens
        fixed = fee + (input_tokens * input_rate if input_tokens and input_rate else 0)
        # milli-nanos; half-up to nanos: (total + 500) // 1000 <= hold <=> total <= 1000 hold + 499
        most = max((1000 * hold_nanos + 499 - fixed) // output_rate, 0)
        return min(most, cap) if cap is not None else most

    return limit
