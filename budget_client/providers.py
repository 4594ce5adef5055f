"""Providers' responses turned into the usage JSON the service normalizes (provider_usage_json).

The service reads OpenAI (chat completions and Responses), Anthropic (Messages, with cache
reads and writes) and Gemini (`usageMetadata`, camelCase or snake_case) usage itself, so these
helpers only *find* the usage object and send that alone: never the response's text, which
the budget service has no business seeing and which can be megabytes.

Accepted: SDK objects (pydantic `model_dump()`, proto-plus `to_dict()`), plain dicts, JSON
text, a whole response, its bare usage object, and the streaming chunk or event that carries
the usage: OpenAI chat's last chunk (with `stream_options={"include_usage": True}`), the
Responses API's `response.completed` event, Gemini's last chunk, Anthropic's `message_start`
/ `message_delta` events. Anthropic's older `message_delta` carries only output_tokens:
feed every event to `StreamUsage`, which merges what the stream reports (later counts replace
earlier ones: they are cumulative).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_GEMINI_KEYS = ("usageMetadata", "usage_metadata")
_INPUT_KEYS = ("prompt_tokens", "input_tokens", "promptTokenCount", "prompt_token_count")
_GEMINI_COUNTS = ("promptTokenCount", "prompt_token_count", "candidatesTokenCount")
_BARE_COUNTS = ("prompt_tokens", "input_tokens", "output_tokens", "completion_tokens")


def provider_usage(response: object) -> dict[str, Any]:
    """The usage part of a provider response, chunk or event, as `{"usage": {...}}` (OpenAI,
    Anthropic) or `{"usageMetadata": {...}}` (Gemini). ValueError when it carries none."""
    if isinstance(response, StreamUsage):
        return response.usage()
    found = _find(response)
    if found is None:
        raise ValueError(
            f"no usage in this {type(response).__name__}: give the whole response, its usage "
            "object, or the streaming chunk that carries the usage (OpenAI: "
            "stream_options={'include_usage': True} and the last chunk)"
        )
    key, usage = found
    if not any(usage.get(k) is not None for k in _INPUT_KEYS):
        raise ValueError(
            f"this usage has no input token count (keys {sorted(usage)}): an Anthropic "
            "message_delta carries only output_tokens; feed the whole stream to StreamUsage"
        )
    return {key: usage}


def provider_usage_json(response: object) -> str:
    """`provider_usage(response)` as JSON text, for CommitRequest.provider_usage_json."""
    return json.dumps(provider_usage(response), separators=(",", ":"))


class StreamUsage:
    """Collects the usage a streamed response reports, chunk by chunk, for any provider.

    `add(chunk)` every chunk or event (those without usage are skipped); then commit it:
    `hold.commit_response(stream_usage)`. Counts reported later replace earlier ones, as every
    provider reports cumulative counts (adding them up bills twice).
    """

    def __init__(self) -> None:
        self._key = ""
        self._usage: dict[str, Any] = {}

    def add(self, chunk: object) -> bool:
        """Take the usage of one chunk or event, if it has one; True if it did."""
        found = _find(chunk)
        if found is None:
            return False
        key, usage = found
        self._key = self._key or key
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        return True

    @property
    def seen(self) -> bool:
        """Whether any chunk carried usage yet."""
        return bool(self._usage)

    def usage(self) -> dict[str, Any]:
        """The merged usage, as `provider_usage` answers; ValueError if none was seen."""
        if not self._usage:
            raise ValueError(
                "no chunk carried usage (OpenAI needs stream_options={'include_usage': True})"
            )
        return provider_usage({self._key: dict(self._usage)})


def _find(obj: object) -> tuple[str, dict[str, Any]] | None:
    """(wrapper key, usage dict) of a response, chunk or bare usage object, or None."""
    data = _plain(obj)
    for key in _GEMINI_KEYS:
        if isinstance(data.get(key), Mapping):
            return "usageMetadata", dict(data[key])
    if isinstance(data.get("usage"), Mapping):
        return "usage", dict(data["usage"])
    # Streaming events that wrap the response: OpenAI Responses' response.completed,
    # Anthropic's message_start.
    for key in ("response", "message"):
        inner = data.get(key)
        if isinstance(inner, Mapping) and isinstance(inner.get("usage"), Mapping):
            return "usage", dict(inner["usage"])
    if any(k in data for k in _GEMINI_COUNTS):
        return "usageMetadata", data
    if any(k in data for k in _BARE_COUNTS):
        return "usage", data
    return None


def _plain(obj: object) -> dict[str, Any]:
    """A response as plain JSON-ready data, whatever the SDK."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, str | bytes | bytearray):
        data = json.loads(obj)
        if not isinstance(data, dict):
            raise ValueError("provider usage JSON must be an object")
        return _plain(data)
    # SDK objects: prefer the usage attribute alone (the rest of a response is its text).
    for attribute in ("usage_metadata", "usage"):
        value = getattr(obj, attribute, None)
        if value is not None and not callable(value):
            key = "usageMetadata" if attribute == "usage_metadata" else "usage"
            return {key: _plain(value)}
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump):  # pydantic: OpenAI, Anthropic, google-genai, LiteLLM
        return _plain(model_dump(mode="json"))
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):  # proto-plus (google-generativeai), older SDKs
        return _plain(to_dict())
    raise TypeError(
        f"cannot read usage from a {type(obj).__name__}: give a dict, JSON text or an SDK "
        "response object (pydantic or to_dict())"
    )


def _jsonable(value: object) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value  # token counts re-encoded as 12.0 by some clients; the server checks
    return _plain(value)
