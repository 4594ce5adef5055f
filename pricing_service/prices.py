"""A model's catalog entry and prices: exact decimals per million tokens, a canonical form."""

from __future__ import annotations

import decimal
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# Every price operation runs in this context: enough digits for any token count times any price,
# and Inexact trapped, so a result that would need rounding raises instead of silently drifting.
# The one deliberate rounding (to whole nanos) happens in cost.py, outside these traps.
EXACT = decimal.Context(
    prec=100,
    rounding=decimal.ROUND_HALF_UP,
    traps=[
        decimal.Inexact,
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
    ],
)

# Above these a price is taken to be a unit mistake (per token or per 1K read as per million),
# not a real price: the dearest model in LiteLLM's 2026-07-24 file, o1-pro, lists $600 per
# million output tokens; the mistakes found there start at $2,000.
ABSURD_PRICE_PER_MILLION = Decimal(1000)
ABSURD_REQUEST_FEE = Decimal(100)

PER_MILLION_FIELDS = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "batch_input",
    "batch_output",
)
TIER_PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")


def canonical_decimal(value: Decimal) -> Decimal:
    """The same number without trailing zeros or a positive exponent: 2.50 -> 2.5, 3E+1 -> 30."""
    if value == 0:
        return Decimal(0)  # also folds -0 into 0
    value = value.normalize(EXACT)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        value = value.quantize(Decimal(1), context=EXACT)
    return value


def decimal_str(value: Decimal) -> str:
    """The canonical text of a decimal: never in exponent form ("2.5", "30", "0")."""
    return format(canonical_decimal(value), "f")


def _check_price(name: str, value: object) -> None:
    # A float here would mean money went through binary floating point somewhere upstream.
    if value is None:
        return
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal or None, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")


