"""Providers' raw usage objects normalized into `Usage` (totals that include their details).

- OpenAI chat completions: prompt_tokens (includes cached), completion_tokens (includes
  reasoning), prompt_tokens_details.cached_tokens, completion_tokens_details.reasoning_tokens.
  Embeddings report no completion_tokens (prompt_tokens == total_tokens): output is 0.
- OpenAI Responses: input_tokens / output_tokens with input_tokens_details.cached_tokens and
  output_tokens_details.reasoning_tokens; the same inclusive totals.
- Anthropic: input_tokens EXCLUDES cache reads and writes, so the total is input_tokens +
  cache_read_input_tokens + cache_creation_input_tokens; `cache_creation` splits the writes into
  5-minute and 1-hour. Thinking is already inside output_tokens.
- Gemini (usageMetadata, camelCase or snake_case): promptTokenCount includes
  cachedContentTokenCount; candidatesTokenCount EXCLUDES thoughtsTokenCount, so output is
  candidates + thoughts; toolUsePromptTokenCount (tool results the model read) is input.

Every error is a `UsageShapeError` whose message starts with the offending field's path.
`from_json` reads the JSON text a caller sends, bounded: in bytes (checked before parsing), in
nesting depth, and every count an int64, as the API carries them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from pricing_service.cost import INT64_MAX, Usage

MAX_JSON_DEPTH = 32  # a usage object nests three levels, a whole response about eight

Shape = Literal["openai", "anthropic", "gemini"]

_GEMINI_KEYS = (
    "promptTokenCount",
    "prompt_token_count",
    "candidatesTokenCount",
    "candidates_token_count",
    "totalTokenCount",
    "total_token_count",
)
_ANTHROPIC_MARKERS = (
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "server_tool_use",
)
_RESPONSES_MARKERS = ("input_tokens_details", "output_tokens_details", "total_tokens")


class UsageShapeError(ValueError):
    """A usage object that cannot be read; `field` is the path of the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageShapeError(path, f"expected an object, got {type(value).__name__}")
    return value


