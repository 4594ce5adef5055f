"""budget_client against the real service: calls, idempotent retries, errors, the hold guard."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import grpc
import grpc.aio
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import ResponseUsage
from pydantic import BaseModel

from budget_client import (
    BudgetClient,
    BudgetClientSync,
    BudgetExceeded,
    IdempotencyConflict,
    InvalidRequest,
    InvalidState,
    NotFound,
    Outcome,
    Refusal,
    StreamUsage,
    Subject,
    Unavailable,
    UnsettledHoldWarning,
    Usage,
    nanos_to_usd,
    provider_usage,
    usd_to_nanos,
)
from devstack import free_port
from genproto.pricing.v1 import pricing_pb2 as ppb
from genproto.pricing.v1 import pricing_pb2_grpc
from tests.helpers import upsert, usd

# ---------------------------------------------------------------------------------------------
# Shared with tests/test_client_examples.py


@pytest.fixture(scope="session")
async def pricing(pricing_app: Any) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pricing_app.port}") as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)


async def estimate_cost(pricing: Any, model: str, usage: Usage) -> tuple[int, int]:
    """(cost_nanos, price_version) of `usage` with the model's current catalog price."""
    answer = await pricing.EstimateCost(
        ppb.EstimateCostRequest(model=model, usage=usage.to_proto())
    )
    return int(answer.cost_nanos), int(answer.price_version)


async def prices_caught_up(app: Any, pricing: Any, model: str) -> None:
    """Wait (bounded) until the budget service prices `model` with the catalog's version."""
    _, version = await estimate_cost(pricing, model, Usage(input_tokens=1))
    for _ in range(200):
        if app.prices.version >= version:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the budget service never saw price version {version}")


class LoseAnswers(grpc.aio.UnaryUnaryClientInterceptor):
    """Lets the first `lose` calls of `method` reach the service, then reports them as timed
    out, as when the answer is lost on the way back; records every attempt's request."""

    def __init__(self, method: str, lose: int = 1) -> None:
        self.method = method
        self.lose = lose
        self.requests: list[Any] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith("/" + self.method):
            self.requests.append(request)
            if len(self.requests) <= self.lose:
                await call  # the service did the work; only its answer goes missing
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    details="answer lost (test)",
                )
        return call


# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def client(app: Any) -> AsyncIterator[BudgetClient]:
    async with BudgetClient(f"127.0.0.1:{app.port}") as c:
        yield c


