"""An org's negotiated prices: a discount in percent, or explicit prices for one model.

Pure functions, usable in process (the budget service prices token estimates with them, with
no network hop): `most_specific` picks the override that applies to a catalog entry (the
model's own, else its provider's, else the org-wide one) and `apply` turns the catalog price
into the org's price. `price_for` does both.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pricing_service.prices import (
    EXACT,
    PER_MILLION_FIELDS,
    TIER_PRICE_FIELDS,
    ModelPrice,
    PriceTier,
    canonical_decimal,
)

PRICE_FIELDS = (*PER_MILLION_FIELDS, "request_fee")
HUNDRED = Decimal(100)
# A discount is kept exact; more decimal places than this are a typo, not a negotiated rate.
MAX_DISCOUNT_PLACES = 6


@dataclass(frozen=True)
class PriceOverride:
    """One override of an org. Exactly one of `discount_percent` and `prices` is set.

    `provider` and `model` name the catalog entry's own provider and model (never an alias);
    empty means every model (of the provider, or of every provider). `prices` carries only
    prices: its provider and model are the override's, its limits and aliases unused.
    """

    org: str
    provider: str = ""
    model: str = ""
    discount_percent: Decimal | None = None
    prices: ModelPrice | None = None
    updated_at: datetime | None = None
    updated_by: str = ""

    def __post_init__(self) -> None:
        if not self.org:
            raise ValueError("org must be non-empty")
        if self.model and not self.provider:
            raise ValueError("a model override names the model's provider too")
        if (self.discount_percent is None) == (self.prices is None):
            raise ValueError("set exactly one of discount_percent and prices")
        if self.discount_percent is not None:
            check_discount(self.discount_percent)
            object.__setattr__(self, "discount_percent", canonical_decimal(self.discount_percent))
        if self.prices is not None and not self.model:
            raise ValueError("explicit prices are for one model: name it")

    @property
    def scope(self) -> int:
        """2 for a model's override, 1 for a provider's, 0 for the org-wide one."""
        return 2 if self.model else 1 if self.provider else 0

    def matches(self, provider: str, model: str) -> bool:
        """Whether the override covers the catalog entry provider/model."""
        return (not self.provider or self.provider == provider) and (
            not self.model or self.model == model
        )


def check_discount(value: Decimal) -> Decimal:
    """`value` if it is a usable discount (0 to 100 percent, exact); ValueError says why not."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    if not 0 <= value <= HUNDRED:
        raise ValueError(f"{value} is outside 0 to 100 percent")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DISCOUNT_PLACES:
        raise ValueError(f"{value} has more than {MAX_DISCOUNT_PLACES} decimal places")
    return value


def most_specific(
    overrides: Iterable[PriceOverride], provider: str, model: str
) -> PriceOverride | None:
    """The override of the catalog entry provider/model: its own, its provider's, or the org's."""
    best: PriceOverride | None = None
    for override in overrides:
        if override.matches(provider, model) and (best is None or override.scope > best.scope):
            best = override
    return best


def _discounted(value: Decimal | None, factor: Decimal) -> Decimal | None:
    if value is None:
        return None
    with decimal.localcontext(EXACT):  # Inexact trapped: the result is exact or raises
        return canonical_decimal((value * factor).scaleb(-2))


def apply(price: ModelPrice, override: PriceOverride | None) -> ModelPrice:
    """The catalog `price` as the override's org pays it.

    A discount multiplies every price (tiers, batch prices and the request fee included) by
    (100 - discount) / 100, exactly. Explicit prices replace every price of the entry (unset
    ones fall back as in the catalog: cached reads to input, reasoning to output ...); the
    entry's identity, aliases and limits stay the catalog's. No override: `price` unchanged.
    """
    if override is None:
        return price
    if not override.matches(price.provider, price.model):
        raise ValueError(
            f"the override of {override.provider or '*'}/{override.model or '*'} does not cover"
            f" {price.provider}/{price.model}"
        )
    if override.prices is not None:
        explicit = override.prices
        return dataclasses.replace(
            price,
            tiers=explicit.tiers,
            **{name: getattr(explicit, name) for name in PRICE_FIELDS},
        )
    assert override.discount_percent is not None
    factor = HUNDRED - override.discount_percent
    changes: dict[str, Any] = {
        name: _discounted(getattr(price, name), factor) for name in PRICE_FIELDS
    }
    changes["tiers"] = tuple(
        PriceTier(
            threshold_tokens=tier.threshold_tokens,
            **{name: _discounted(getattr(tier, name), factor) for name in TIER_PRICE_FIELDS},
        )
        for tier in price.tiers
    )
    return dataclasses.replace(price, **changes)


def price_for(price: ModelPrice, overrides: Iterable[PriceOverride]) -> ModelPrice:
    """The catalog `price` after the most specific of an org's `overrides`, if any applies."""
    return apply(price, most_specific(overrides, price.provider, price.model))