def _sub(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    """An optional nested object (absent and null both mean none)."""
    value = obj.get(key)
    return None if value is None else _mapping(value, f"{path}.{key}")


def _count(obj: Mapping[str, Any] | None, key: str, path: str, *, required: bool = False) -> int:
    """A token count: a non-negative whole number; absent or null is 0 unless required."""
    value = None if obj is None else obj.get(key)
    field = f"{path}.{key}"
    if value is None:
        if required:
            raise UsageShapeError(field, "missing")
        return 0
    # A whole float (12.0) is accepted: some clients re-encode JSON numbers that way.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise UsageShapeError(field, f"expected a non-negative integer, got {value!r}")
    if isinstance(value, float | Decimal):
        try:
            whole = int(value)
        except (ValueError, OverflowError):  # NaN, infinity
            whole = None
        if whole is None or whole != value:
            raise UsageShapeError(field, f"expected a non-negative integer, got {value!r}")
        value = whole
    if value < 0:
        raise UsageShapeError(field, f"expected a non-negative integer, got {value}")
    if value > INT64_MAX:
        raise UsageShapeError(
            field, f"is above {INT64_MAX}, the largest token count the API carries (int64)"
        )
    return value


def _at_most(part: int, part_field: str, whole: int, whole_field: str) -> None:
    # Checked here, not only in Usage, so the error names the provider's own fields.
    if part > whole:
        raise UsageShapeError(part_field, f"{part} exceeds {whole_field} ({whole})")


def _usage(path: str, **counts: int) -> Usage:
    try:
        return Usage(**counts)
    except ValueError as error:
        raise UsageShapeError(path, str(error)) from None


def _unwrap(obj: object, keys: tuple[str, ...]) -> tuple[Mapping[str, Any], str]:
    """The usage object itself, whether given bare or inside its response, and its name."""
    obj = _mapping(obj, keys[0])
    for key in keys:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            return inner, key
    return obj, keys[0]


def from_openai(obj: Mapping[str, Any]) -> Usage:
    """OpenAI chat completions, Responses or embeddings usage (or a response holding it)."""
    usage, path = _unwrap(obj, ("usage",))
    if "prompt_tokens" in usage:
        input_key, output_key = "prompt_tokens", "completion_tokens"
    elif "input_tokens" in usage:
        input_key, output_key = "input_tokens", "output_tokens"
    else:
        raise UsageShapeError(
            f"{path}.prompt_tokens", "missing (nor input_tokens, as the Responses API names it)"
        )
    input_tokens = _count(usage, input_key, path, required=True)
    if usage.get(output_key) is None and usage.get("total_tokens") == input_tokens:
        output_tokens = 0  # embeddings: nothing generated, no completion count
    else:
        output_tokens = _count(usage, output_key, path, required=True)
    input_details, output_details = f"{input_key}_details", f"{output_key}_details"
    cached = _count(_sub(usage, input_details, path), "cached_tokens", f"{path}.{input_details}")
    _at_most(cached, f"{path}.{input_details}.cached_tokens", input_tokens, input_key)
    reasoning = _count(
        _sub(usage, output_details, path), "reasoning_tokens", f"{path}.{output_details}"
    )
    _at_most(reasoning, f"{path}.{output_details}.reasoning_tokens", output_tokens, output_key)
    return _usage(
        path,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
    )


def from_anthropic(obj: Mapping[str, Any]) -> Usage:
    """Anthropic Messages usage (or a message holding it): cache tokens added back into input."""
    usage, path = _unwrap(obj, ("usage",))
    uncached = _count(usage, "input_tokens", path, required=True)
    output_tokens = _count(usage, "output_tokens", path, required=True)
    read = _count(usage, "cache_read_input_tokens", path)
    creation = _sub(usage, "cache_creation", path)
    if creation is None:
        # Without the split, every write is a 5-minute write (Anthropic's default lifetime).
        write_5m = _count(usage, "cache_creation_input_tokens", path)
        write_1h = 0
    else:
        creation_path = f"{path}.cache_creation"
        write_5m = _count(creation, "ephemeral_5m_input_tokens", creation_path)
        write_1h = _count(creation, "ephemeral_1h_input_tokens", creation_path)
        if usage.get("cache_creation_input_tokens") is not None:
            total = _count(usage, "cache_creation_input_tokens", path)
            if total != write_5m + write_1h:
                raise UsageShapeError(
                    creation_path,
                    f"ephemeral_5m_input_tokens + ephemeral_1h_input_tokens ({write_5m} + "
                    f"{write_1h}) differ from cache_creation_input_tokens ({total})",
                )
    return _usage(
        path,
        input_tokens=uncached + read + write_5m + write_1h,
        output_tokens=output_tokens,
        cached_input_tokens=read,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
    )


def from_anthropic_stream(events: Iterable[Mapping[str, Any]]) -> Usage:
    """The usage of a streamed Anthropic message, from its message_start and message_delta events.

    message_delta counts are cumulative, so a later value REPLACES an earlier one; adding them
    is how peers bill cache writes twice.
    """
    merged: dict[str, Any] = {}
    for index, event in enumerate(events):
        event = _mapping(event, f"events[{index}]")
        kind = event.get("type")
        if kind == "message_start":
            message = _mapping(event.get("message"), f"events[{index}].message")
            usage = _sub(message, "usage", f"events[{index}].message")
        elif kind == "message_delta":
            usage = _sub(event, "usage", f"events[{index}]")
        else:
            continue
        if usage is not None:
            merged.update({key: value for key, value in usage.items() if value is not None})
    if not merged:
        raise UsageShapeError("events", "no message_start or message_delta carried a usage")
    return from_anthropic(merged)


def _gemini_count(obj: Mapping[str, Any], camel: str, snake: str, path: str) -> int:
    """A Gemini count under either spelling; both present must agree."""
    values = {key: _count(obj, key, path) for key in (camel, snake) if obj.get(key) is not None}
    if len(set(values.values())) > 1:
        raise UsageShapeError(f"{path}.{camel}", f"disagrees with {snake}: {values}")
    return next(iter(values.values()), 0)


def from_gemini(obj: Mapping[str, Any]) -> Usage:
    """Gemini usageMetadata (or a response holding it), camelCase or snake_case."""
    usage, path = _unwrap(obj, ("usageMetadata", "usage_metadata"))
    if usage.get("promptTokenCount") is None and usage.get("prompt_token_count") is None:
        raise UsageShapeError(f"{path}.promptTokenCount", "missing")
    prompt = _gemini_count(usage, "promptTokenCount", "prompt_token_count", path)
    tool_prompt = _gemini_count(
        usage, "toolUsePromptTokenCount", "tool_use_prompt_token_count", path
    )
    thoughts = _gemini_count(usage, "thoughtsTokenCount", "thoughts_token_count", path)
    candidates = _gemini_count(usage, "candidatesTokenCount", "candidates_token_count", path)
    cached = _gemini_count(usage, "cachedContentTokenCount", "cached_content_token_count", path)
    _at_most(cached, f"{path}.cachedContentTokenCount", prompt, "promptTokenCount")
    return _usage(
        path,
        input_tokens=prompt + tool_prompt,
        output_tokens=candidates + thoughts,
        cached_input_tokens=cached,
        reasoning_tokens=thoughts,
    )


def detect_shape(obj: Mapping[str, Any]) -> Shape:
    """Which provider's shape a usage object (or a response holding one) has."""
    obj = _mapping(obj, "usage")
    if any(isinstance(obj.get(key), Mapping) for key in ("usageMetadata", "usage_metadata")):
        return "gemini"
    usage = obj.get("usage")
    if isinstance(usage, Mapping):
        obj = usage
    if any(key in obj for key in _GEMINI_KEYS):
        return "gemini"
    if "prompt_tokens" in obj:
        return "openai"
    if "input_tokens" in obj:
        anthropic = [key for key in _ANTHROPIC_MARKERS if key in obj]
        openai = [key for key in _RESPONSES_MARKERS if key in obj]
        if anthropic and openai:
            raise UsageShapeError(
                "usage", f"ambiguous: Anthropic fields {anthropic} beside OpenAI fields {openai}"
            )
        # Bare input_tokens/output_tokens read the same under both conventions: with no cache
        # fields, Anthropic's input is the total too.
        return "anthropic" if anthropic else "openai"
    raise UsageShapeError(
        "usage",
        "unrecognized shape: expected prompt_tokens (OpenAI chat), input_tokens (OpenAI "
        f"Responses, Anthropic) or promptTokenCount (Gemini); got keys {sorted(obj)}",
    )


def normalize(obj: Mapping[str, Any], shape: Shape | None = None) -> Usage:
    """Any supported provider's usage as `Usage`; the shape is detected unless given."""
    shape = shape or detect_shape(obj)
    if shape == "openai":
        return from_openai(obj)
    if shape == "anthropic":
        return from_anthropic(obj)
    if shape == "gemini":
        return from_gemini(obj)
    raise UsageShapeError("shape", f"unknown shape {shape!r}")


def _json_int(digits: str) -> int | Decimal:
    # Past int64's 19 digits a number is kept as a Decimal: exact, without Python's limit on
    # converting long digit strings, and refused by _count naming its field.
    return int(digits) if len(digits) <= 20 else Decimal(digits)


def _depth(value: object) -> int:
    """How deeply `value` (parsed JSON) nests, counted up to just past MAX_JSON_DEPTH."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break  # deep enough to refuse: no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def from_json(text: str, max_bytes: int) -> Usage:
    """A provider's usage as JSON text (the usage object or a response holding it), normalized.

    ValueError (UsageShapeError naming the field, where one is at fault) when it is larger than
    `max_bytes` of UTF-8, not JSON, nested deeper than MAX_JSON_DEPTH, or not a usage.
    """
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ValueError(
            f"is {size} bytes; at most {max_bytes} (MAX_USAGE_JSON_BYTES): send the provider's"
            " usage object, not the whole response"
        )
    try:
        data = json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object: the provider's usage or its response")
    return normalize(data)
