"""The integer reserve estimator answers exactly what the Decimal one does, or declines."""

from __future__ import annotations

import random

from pricing_service import bundled
from pricing_service.cost import reserve_estimate_nanos
from pricing_service.fast_estimate import compile_estimator
from pricing_service.litellm_source import load_litellm_text
from tests.conftest import SHARED_DATA


def test_integer_estimates_equal_decimal_estimates_for_every_catalog_model():
    models = bundled.load()
    imported = load_litellm_text(
        (SHARED_DATA / "litellm_model_prices_2026-07-24.json").read_bytes()
    ).models
    models += list(imported.values()) if isinstance(imported, dict) else list(imported)
    rng = random.Random(11)
    compiled = 0
    for price in models:
        estimate = compile_estimator(price)
        if estimate is None:
            continue
        compiled += 1
        sizes = [0, 1, rng.randint(1, 10_000), rng.randint(10_000, 2_000_000)]
        sizes += [t.threshold_tokens + d for t in price.tiers for d in (0, 1)]
        for input_tokens in sizes:
            output = rng.choice([0, 1, rng.randint(1, 200_000)])
            try:
                expected: int | str = reserve_estimate_nanos(price, input_tokens, output)
            except ValueError:
                expected = "error"
            try:
                got: int | str = estimate(input_tokens, output)
            except ValueError:
                got = "error"
            assert got == expected, (price.provider, price.model, input_tokens, output)
    assert compiled >= 0.9 * len(models)
