"""Import LiteLLM's model_prices_and_context_window.json into exact per-million prices.

LiteLLM lists prices in USD per TOKEN as JSON numbers (2.5e-06); the catalog keeps USD per
MILLION tokens as exact decimals ("2.5"). `load_litellm_text` parses the numbers' text straight
into Decimal, so no price ever passes through a binary float.

Kept modes: chat, completion, responses and embedding, the ones billed by text tokens. Image,
audio, video, realtime, rerank, moderation, OCR, search and the like are billed per image,
second, character or query, and are skipped (counted by mode). Entries that cannot be used are
counted by reason in `ImportResult.skipped`, never fatal; `validate_catalog` decides whether a
whole fetched catalog is trustworthy enough to replace the previous one.
"""

from __future__ import annotations

import dataclasses
import decimal
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pricing_service.prices import (
    ABSURD_PRICE_PER_MILLION,
    ABSURD_REQUEST_FEE,
    EXACT,
    ModelPrice,
    PriceTier,
    canonical_decimal,
    price_problems,
)

KEPT_MODES = frozenset({"chat", "completion", "responses", "embedding"})
# Modes whose requests produce output tokens; an entry without an output price is unusable there.
_OUTPUT_MODES = frozenset({"chat", "completion", "responses"})
EXAMPLES_PER_REASON = 5

# LiteLLM per-token field -> ModelPrice per-million field.
_BASE_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_reasoning_token": "reasoning",
    "input_cost_per_token_batches": "batch_input",
    "output_cost_per_token_batches": "batch_output",
}
# DeepSeek-style entries name the cached-read price this way; used when the standard one is absent.
_CACHE_HIT_FIELD = "input_cost_per_token_cache_hit"
_REQUEST_FEE_FIELD = "input_cost_per_request"
# Anchored at both ends: the `_priority` / `_flex` service-tier variants must not become tiers.
_TIER_FIELDS = (
    (re.compile(r"input_cost_per_token_above_(\d+)k_tokens"), "input"),
    (re.compile(r"output_cost_per_token_above_(\d+)k_tokens"), "output"),
    (re.compile(r"cache_read_input_token_cost_above_(\d+)k_tokens"), "cached_input"),
    (re.compile(r"cache_creation_input_token_cost_above_(\d+)k_tokens"), "cache_write"),
    (
        re.compile(r"cache_creation_input_token_cost_above_1hr_above_(\d+)k_tokens"),
        "cache_write_1h",
    ),
)
_MILLION = 6  # decimal exponent: per token -> per million tokens


