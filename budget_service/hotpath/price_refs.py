"""How a reservation names the price its usage commit is charged with.

The reserve script stores the ref with the hold and the commit script hands it back, so a commit
is priced exactly as its reserve was, on any replica:

- "0": the reserve gave amount_nanos; there is no price to charge tokens with.
- "<n>": catalog price version n.
- "u<input>:<output>": a budget's unknown_model_price (nano-USD per million tokens), used
  because the model had no catalog price.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from budget_service.hotpath.budgets import BudgetConfig
from pricing_service.prices import EXACT, ModelPrice

AMOUNT = "0"
_UNKNOWN = "u"
NANOS_PER_USD_EXPONENT = -9


def catalog(version: int) -> str:
    return str(version)


def catalog_version(ref: str) -> int | None:
    """The catalog version a ref names, or None for an amount or an unknown-model price."""
    return None if is_unknown_model(ref) or ref == AMOUNT else int(ref)


def unknown_model(price: tuple[int, int]) -> str:
    return f"{_UNKNOWN}{price[0]}:{price[1]}"


def is_unknown_model(ref: str) -> bool:
    return ref.startswith(_UNKNOWN)


def unknown_model_price(ref: str) -> ModelPrice:
    """The ModelPrice an unknown-model ref stands for (cached input at the input rate, etc.)."""
    if not is_unknown_model(ref):
        raise ValueError(f"{ref!r} is not an unknown-model price ref")
    input_nanos, output_nanos = (int(part) for part in ref[1:].split(":"))
    return ModelPrice(
        provider="unknown",
        model="unknown-model-price",
        input=Decimal(input_nanos).scaleb(NANOS_PER_USD_EXPONENT, EXACT),
        output=Decimal(output_nanos).scaleb(NANOS_PER_USD_EXPONENT, EXACT),
    )


def highest_unknown_model_price(budgets: Iterable[BudgetConfig]) -> tuple[int, int] | None:
    """The fallback price of the budgets that opt in: the highest input and output rates.

    Taking the highest means no opted-in budget is charged less than its own fallback says.
    """
    prices = [b.unknown_model_price for b in budgets if b.unknown_model_price is not None]
    if not prices:
        return None
    return max(p[0] for p in prices), max(p[1] for p in prices)
