"""Between the wire (pricing.v1 messages) and the catalog's ModelPrice / Usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from budget_service.errors import InvalidArgument
from genproto.budget.v1 import budget_pb2
from genproto.pricing.v1 import pricing_pb2 as pb
from pricing_service.catalog_repo import PriceVersion
from pricing_service.cost import Usage
from pricing_service.prices import PER_MILLION_FIELDS, TIER_PRICE_FIELDS, ModelPrice, decimal_str

PRICE_FIELDS = (*PER_MILLION_FIELDS, "request_fee")


def _text(value: Decimal | None) -> str:
    return "" if value is None else decimal_str(value)


def to_proto(version: PriceVersion) -> pb.ModelPrice:
    """The wire form of one catalog version."""
    p = version.price
    prices = pb.Prices(
        tiers=[
            pb.PriceTier(
                above_input_tokens=t.threshold_tokens,
                **{name: _text(getattr(t, name)) for name in TIER_PRICE_FIELDS},
            )
            for t in p.tiers
        ],
        **{name: _text(getattr(p, name)) for name in PRICE_FIELDS},
    )
    out = pb.ModelPrice(
        provider=p.provider,
        model=p.model,
        aliases=p.aliases,
        mode=p.mode,
        max_input_tokens=p.max_input_tokens or 0,
        max_output_tokens=p.max_output_tokens or 0,
        prices=prices,
        version=version.version,
        source=version.source,
    )
    out.effective_from.FromDatetime(version.effective_from)
    return out


def _decimal(field: str, text: str) -> str | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except ArithmeticError as exc:
        raise InvalidArgument(field, f'{text!r} is not a decimal (e.g. "2.50")') from exc
    if not value.is_finite() or value < 0:
        raise InvalidArgument(field, f"{text!r} must be a non-negative decimal")
    return text


def from_proto(message: pb.ModelPrice) -> ModelPrice:
    """A ModelPrice from an UpsertPrice request; InvalidArgument names the bad field."""
    if not message.provider:
        raise InvalidArgument("price.provider", "is required (e.g. openai)")
    if not message.model:
        raise InvalidArgument("price.model", "is required (e.g. gpt-4o)")
    prices = message.prices
    data: dict[str, Any] = {
        "provider": message.provider,
        "model": message.model,
        "aliases": list(message.aliases),
        "mode": message.mode or "chat",
        "max_input_tokens": message.max_input_tokens or None,
        "max_output_tokens": message.max_output_tokens or None,
        "tiers": [
            {
                "threshold_tokens": t.above_input_tokens,
                **{
                    name: _decimal(f"price.prices.tiers[{i}].{name}", getattr(t, name))
                    for name in TIER_PRICE_FIELDS
                },
            }
            for i, t in enumerate(prices.tiers)
        ],
    }
    for name in PRICE_FIELDS:
        data[name] = _decimal(f"price.prices.{name}", getattr(prices, name))
    if data["input"] is None or data["output"] is None:
        raise InvalidArgument("price.prices", "input and output prices are required")
    try:
        return ModelPrice.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("price", str(exc)) from exc


def usage_from_proto(field: str, usage: budget_pb2.Usage) -> Usage:
    """The cost module's Usage; InvalidArgument (naming `field`) when counts are inconsistent."""
    try:
        return Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens,
        )
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from exc