def _check_count(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")


def _canonicalize(obj: object, names: tuple[str, ...]) -> None:
    # Frozen dataclasses: set once, in __post_init__, so every instance holds canonical decimals.
    for name in names:
        value = getattr(obj, name)
        if value is not None:
            object.__setattr__(obj, name, canonical_decimal(value))


@dataclass(frozen=True)
class PriceTier:
    """Prices that apply to the WHOLE request once its total input tokens exceed the threshold.

    A field left None falls back to the model's base price for that kind.
    """

    threshold_tokens: int
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None

    def __post_init__(self) -> None:
        _check_count("threshold_tokens", self.threshold_tokens)
        for name in TIER_PRICE_FIELDS:
            _check_price(f"tier {self.threshold_tokens}: {name}", getattr(self, name))
        _canonicalize(self, TIER_PRICE_FIELDS)

    def prices(self) -> Iterator[tuple[str, Decimal]]:
        """The tier's set prices, as (field name, per-million price)."""
        for name in TIER_PRICE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                yield f"tiers[>{self.threshold_tokens}].{name}", value


@dataclass(frozen=True)
class ModelPrice:
    """One model's catalog entry: identity, limits and prices in USD per MILLION tokens.

    None means the provider does not sell that kind separately: cached reads and cache writes
    then cost the input price, reasoning tokens the output price (see cost.py). `request_fee`
    is USD per request, not per million tokens.
    """

    provider: str
    model: str
    aliases: tuple[str, ...] = ()
    mode: str = "chat"
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    request_fee: Decimal | None = None
    tiers: tuple[PriceTier, ...] = field(default=())
    batch_input: Decimal | None = None
    batch_output: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.provider or not self.model:
            raise ValueError("provider and model must be non-empty")
        if isinstance(self.aliases, str):
            raise TypeError("aliases must be a tuple of names, not one string")
        for name in (*PER_MILLION_FIELDS, "request_fee"):
            _check_price(name, getattr(self, name))
        _check_count("max_input_tokens", self.max_input_tokens)
        _check_count("max_output_tokens", self.max_output_tokens)
        # Canonical order: equal entries compare and fingerprint equal however they were built.
        aliases = tuple(sorted(set(self.aliases) - {self.model}))
        tiers = tuple(sorted(self.tiers, key=lambda tier: tier.threshold_tokens))
        thresholds = [tier.threshold_tokens for tier in tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"{self.model}: two tiers share a threshold: {thresholds}")
        object.__setattr__(self, "aliases", aliases)
        object.__setattr__(self, "tiers", tiers)
        _canonicalize(self, (*PER_MILLION_FIELDS, "request_fee"))

    def prices(self) -> Iterator[tuple[str, Decimal]]:
        """Every set per-million price, tiers included, as (field name, price)."""
        for name in PER_MILLION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                yield name, value
        for tier in self.tiers:
            yield from tier.prices()

    def tier_for(self, input_tokens: int) -> PriceTier | None:
        """The highest tier whose threshold the prompt's total input tokens exceed, if any."""
        chosen = None
        for tier in self.tiers:
            if input_tokens > tier.threshold_tokens:
                chosen = tier
        return chosen

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict: every field present, decimals as canonical strings."""
        out: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "aliases": list(self.aliases),
            "mode": self.mode,
            "max_input_tokens": self.max_input_tokens,
            "max_output_tokens": self.max_output_tokens,
        }
        for name in (*PER_MILLION_FIELDS, "request_fee"):
            out[name] = _opt_str(getattr(self, name))
        out["tiers"] = [
            {
                "threshold_tokens": tier.threshold_tokens,
                **{name: _opt_str(getattr(tier, name)) for name in TIER_PRICE_FIELDS},
            }
            for tier in self.tiers
        ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelPrice:
        """Rebuild from `to_dict` output; decimals must be strings (never floats)."""
        known = {
            "provider",
            "model",
            "aliases",
            "mode",
            "max_input_tokens",
            "max_output_tokens",
            "request_fee",
            "tiers",
            *PER_MILLION_FIELDS,
        }
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        missing = {"provider", "model"} - set(data)
        if missing:
            raise ValueError(f"missing fields: {sorted(missing)}")
        tiers = []
        for raw in data.get("tiers") or ():
            extra = set(raw) - {"threshold_tokens", *TIER_PRICE_FIELDS}
            if extra:
                raise ValueError(f"unknown tier fields: {sorted(extra)}")
            if "threshold_tokens" not in raw:
                raise ValueError("a tier is missing threshold_tokens")
            tiers.append(
                PriceTier(
                    threshold_tokens=raw["threshold_tokens"],
                    **{name: _opt_decimal(name, raw.get(name)) for name in TIER_PRICE_FIELDS},
                )
            )
        return cls(
            provider=data["provider"],
            model=data["model"],
            aliases=tuple(data.get("aliases") or ()),
            mode=data.get("mode", "chat"),
            max_input_tokens=data.get("max_input_tokens"),
            max_output_tokens=data.get("max_output_tokens"),
            tiers=tuple(tiers),
            **{
                name: _opt_decimal(name, data.get(name))
                for name in (*PER_MILLION_FIELDS, "request_fee")
            },
        )

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, ASCII only: the same entry always gives the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: tells an importer whether anything changed."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()


def _opt_str(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)


def _opt_decimal(name: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a decimal string, got {type(value).__name__}")
    try:
        return Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{name} is not a decimal: {value!r}") from None


def price_problems(
    price: ModelPrice,
    *,
    max_per_million: Decimal = ABSURD_PRICE_PER_MILLION,
    max_request_fee: Decimal = ABSURD_REQUEST_FEE,
) -> list[str]:
    """What is wrong with a price's numbers: negative, or beyond what any real model charges."""
    problems = []
    fields = list(price.prices())
    if price.request_fee is not None:
        fields.append(("request_fee", price.request_fee))
    for name, value in fields:
        limit = max_request_fee if name == "request_fee" else max_per_million
        if value < 0:
            problems.append(f"{price.model}: {name} is negative ({decimal_str(value)})")
        elif value > limit:
            problems.append(
                f"{price.model}: {name} = {decimal_str(value)} is absurd (above {limit})"
            )
    return problems