@dataclass
class ImportResult:
    """The usable models of a source, and what was left out and why."""

    # Keyed by model id (LiteLLM's key, unique in the file).
    models: dict[str, ModelPrice] = field(default_factory=dict)
    # Unusable entries by reason, e.g. {"mode:image_generation": 209, "absurd_price": 19}.
    skipped: dict[str, int] = field(default_factory=dict)
    # Up to EXAMPLES_PER_REASON entry names per reason, for a person to look at.
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    # Cost fields on imported entries that the catalog does not model (audio tokens, priority
    # tier, per-query search fees ...), by field name: what these prices leave out.
    ignored_fields: dict[str, int] = field(default_factory=dict)
    total_entries: int = 0
    # SHA-256 of the source text, when parsed from text: an unchanged hash needs no import.
    source_sha256: str | None = None

    def skip(self, reason: str, name: str) -> None:
        """Count one unusable entry."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(name)


class _BadValue(ValueError):
    pass


def _exact(value: object, name: str) -> Decimal:
    """A JSON number (or numeric string) as an exact, finite Decimal."""
    if isinstance(value, bool):
        raise _BadValue(f"{name} is a boolean")
    if isinstance(value, Decimal | int):
        number = Decimal(value)
    elif isinstance(value, float):
        # Only reached when the caller parsed JSON with floats: the shortest repr is the text
        # the file most likely held, never the float's binary expansion.
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise _BadValue(f"{name} is not a number: {value!r}") from None
    else:
        raise _BadValue(f"{name} is not a number: {type(value).__name__}")
    if not number.is_finite():
        raise _BadValue(f"{name} is not finite: {value!r}")
    return number


def _per_million(value: object, name: str) -> Decimal:
    try:
        return canonical_decimal(_exact(value, name).scaleb(_MILLION, EXACT))
    except (decimal.Inexact, decimal.Overflow, decimal.InvalidOperation):
        raise _BadValue(f"{name} has more digits than can be kept exactly") from None


def _count(value: object) -> int | None:
    """A token limit, or None when absent or not a whole non-negative number."""
    try:
        number = _exact(value, "limit")
    except _BadValue:
        return None
    if number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def _positive(value: object) -> bool:
    """Whether a cost field charges something: a positive number, or a dict holding one."""
    if isinstance(value, Mapping):
        return any(_positive(inner) for inner in value.values())
    try:
        return _exact(value, "cost") > 0
    except _BadValue:
        return False


def _is_cost_field(key: str) -> bool:
    return "cost" in key


def _parse_entry(
    name: str,
    entry: Mapping[str, Any],
    result: ImportResult,
    max_per_million: Decimal,
    max_request_fee: Decimal,
) -> ModelPrice | str:
    """The entry's price, or the reason it cannot be used."""
    provider = entry.get("litellm_provider")
    if not isinstance(provider, str) or not provider:
        return "no_provider"
    mode = entry.get("mode")
    if mode is None:
        return "no_mode"
    if not isinstance(mode, str):
        return "bad_value"
    if mode not in KEPT_MODES:
        return f"mode:{mode}"

    prices: dict[str, Decimal] = {}
    tiers: dict[int, dict[str, Decimal]] = {}
    used: set[str] = set()
    try:
        for key, target in _BASE_FIELDS.items():
            if entry.get(key) is not None:
                prices[target] = _per_million(entry[key], key)
                used.add(key)
        if "cached_input" not in prices and entry.get(_CACHE_HIT_FIELD) is not None:
            prices["cached_input"] = _per_million(entry[_CACHE_HIT_FIELD], _CACHE_HIT_FIELD)
        used.add(_CACHE_HIT_FIELD)
        request_fee = None
        if entry.get(_REQUEST_FEE_FIELD) is not None:
            # Per request, not per token: kept in USD as it stands.
            request_fee = canonical_decimal(_exact(entry[_REQUEST_FEE_FIELD], _REQUEST_FEE_FIELD))
            used.add(_REQUEST_FEE_FIELD)
        for key, value in entry.items():
            for pattern, target in _TIER_FIELDS:
                match = pattern.fullmatch(key)
                if match and value is not None:
                    # LiteLLM's "200k" means 200,000 tokens, as the providers' price pages do.
                    threshold = int(match.group(1)) * 1000
                    tiers.setdefault(threshold, {})[target] = _per_million(value, key)
                    used.add(key)
    except (_BadValue, decimal.DecimalException):
        return "bad_value"

    if "input" not in prices and "output" not in prices:
        other = [key for key, value in entry.items() if _is_cost_field(key) and _positive(value)]
        return "priced_in_other_units" if other else "no_token_prices"
    if "input" not in prices:
        return "missing_input_price"
    if mode in _OUTPUT_MODES and "output" not in prices:
        return "missing_output_price"
    charges_tokens = any(value > 0 for value in prices.values()) or any(
        value > 0 for tier in tiers.values() for value in tier.values()
    )
    if not charges_tokens and not (request_fee is not None and request_fee > 0):
        # A $0 token price beside a real per-image or per-second price is not a free model.
        other = [
            key
            for key, value in entry.items()
            if _is_cost_field(key) and key not in used and _positive(value)
        ]
        if other:
            return "priced_in_other_units"

    max_input = _count(entry.get("max_input_tokens"))
    # LiteLLM's legacy max_tokens is the output limit where known, else the input limit, so it
    # is never below the true output limit: a safe clamp for reservations, never for input.
    max_output = _count(entry.get("max_output_tokens"))
    if max_output is None:
        max_output = _count(entry.get("max_tokens"))
    try:
        price = ModelPrice(
            provider=provider,
            model=name,
            mode=mode,
            max_input_tokens=max_input,
            max_output_tokens=max_output,
            request_fee=request_fee,
            input=prices.get("input"),
            output=prices.get("output"),
            cached_input=prices.get("cached_input"),
            cache_write=prices.get("cache_write"),
            cache_write_1h=prices.get("cache_write_1h"),
            reasoning=prices.get("reasoning"),
            batch_input=prices.get("batch_input"),
            batch_output=prices.get("batch_output"),
            tiers=tuple(
                PriceTier(
                    threshold_tokens=threshold,
                    input=fields.get("input"),
                    output=fields.get("output"),
                    cached_input=fields.get("cached_input"),
                    cache_write=fields.get("cache_write"),
                    cache_write_1h=fields.get("cache_write_1h"),
                )
                for threshold, fields in tiers.items()
            ),
        )
    except (TypeError, ValueError, decimal.DecimalException):
        return "bad_value"
    per_million = [value for _, value in price.prices()]
    fee = [] if request_fee is None else [request_fee]
    if any(value < 0 for value in per_million + fee):
        return "negative_price"
    if any(value > max_per_million for value in per_million) or any(
        value > max_request_fee for value in fee
    ):
        return "absurd_price"

    for key, value in entry.items():
        if _is_cost_field(key) and key not in used and _positive(value):
            result.ignored_fields[key] = result.ignored_fields.get(key, 0) + 1
    return price