async def test_reserve_then_commit_charges_the_actual_and_gives_back_the_rest(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    reservation = await client.reserve(Subject(org=org, team="search"), amount_nanos=usd("0.04"))
    assert reservation.org == org
    assert reservation.reserved_nanos == usd("0.04")
    assert [b.budget_id for b in reservation.budgets] == ["cap"]
    assert reservation.budgets[0].reserved_nanos == usd("0.04")

    done = await client.commit(org, reservation.reservation_id, actual_nanos=usd("0.031"))
    assert (done.charged_nanos, done.released_nanos, done.overage_nanos) == (
        usd("0.031"),
        usd("0.009"),
        0,
    )
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (usd("0.031"), 0)
    assert status.remaining_nanos == usd("0.969")


async def test_token_reserve_and_provider_response_commit_charge_what_estimate_cost_says(
    app, client, admin, pricing, org
):
    await upsert(admin, org, "cap", usd("10"))
    await prices_caught_up(app, pricing, "gpt-4o")
    reservation = await client.reserve(
        Subject(org=org, model="gpt-4o"), usage=Usage(input_tokens=1200, output_tokens=800)
    )
    held, _ = await estimate_cost(pricing, "gpt-4o", Usage(input_tokens=1200, output_tokens=800))
    assert reservation.reserved_nanos == held
    response = {
        "id": "chatcmpl-1",
        "choices": [{"message": {"role": "assistant", "content": "secret text"}}],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 310,
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    }
    done = await client.commit(org, reservation.reservation_id, provider_response=response)
    actual = Usage(input_tokens=1200, output_tokens=310, cached_input_tokens=1024)
    expected, version = await estimate_cost(pricing, "gpt-4o", actual)
    assert version == reservation.price_version
    assert done.usage == actual
    assert done.charged_nanos == expected > 0
    assert (await client.status(org, "cap")).spent_nanos == expected


async def test_reserve_retried_after_a_lost_answer_reuses_its_id_and_holds_once(
    app, client, admin, org
):
    await upsert(admin, org, "cap", usd("1.00"))
    lost = LoseAnswers("Reserve")
    async with BudgetClient(f"127.0.0.1:{app.port}", interceptors=[lost]) as lossy:
        reservation = await lossy.reserve(Subject(org=org), amount_nanos=usd("0.10"))
    ids = [r.reservation_id for r in lost.requests]
    assert len(ids) == 2, "the lost answer was not retried"
    assert ids == [reservation.reservation_id] * 2
    # The first attempt held; the retry got the first answer back, holding nothing more.
    assert (await client.status(org, "cap")).reserved_nanos == usd("0.10")


async def test_commit_retried_after_a_lost_answer_charges_once(app, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    lost = LoseAnswers("Commit", lose=2)
    async with BudgetClient(f"127.0.0.1:{app.port}", interceptors=[lost]) as client:
        reservation = await client.reserve(Subject(org=org), amount_nanos=usd("0.10"))
        done = await client.commit(org, reservation.reservation_id, actual_nanos=usd("0.07"))
        assert done.charged_nanos == usd("0.07")
        assert len(lost.requests) == 3
        assert {r.reservation_id for r in lost.requests} == {reservation.reservation_id}
        status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (usd("0.07"), 0)


async def test_retries_ride_out_a_service_that_comes_up_late_with_the_same_id(
    app, client, admin, org
):
    """UNAVAILABLE (nothing listens yet) is retried with backoff until a proxy comes up."""
    await upsert(admin, org, "cap", usd("1.00"))
    port = free_port()
    attempts: list[tuple[str, grpc.StatusCode]] = []

    class Record(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any):
            call = await continuation(details, request)
            attempts.append((request.reservation_id, await call.code()))
            return call

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", app.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def come_up_later() -> asyncio.Server:
        await asyncio.sleep(0.4)
        return await asyncio.start_server(forward, "127.0.0.1", port)

    proxy_task = asyncio.create_task(come_up_later())
    late = BudgetClient(
        f"127.0.0.1:{port}", retries=8, backoff=0.1, max_backoff=0.4, interceptors=[Record()]
    )
    try:
        reservation = await late.reserve(Subject(org=org), amount_nanos=usd("0.05"))
    finally:
        await late.close()
        proxy = await proxy_task
        proxy.close()
    codes = [code for _, code in attempts]
    assert codes[0] == grpc.StatusCode.UNAVAILABLE
    assert codes[-1] == grpc.StatusCode.OK
    assert {rid for rid, _ in attempts} == {reservation.reservation_id}
    assert (await client.status(org, "cap")).reserved_nanos == usd("0.05")


async def test_unreachable_service_raises_unavailable_after_bounded_retries(org):
    client = BudgetClient(f"127.0.0.1:{free_port()}", retries=2, backoff=0.05, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as failed:
            await client.reserve(Subject(org=org), amount_nanos=1)
    finally:
        await client.close()
    assert failed.value.attempts == 3
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 3 * 0.5 + 1


async def test_budget_exceeded_carries_every_refusing_budget_and_its_room(client, admin, org):
    await upsert(admin, org, "org-cap", usd("1.00"))
    await upsert(admin, org, "team-search", usd("0.25"), selector={"team": "search"})
    await upsert(admin, org, "openai", usd("50"), selector={"provider": "openai"})
    await client.reserve(Subject(org=org, team="ads"), amount_nanos=usd("0.70"))
    with pytest.raises(BudgetExceeded) as refused:
        await client.reserve(
            Subject(org=org, team="search", provider="openai"), amount_nanos=usd("0.50")
        )
    assert sorted(refused.value.refusals, key=lambda r: r.budget_id) == [
        Refusal(budget_id="org-cap", remaining_nanos=usd("0.30"), limit_nanos=usd("1.00")),
        Refusal(budget_id="team-search", remaining_nanos=usd("0.25"), limit_nanos=usd("0.25")),
    ]
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The refusal held nothing.
    assert (await client.status(org, "org-cap")).reserved_nanos == usd("0.70")


async def test_invalid_request_names_the_field(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    with pytest.raises(InvalidRequest) as short_ttl:
        await client.reserve(Subject(org=org), amount_nanos=1, ttl=0.2)
    assert short_ttl.value.field == "ttl"
    with pytest.raises(InvalidRequest) as bad_id:
        await client.reserve(Subject(org=org), amount_nanos=1, reservation_id="no spaces {}")
    assert bad_id.value.field == "reservation_id"
    with pytest.raises(InvalidRequest) as no_model:
        await client.reserve(Subject(org=org), usage=Usage(input_tokens=10, output_tokens=10))
    assert no_model.value.field == "subject.model"
    assert (await client.status(org, "cap")).reserved_nanos == 0


async def test_wrong_state_unknown_ids_and_reused_ids_map_to_their_errors(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    reservation = await client.reserve(Subject(org=org), amount_nanos=usd("0.01"))
    assert await client.release(org, reservation.reservation_id) == usd("0.01")
    assert await client.release(org, reservation.reservation_id) == usd("0.01")  # retry: same
    with pytest.raises(InvalidState):
        await client.commit(org, reservation.reservation_id, actual_nanos=1)
    with pytest.raises(NotFound):
        await client.status(org, "no-such-budget")
    with pytest.raises(IdempotencyConflict):
        await client.reserve(
            Subject(org=org), amount_nanos=usd("0.02"), reservation_id=reservation.reservation_id
        )


async def test_refund_with_the_same_refund_id_credits_once(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    reservation = await client.reserve(Subject(org=org), amount_nanos=usd("0.05"))
    await client.commit(org, reservation.reservation_id, actual_nanos=usd("0.03"))
    first = await client.refund(org, reservation.reservation_id, usd("0.01"))
    again = await client.refund(
        org, reservation.reservation_id, usd("0.01"), refund_id=first.refund_id
    )
    assert first.refunded_nanos == again.refunded_nanos == usd("0.01")
    assert (await client.status(org, "cap")).spent_nanos == usd("0.02")


async def test_extend_moves_the_hold_expiry(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    async with client.reserve(Subject(org=org), amount_nanos=5, ttl=timedelta(seconds=5)) as hold:
        expires = await hold.extend(600)
        assert expires - hold.reservation.expires_at > timedelta(seconds=500)
        hold.commit_amount(5)
    assert hold.outcome is Outcome.COMMITTED


async def test_guard_commits_the_recorded_usage_when_the_block_ends(
    app, client, admin, pricing, org
):
    await upsert(admin, org, "cap", usd("10"))
    await prices_caught_up(app, pricing, "claude-sonnet-4-5")
    subject = Subject(org=org, team="chat", model="claude-sonnet-4-5")
    async with client.reserve(subject, usage=Usage(input_tokens=1200, output_tokens=800)) as hold:
        assert (await client.status(org, "cap")).reserved_nanos == hold.reserved_nanos > 0
        hold.commit_usage(Usage(input_tokens=1200, output_tokens=150))
        assert hold.outcome is Outcome.PENDING  # recorded only
    expected, _ = await estimate_cost(
        pricing, "claude-sonnet-4-5", Usage(input_tokens=1200, output_tokens=150)
    )
    assert hold.outcome is Outcome.COMMITTED
    assert hold.result is not None and hold.result.charged_nanos == expected
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (expected, 0)


async def test_guard_releases_the_hold_and_reraises_when_the_block_raises(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    with pytest.raises(RuntimeError, match="provider down"):
        async with client.reserve(Subject(org=org), amount_nanos=usd("0.20")) as hold:
            assert (await client.status(org, "cap")).reserved_nanos == usd("0.20")
            raise RuntimeError("provider down")
    assert hold.outcome is Outcome.RELEASED
    assert hold.released_nanos == usd("0.20")
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)


async def test_guard_still_commits_a_recorded_cost_when_the_block_raises_after_it(
    client, admin, org
):
    await upsert(admin, org, "cap", usd("1.00"))
    with pytest.raises(KeyError):
        async with client.reserve(Subject(org=org), amount_nanos=usd("0.20")) as hold:
            hold.commit_amount(usd("0.12"))  # the model call returned: it was billed
            raise KeyError("parsing the answer failed")
    assert hold.outcome is Outcome.COMMITTED
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (usd("0.12"), 0)


async def test_guard_releases_and_warns_when_nothing_was_recorded(client, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))
    with pytest.warns(UnsettledHoldWarning, match="recorded no cost"):
        async with client.reserve(Subject(org=org), amount_nanos=usd("0.20")) as hold:
            pass
    assert hold.outcome is Outcome.RELEASED_UNRECORDED
    assert (await client.status(org, "cap")).reserved_nanos == 0
    # An explicit release says it on purpose: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with client.reserve(Subject(org=org), amount_nanos=usd("0.20")) as hold:
            hold.release()
    assert hold.outcome is Outcome.RELEASED


async def test_guard_refused_reserve_raises_before_the_block_runs(client, admin, org):
    await upsert(admin, org, "cap", usd("0.01"))
    ran = False
    with pytest.raises(BudgetExceeded) as refused:
        async with client.reserve(Subject(org=org), amount_nanos=usd("0.02")):
            ran = True
    assert not ran
    assert refused.value.budget_ids == ("cap",)


async def test_sync_client_reserves_commits_and_guards(app, admin, org):
    await upsert(admin, org, "cap", usd("1.00"))

    def work() -> tuple[int, int]:
        with BudgetClientSync(f"127.0.0.1:{app.port}") as sync:
            plain = sync.reserve(Subject(org=org), amount_nanos=usd("0.10"))
            sync.commit(org, plain.reservation_id, actual_nanos=usd("0.04"))
            with sync.reserve(Subject(org=org), amount_nanos=usd("0.10")) as hold:
                hold.commit_amount(usd("0.02"))
            assert hold.outcome is Outcome.COMMITTED
            try:
                with sync.reserve(Subject(org=org), amount_nanos=usd("0.10")):
                    raise ValueError("boom")
            except ValueError:
                pass
            with pytest.raises(BudgetExceeded):
                sync.reserve(Subject(org=org), amount_nanos=usd("5"))
            status = sync.status(org, "cap")
            return status.spent_nanos, status.reserved_nanos

    # In a thread: the service runs on this test's event loop, which must keep running.
    assert await asyncio.to_thread(work) == (usd("0.06"), 0)


async def test_float_money_is_refused_and_dollars_convert_exactly(client, org):
    with pytest.raises(TypeError, match="float"):
        usd_to_nanos(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        client.reserve(Subject(org=org), amount_nanos=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="usd_to_nanos"):
        client.reserve(Subject(org=org), amount_nanos=Decimal("0.5"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        await client.commit(org, "r-1", actual_nanos=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        await client.refund(org, "r-1", 2.5)  # type: ignore[arg-type]
    assert usd_to_nanos("0.04") == 40_000_000
    assert usd_to_nanos(Decimal("12.345678901")) == 12_345_678_901
    assert usd_to_nanos("1e-9") == 1
    assert usd_to_nanos(3) == 3_000_000_000
    assert usd_to_nanos("-0.5") == -500_000_000
    assert usd_to_nanos("0.1000000000000000000000000000000000") == 100_000_000
    assert usd_to_nanos("9223372036.854775807") == 2**63 - 1
    with pytest.raises(ValueError, match="precision"):
        usd_to_nanos("0.0000000001")
    with pytest.raises(ValueError, match="int64"):
        usd_to_nanos("9223372036.854775808")
    with pytest.raises(ValueError):
        usd_to_nanos("twelve")
    assert nanos_to_usd(40_000_000) == Decimal("0.04")


# ---------------------------------------------------------------------------------------------
# Provider shapes, committed through the service: what it priced is what the provider reported.

OPENAI_CHAT = ChatCompletion.model_validate({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "secret answer"}}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
              "prompt_tokens_details": {"cached_tokens": 1024},
              "completion_tokens_details": {"reasoning_tokens": 0}},
})  # fmt: skip
OPENAI_LAST_CHUNK = ChatCompletionChunk.model_validate({
    "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
    "choices": [],
    "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
})  # fmt: skip
OPENAI_RESPONSES_USAGE = ResponseUsage.model_validate({
    "input_tokens": 2000, "output_tokens": 500, "total_tokens": 2500,
    "input_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 200},
})  # fmt: skip
ANTHROPIC_MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "secret answer"}],
    "usage": {"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 1000,
              "cache_creation_input_tokens": 200,
              "cache_creation": {"ephemeral_5m_input_tokens": 150,
                                 "ephemeral_1h_input_tokens": 50}},
}  # fmt: skip
ANTHROPIC_STREAM = [
    {"type": "message_start", "message": {"id": "msg_2", "type": "message", "content": [],
     "usage": {"input_tokens": 30, "output_tokens": 1, "cache_read_input_tokens": 500}}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 77}},
    {"type": "message_stop"},
]  # fmt: skip
GEMINI_STREAM = [
    {"candidates": [{"content": {"parts": [{"text": "a"}]}}],
     "usageMetadata": {"promptTokenCount": 3000, "candidatesTokenCount": 10,
                       "cachedContentTokenCount": 1000}},
    {"candidates": [{"content": {"parts": [{"text": "b"}]}}],
     "usageMetadata": {"promptTokenCount": 3000, "candidatesTokenCount": 500,
                       "thoughtsTokenCount": 250, "cachedContentTokenCount": 1000}},
]  # fmt: skip


class GeminiUsageMetadata(BaseModel):
    """Stands in for google-genai's pydantic GenerateContentResponseUsageMetadata."""

    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    cached_content_token_count: int | None = None
    thoughts_token_count: int | None = None
    total_token_count: int | None = None


class GeminiResponse(BaseModel):
    """Stands in for google-genai's GenerateContentResponse (snake_case attributes)."""

    text: str
    usage_metadata: GeminiUsageMetadata | None = None


GEMINI_SDK = GeminiResponse(
    text="secret answer",
    usage_metadata=GeminiUsageMetadata(
        prompt_token_count=800, candidates_token_count=120, thoughts_token_count=30,
        total_token_count=950,
    ),
)  # fmt: skip


def streamed(events: list[dict[str, Any]]) -> StreamUsage:
    merged = StreamUsage()
    for event in events:
        merged.add(event)
    return merged


SHAPES: list[tuple[str, str, Callable[[], object], Usage]] = [
    ("openai-chat-sdk", "gpt-4o", lambda: OPENAI_CHAT,
     Usage(input_tokens=1200, output_tokens=300, cached_input_tokens=1024)),
    ("openai-last-stream-chunk", "gpt-4o", lambda: OPENAI_LAST_CHUNK,
     Usage(input_tokens=900, output_tokens=40)),
    ("openai-responses-usage-sdk", "gpt-4o", lambda: OPENAI_RESPONSES_USAGE,
     Usage(input_tokens=2000, output_tokens=500, cached_input_tokens=1500, reasoning_tokens=200)),
    ("anthropic-message-json", "claude-sonnet-4-5", lambda: json.dumps(ANTHROPIC_MESSAGE),
     Usage(input_tokens=1250, output_tokens=400, cached_input_tokens=1000,
           cache_write_tokens=150, cache_write_1h_tokens=50)),
    ("anthropic-stream", "claude-sonnet-4-5", lambda: streamed(ANTHROPIC_STREAM),
     Usage(input_tokens=530, output_tokens=77, cached_input_tokens=500)),
    ("gemini-sdk-snake-case", "gemini-2.5-pro", lambda: GEMINI_SDK,
     Usage(input_tokens=800, output_tokens=150, reasoning_tokens=30)),
    ("gemini-stream", "gemini-2.5-pro", lambda: streamed(GEMINI_STREAM),
     Usage(input_tokens=3000, output_tokens=750, cached_input_tokens=1000, reasoning_tokens=250)),
]  # fmt: skip


@pytest.mark.parametrize(("model", "response", "usage"), [s[1:] for s in SHAPES],
                         ids=[s[0] for s in SHAPES])  # fmt: skip
async def test_commit_response_bills_each_provider_shape_as_the_provider_reported(
    app, client, admin, pricing, org, model: str, response: Callable[[], object], usage: Usage
):
    await upsert(admin, org, "cap", usd("10"))
    await prices_caught_up(app, pricing, model)
    subject = Subject(org=org, model=model)
    async with client.reserve(subject, usage=Usage(input_tokens=4000, output_tokens=1000)) as hold:
        hold.commit_response(response())
    assert hold.result is not None
    assert hold.result.usage == usage
    expected, _ = await estimate_cost(pricing, model, usage)
    assert hold.result.charged_nanos == expected > 0


def test_provider_usage_sends_the_usage_alone_never_the_text():
    sent = json.dumps(provider_usage(OPENAI_CHAT))
    assert "secret" not in sent
    assert provider_usage(ANTHROPIC_MESSAGE) == {"usage": ANTHROPIC_MESSAGE["usage"]}
    assert list(provider_usage(GEMINI_STREAM[1])) == ["usageMetadata"]
    assert "secret" not in json.dumps(provider_usage(GEMINI_SDK))


def test_provider_usage_refuses_what_carries_no_usage():
    no_usage = ChatCompletionChunk.model_validate(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
    )
    with pytest.raises(ValueError, match="include_usage"):
        provider_usage(no_usage)
    with pytest.raises(ValueError, match="StreamUsage"):
        provider_usage(ANTHROPIC_STREAM[2])  # message_delta: output tokens only
    with pytest.raises(ValueError, match="include_usage"):
        StreamUsage().usage()
    with pytest.raises(TypeError):
        provider_usage(object())


async def test_unused_reserve_call_sends_nothing(client, admin, org):
    """`client.reserve(...)` without await or `async with` reserves nothing."""
    await upsert(admin, org, "cap", usd("1.00"))
    pending: Awaitable[object] = client.reserve(Subject(org=org), amount_nanos=usd("0.5"))
    assert (await client.status(org, "cap")).reserved_nanos == 0
    await pending
    assert (await client.status(org, "cap")).reserved_nanos == usd("0.5")
