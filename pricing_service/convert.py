"""Between the wire (pricing.v1 messages) and the catalog's ModelPrice / Usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from genproto.budget.v1 import budget_pb2
from genproto.pricing.v1 import pricing_pb2 as pb
from pricing_service.catalog_repo import PriceVersion
from pricing_service.cost import Usage
from pricing_service.overrides import PriceOverride, check_discount
from pricing_service.prices import (
    PER_MILLION_FIELDS,
    TIER_PRICE_FIELDS,
    ModelPrice,
    canonical_decimal,
    decimal_str,
    price_problems,
)
from servicekit import validation as v
from servicekit.errors import InvalidArgument

PRICE_FIELDS = (*PER_MILLION_FIELDS, "request_fee")
MAX_DECIMAL_LENGTH = 40  # "0.000000001" needs 11; a longer price is a mistake
MAX_DECIMAL_PLACES = 18  # a nano-USD per token is 0.001 per million: far finer is a mistake
MAX_ALIASES = 64
MAX_TIERS = 16


def _text(value: Decimal | None) -> str:
    return "" if value is None else decimal_str(value)


def price_to_proto(p: ModelPrice) -> pb.ModelPrice:
    """The wire form of a catalog entry without a version (what UpsertPrice takes)."""
    return pb.ModelPrice(
        provider=p.provider,
        model=p.model,
        aliases=p.aliases,
        mode=p.mode,
        max_input_tokens=p.max_input_tokens or 0,
        max_output_tokens=p.max_output_tokens or 0,
        prices=prices_to_proto(p),
    )


def to_proto(version: PriceVersion) -> pb.ModelPrice:
    """The wire form of one catalog version."""
    out = price_to_proto(version.price)
    out.version = version.version
    out.source = version.source
    out.effective_from.FromDatetime(version.effective_from)
    return out


def _decimal(field: str, text: str) -> str | None:
    if not text:
        return None
    if len(text) > MAX_DECIMAL_LENGTH:
        raise InvalidArgument(
            field, f"is {len(text)} characters long; a price needs at most {MAX_DECIMAL_LENGTH}"
        )
    try:
        value = Decimal(text)
    except ArithmeticError as exc:
        raise InvalidArgument(field, f'{v.shown(text)} is not a decimal (e.g. "2.50")') from exc
    if not value.is_finite() or value < 0:
        raise InvalidArgument(field, f"{v.shown(text)} must be a non-negative decimal")
    try:
        exponent = canonical_decimal(value).as_tuple().exponent  # what the catalog stores
    except ArithmeticError as exc:
        raise InvalidArgument(
            field, f"{v.shown(text)} has more digits than a price can keep exactly"
        ) from exc
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        raise InvalidArgument(
            field, f"{v.shown(text)} has more than {MAX_DECIMAL_PLACES} decimal places"
        )
    return text


def _price_fields(field: str, prices: pb.Prices, *, required: bool = True) -> dict[str, Any]:
    """The price fields and tiers of a Prices message as ModelPrice.from_dict takes them."""
    data: dict[str, Any] = {
        "tiers": [
            {
                "threshold_tokens": t.above_input_tokens,
                **{
                    name: _decimal(f"{field}.tiers[{i}].{name}", getattr(t, name))
                    for name in TIER_PRICE_FIELDS
                },
            }
            for i, t in enumerate(prices.tiers)
        ],
    }
    for name in PRICE_FIELDS:
        data[name] = _decimal(f"{field}.{name}", getattr(prices, name))
    if required and (data["input"] is None or data["output"] is None):
        raise InvalidArgument(field, "input and output prices are required")
    return data


def _entry(message: pb.ModelPrice, *, required: bool) -> ModelPrice:
    data: dict[str, Any] = {
        "provider": message.provider,
        "model": message.model,
        "aliases": list(message.aliases),
        "mode": message.mode or "chat",
        "max_input_tokens": message.max_input_tokens or None,
        "max_output_tokens": message.max_output_tokens or None,
        **_price_fields("price.prices", message.prices, required=required),
    }
    try:
        return ModelPrice.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("price", str(exc)) from exc


def catalog_entry(message: pb.ModelPrice) -> ModelPrice:
    """A catalog version as WatchPrices sends it (an embedding model may have no output price)."""
    return _entry(message, required=False)


def from_proto(message: pb.ModelPrice) -> ModelPrice:
    """A ModelPrice from an UpsertPrice request; InvalidArgument names the bad field."""
    if not message.provider:
        raise InvalidArgument("price.provider", "is required (e.g. openai)")
    if not message.model:
        raise InvalidArgument("price.model", "is required (e.g. gpt-4o)")
    checked = pb.ModelPrice()
    checked.CopyFrom(message)
    checked.provider = v.check_value("price.provider", message.provider)
    checked.model = v.check_value("price.model", message.model)
    checked.mode = v.check_value("price.mode", message.mode)
    if len(message.aliases) > MAX_ALIASES:
        raise InvalidArgument(
            "price.aliases", f"has {len(message.aliases)} names; at most {MAX_ALIASES}"
        )
    del checked.aliases[:]
    checked.aliases.extend(
        v.check_value(f"price.aliases[{i}]", alias) for i, alias in enumerate(message.aliases)
    )
    if len(message.prices.tiers) > MAX_TIERS:
        raise InvalidArgument(
            "price.prices.tiers", f"has {len(message.prices.tiers)} tiers; at most {MAX_TIERS}"
        )
    return _entry(checked, required=True)


def explicit_prices_from_proto(field: str, prices: pb.Prices, provider: str,
                               model: str) -> ModelPrice:  # fmt: skip
    """An override's explicit prices for provider/model; InvalidArgument names the bad field."""
    data = {"provider": provider, "model": model, **_price_fields(field, prices)}
    try:
        price = ModelPrice.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(field, str(exc)) from exc
    problems = price_problems(price)
    if problems:
        raise InvalidArgument(field, "; ".join(problems))
    return price


def discount_from_proto(field: str, text: str) -> Decimal:
    """A discount in percent ("12.5"); InvalidArgument names `field` and says what is allowed."""
    try:
        value = Decimal(text.strip())
    except ArithmeticError as exc:
        raise InvalidArgument(field, f'{text!r} is not a decimal (e.g. "12.5")') from exc
    try:
        return check_discount(value)
    except ValueError as exc:
        raise InvalidArgument(field, f"{exc}; use a percentage from 0 to 100") from exc


def prices_to_proto(price: ModelPrice) -> pb.Prices:
    """The prices of a ModelPrice on the wire."""
    return pb.Prices(
        tiers=[
            pb.PriceTier(
                above_input_tokens=t.threshold_tokens,
                **{name: _text(getattr(t, name)) for name in TIER_PRICE_FIELDS},
            )
            for t in price.tiers
        ],
        **{name: _text(getattr(price, name)) for name in PRICE_FIELDS},
    )


def override_to_proto(override: PriceOverride) -> pb.PriceOverride:
    """The wire form of a stored override."""
    out = pb.PriceOverride(
        org=override.org,
        provider=override.provider,
        model=override.model,
        updated_by=override.updated_by,
    )
    if override.discount_percent is not None:
        out.discount_percent = decimal_str(override.discount_percent)
    if override.prices is not None:
        out.prices.CopyFrom(prices_to_proto(override.prices))
    if override.updated_at is not None:
        out.updated_at.FromDatetime(override.updated_at)
    return out


def usage_to_proto(usage: Usage) -> budget_pb2.Usage:
    """The wire form of a Usage (e.g. one normalized from a provider's usage object)."""
    return budget_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


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