def _with_aliases(models: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
    """Add each model's other spelling ("xai/grok-4" <-> "grok-4") where it is unambiguous."""
    candidates: dict[str, str] = {}
    for name, price in models.items():
        prefix = f"{price.provider}/"
        candidates[name] = name[len(prefix) :] if name.startswith(prefix) else prefix + name
    # An alias must not be another entry's id, nor shared by two entries of one provider.
    taken = Counter((models[name].provider, alias) for name, alias in candidates.items())
    out = {}
    for name, price in models.items():
        alias = candidates[name]
        if alias and alias not in models and taken[(price.provider, alias)] == 1:
            price = dataclasses.replace(price, aliases=(alias,))
        out[name] = price
    return out


def parse_litellm(
    data: Mapping[str, Any],
    *,
    max_price_per_million: Decimal = ABSURD_PRICE_PER_MILLION,
    max_request_fee: Decimal = ABSURD_REQUEST_FEE,
) -> ImportResult:
    """Every usable model of a parsed LiteLLM price file; the rest counted by reason."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a LiteLLM price file is a JSON object, got {type(data).__name__}")
    result = ImportResult(total_entries=len(data))
    models: dict[str, ModelPrice] = {}
    for name, entry in data.items():
        if name == "sample_spec":
            # LiteLLM's documentation of the format, not a model.
            result.skip("sample_spec", name)
            continue
        if not isinstance(entry, Mapping):
            result.skip("not_an_object", name)
            continue
        parsed = _parse_entry(name, entry, result, max_price_per_million, max_request_fee)
        if isinstance(parsed, str):
            result.skip(parsed, name)
        else:
            models[name] = parsed
    result.models = _with_aliases(models)
    return result


def load_litellm_text(text: str | bytes, **limits: Decimal) -> ImportResult:
    """Parse a LiteLLM price file's text, reading every number exactly as written."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    # parse_constant turns NaN / Infinity into Decimal too (then refused as not finite): no
    # number of the file ever becomes a float.
    data = json.loads(raw, parse_float=Decimal, parse_constant=Decimal)
    result = parse_litellm(data, **limits)
    result.source_sha256 = hashlib.sha256(raw).hexdigest()
    return result


def validate_catalog(
    new: ImportResult,
    previous_count: int | None,
    *,
    max_price_per_million: Decimal = ABSURD_PRICE_PER_MILLION,
    max_request_fee: Decimal = ABSURD_REQUEST_FEE,
    max_bad_price_share: Decimal = Decimal("0.1"),
) -> list[str]:
    """Why a freshly fetched catalog must not replace the previous one; empty when it may.

    Refused: no usable model; fewer than half the previous catalog's models (a truncated or
    reshaped file); any kept model with a negative or absurd price; or more than
    `max_bad_price_share` of the priced entries skipped for such prices, which means a unit
    change upstream rather than a few bad entries.
    """
    problems = []
    count = len(new.models)
    if count == 0:
        problems.append("the catalog has no usable model")
    if previous_count is not None and 2 * count < previous_count:
        problems.append(
            f"the catalog lost more than half its models: {count} now, {previous_count} before"
        )
    price_issues = [
        issue
        for price in new.models.values()
        for issue in price_problems(
            price, max_per_million=max_price_per_million, max_request_fee=max_request_fee
        )
    ]
    if price_issues:
        shown = "; ".join(price_issues[:5])
        more = f" (and {len(price_issues) - 5} more)" if len(price_issues) > 5 else ""
        problems.append(f"negative or absurd prices: {shown}{more}")
    bad = new.skipped.get("negative_price", 0) + new.skipped.get("absurd_price", 0)
    if bad and bad > max_bad_price_share * (count + bad):
        problems.append(
            f"{bad} of {count + bad} priced entries have negative or absurd prices: "
            "the source's units or format probably changed"
        )
    return problems
