"""Providers' raw usage objects normalized into inclusive totals, and bad shapes refused."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from pricing_service.cost import Usage, cost_nanos
from pricing_service.prices import ModelPrice
from pricing_service.usage_shapes import (
    UsageShapeError,
    detect_shape,
    from_anthropic,
    from_anthropic_stream,
    from_gemini,
    from_openai,
    normalize,
)

OPENAI_CHAT: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The image shows ...", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

OPENAI_REASONING_CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 1117,
    "completion_tokens": 1746,
    "total_tokens": 2863,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 1664,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

OPENAI_RESPONSES: dict[str, Any] = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
    "object": "response",
    "created_at": 1741476777,
    "status": "completed",
    "model": "o3-2025-04-16",
    "output": [],
    "usage": {
        "input_tokens": 5210,
        "input_tokens_details": {"cached_tokens": 4096},
        "output_tokens": 922,
        "output_tokens_details": {"reasoning_tokens": 768},
        "total_tokens": 6132,
    },
}

OPENAI_EMBEDDINGS: dict[str, Any] = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1024, "ephemeral_1h_input_tokens": 1024},
        "output_tokens": 503,
        "service_tier": "standard",
    },
}

GEMINI_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {"parts": [{"text": "..."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12000,
        "candidatesTokenCount": 800,
        "totalTokenCount": 14000,
        "cachedContentTokenCount": 8000,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12000}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 8000}],
        "thoughtsTokenCount": 1200,
    },
    "modelVersion": "gemini-2.5-pro",
    "responseId": "mfaGaO2rBoyMz7IPpe6g0AU",
}


def test_openai_chat_cached_tokens_stay_inside_the_prompt_total():
    assert from_openai(OPENAI_CHAT) == Usage(
        input_tokens=2006, output_tokens=300, cached_input_tokens=1920
    )
    # The bare usage object reads the same as the whole response.
    assert from_openai(OPENAI_CHAT["usage"]) == from_openai(OPENAI_CHAT)


def test_openai_chat_reasoning_tokens_stay_inside_the_completion_total():
    assert from_openai(OPENAI_REASONING_CHAT_USAGE) == Usage(
        input_tokens=1117, output_tokens=1746, reasoning_tokens=1664
    )


def test_openai_responses_api():
    assert from_openai(OPENAI_RESPONSES) == Usage(
        input_tokens=5210, output_tokens=922, cached_input_tokens=4096, reasoning_tokens=768
    )


def test_openai_embeddings_have_no_output():
    assert from_openai(OPENAI_EMBEDDINGS) == Usage(input_tokens=8)


def test_openai_null_details_mean_none():
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}
    assert from_openai(usage) == Usage(input_tokens=10, output_tokens=2)


def test_anthropic_cache_tokens_are_added_back_and_writes_split_5m_1h():
    assert from_anthropic(ANTHROPIC_MESSAGE) == Usage(
        input_tokens=50 + 10000 + 2048,
        output_tokens=503,
        cached_input_tokens=10000,
        cache_write_tokens=1024,
        cache_write_1h_tokens=1024,
    )


def test_anthropic_without_the_split_writes_are_5_minute():
    usage = {
        "input_tokens": 3,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 0,
        "output_tokens": 12,
    }
    assert from_anthropic(usage) == Usage(
        input_tokens=1503, output_tokens=12, cache_write_tokens=1500
    )


def _stream(delta_usage: dict[str, Any]) -> list[dict[str, Any]]:
    start_usage = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2048,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1024, "ephemeral_1h_input_tokens": 1024},
        "output_tokens": 1,
    }
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "usage": start_usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": delta_usage,
        },
        {"type": "message_stop"},
    ]


def test_anthropic_stream_cumulative_counts_are_not_added_twice():
    expected = from_anthropic(ANTHROPIC_MESSAGE)
    # Current API: message_delta repeats the input and cache counts, cumulatively.
    repeated = copy.deepcopy(ANTHROPIC_MESSAGE["usage"])
    del repeated["service_tier"]
    assert from_anthropic_stream(_stream(repeated)) == expected
    # Older API: message_delta carries only the final output count.
    assert from_anthropic_stream(_stream({"output_tokens": 503})) == expected


def test_anthropic_stream_without_usage_is_refused():
    with pytest.raises(UsageShapeError, match=r"^events: no message_start"):
        from_anthropic_stream([{"type": "ping"}])


def test_gemini_thoughts_are_added_to_candidates_and_cached_stay_in_prompt():
    assert from_gemini(GEMINI_RESPONSE) == Usage(
        input_tokens=12000, output_tokens=2000, cached_input_tokens=8000, reasoning_tokens=1200
    )
    assert from_gemini(GEMINI_RESPONSE["usageMetadata"]) == from_gemini(GEMINI_RESPONSE)


def test_gemini_snake_case_and_tool_use_prompt_tokens():
    response = {
        "usage_metadata": {
            "prompt_token_count": 900,
            "candidates_token_count": 120,
            "tool_use_prompt_token_count": 300,
            "thoughts_token_count": 64,
            "total_token_count": 1384,
        }
    }
    assert from_gemini(response) == Usage(input_tokens=1200, output_tokens=184, reasoning_tokens=64)


def test_gemini_omitted_zero_counts_read_as_zero():
    assert from_gemini({"promptTokenCount": 7, "totalTokenCount": 7}) == Usage(input_tokens=7)


@pytest.mark.parametrize(
    ("payload", "shape"),
    [
        (OPENAI_CHAT, "openai"),
        (OPENAI_CHAT["usage"], "openai"),
        (OPENAI_RESPONSES, "openai"),
        (OPENAI_EMBEDDINGS, "openai"),
        (ANTHROPIC_MESSAGE, "anthropic"),
        (ANTHROPIC_MESSAGE["usage"], "anthropic"),
        (GEMINI_RESPONSE, "gemini"),
        (GEMINI_RESPONSE["usageMetadata"], "gemini"),
        ({"usage_metadata": {"prompt_token_count": 1}}, "gemini"),
    ],
)
def test_normalize_detects_the_shape(payload: dict[str, Any], shape: str):
    assert detect_shape(payload) == shape
    readers = {"openai": from_openai, "anthropic": from_anthropic, "gemini": from_gemini}
    assert normalize(payload) == readers[shape](payload)


def test_bare_input_and_output_read_the_same_under_both_conventions():
    bare = {"input_tokens": 10, "output_tokens": 5}
    assert normalize(bare) == from_anthropic(bare) == from_openai(bare)


def test_normalized_anthropic_usage_costs_each_kind_at_its_rate():
    sonnet = ModelPrice(
        provider="anthropic",
        model="claude-sonnet-4-5",
        input=Decimal("3"),
        output=Decimal("15"),
        cached_input=Decimal("0.3"),
        cache_write=Decimal("3.75"),
        cache_write_1h=Decimal("6"),
    )
    # 50 x 3 + 10000 x 0.3 + 1024 x 3.75 + 1024 x 6 + 503 x 15
    # = 150 + 3000 + 3840 + 6144 + 7545 = 20679 -> $0.020679
    assert cost_nanos(sonnet, normalize(ANTHROPIC_MESSAGE)) == 20_679_000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prompt_tokens": "2006", "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": 10}, "usage.completion_tokens"),
        ({"prompt_tokens": 10, "completion_tokens": -1}, "usage.completion_tokens"),
        ({"prompt_tokens": 10, "completion_tokens": True}, "usage.completion_tokens"),
        ({"prompt_tokens": 10, "completion_tokens": 2.5}, "usage.completion_tokens"),
        (
            {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": [1]},
            "usage.prompt_tokens_details",
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": "lots"},
            },
            "usage.prompt_tokens_details.cached_tokens",
        ),
        ({"input_tokens": 10, "input_tokens_details": {}}, "usage.output_tokens"),
        ({"usage": {"output_tokens": 3, "total_tokens": 3}}, "usage"),
    ],
)
def test_bad_openai_shapes_are_refused_naming_the_field(payload: dict[str, Any], field: str):
    with pytest.raises(UsageShapeError) as caught:
        normalize(payload)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")


def test_cached_tokens_beyond_the_prompt_are_refused():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    with pytest.raises(UsageShapeError) as caught:
        from_openai(usage)
    assert str(caught.value) == (
        "usage.prompt_tokens_details.cached_tokens: 200 exceeds prompt_tokens (100)"
    )
    reasoning = {
        "input_tokens": 1,
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 11},
    }
    with pytest.raises(UsageShapeError) as caught:
        from_openai(reasoning)
    assert str(caught.value) == (
        "usage.output_tokens_details.reasoning_tokens: 11 exceeds output_tokens (10)"
    )


def test_bad_anthropic_shapes_are_refused_naming_the_field():
    with pytest.raises(UsageShapeError, match=r"^usage\.output_tokens: missing"):
        from_anthropic({"input_tokens": 1, "cache_read_input_tokens": 0})
    mismatch = copy.deepcopy(ANTHROPIC_MESSAGE)
    mismatch["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] = 1000
    with pytest.raises(UsageShapeError) as caught:
        normalize(mismatch)
    assert caught.value.field == "usage.cache_creation"
    assert "differ from cache_creation_input_tokens (2048)" in str(caught.value)
    with pytest.raises(UsageShapeError, match=r"^usage\.cache_read_input_tokens: expected"):
        from_anthropic({"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": -5})


def test_bad_gemini_shapes_are_refused_naming_the_field():
    with pytest.raises(UsageShapeError, match=r"^usageMetadata\.promptTokenCount: missing"):
        from_gemini({"usageMetadata": {"candidatesTokenCount": 3}})
    with pytest.raises(UsageShapeError, match=r"^usageMetadata\.thoughtsTokenCount: expected"):
        from_gemini({"promptTokenCount": 3, "thoughtsTokenCount": "64"})
    with pytest.raises(UsageShapeError, match=r"^usageMetadata\.promptTokenCount: disagrees"):
        from_gemini({"promptTokenCount": 3, "prompt_token_count": 4})
    with pytest.raises(UsageShapeError) as caught:
        normalize({"promptTokenCount": 3, "cachedContentTokenCount": 9})
    assert str(caught.value) == (
        "usageMetadata.cachedContentTokenCount: 9 exceeds promptTokenCount (3)"
    )


def test_unrecognized_and_ambiguous_shapes_are_refused():
    with pytest.raises(UsageShapeError, match=r"^usage: unrecognized shape.*\['tokens'\]"):
        normalize({"tokens": 5})
    with pytest.raises(UsageShapeError, match=r"^usage: expected an object, got list"):
        normalize([1, 2])  # type: ignore[arg-type]
    with pytest.raises(UsageShapeError, match=r"^usage: ambiguous"):
        normalize(
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_read_input_tokens": 0,
                "input_tokens_details": {"cached_tokens": 0},
            }
        )
