"""The examples, run against a fake OpenAI-compatible provider on loopback and the real service.

The fake answers /v1/chat/completions with an OpenAI-shaped response whose usage has cached
prompt tokens (or streams it, usage in the last chunk), or fails with HTTP 500. Each example's
spend must equal EstimateCost of the usage the provider returned, and a failed call must leave
nothing held.
"""

from __future__ import annotations

import os

# Before litellm is imported: otherwise it fetches a price map from the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import importlib.util
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import litellm
import openai
import pytest

from budget_client import BudgetClient, BudgetExceeded, Subject, Usage
from tests.helpers import upsert, usd
from tests.test_client import estimate_cost, prices_caught_up
from tests.test_client import pricing as pricing  # a session fixture, shared

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODEL = "gpt-4o"
RETURNED = Usage(input_tokens=1200, output_tokens=310, cached_input_tokens=1024)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


openai_wrap = load_example("openai_wrap")
litellm_callback = load_example("litellm_callback")


class FakeProvider(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint: `status` 200 answers, anything else fails."""

    status = 200
    on_request: Callable[[], None] | None = None

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeProvider

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(body)
        if self.server.on_request is not None:
            self.server.on_request()
        if self.path != "/v1/chat/completions" or self.server.status != 200:
            self._send(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
        elif body.get("stream"):
            self._stream(body)
        else:
            self._send(200, completion(body["model"]))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                "model": body["model"]}  # fmt: skip
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "lo"}}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage_json()})
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def usage_json() -> dict[str, Any]:
    return {
        "prompt_tokens": RETURNED.input_tokens,
        "completion_tokens": RETURNED.output_tokens,
        "total_tokens": RETURNED.input_tokens + RETURNED.output_tokens,
        "prompt_tokens_details": {"cached_tokens": RETURNED.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello"}}],
        "usage": usage_json(),
    }  # fmt: skip


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    server = FakeProvider()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[BudgetClient]:
    async with BudgetClient(f"127.0.0.1:{app.port}") as c:
        yield c


def watch_held(provider: FakeProvider, client: BudgetClient, org: str) -> list[int]:
    """What the budget held while the provider was handling each request (asked from the
    provider's thread, on the test's event loop, which is free while it awaits the answer)."""
    loop = asyncio.get_running_loop()
    held: list[int] = []

    def ask() -> None:
        status = asyncio.run_coroutine_threadsafe(client.status(org, "cap"), loop).result(5)
        held.append(status.reserved_nanos)

    provider.on_request = ask
    return held


MESSAGES = [{"role": "user", "content": "Say hello in one word."}]


async def test_openai_wrap_charges_the_returned_usage_at_catalog_prices(
    app, client, admin, pricing, provider, org
):
    await upsert(admin, org, "cap", usd("10"))
    await prices_caught_up(app, pricing, MODEL)
    held = watch_held(provider, client, org)
    async with openai.AsyncOpenAI(base_url=provider.base_url, api_key="test", max_retries=0) as llm:
        response = await openai_wrap.budgeted_chat(
            client, llm, Subject(org=org, team="search"), model=MODEL, messages=MESSAGES,
            max_completion_tokens=200,
        )  # fmt: skip
    assert response.choices[0].message.content == "Hello"
    assert provider.requests[0]["max_completion_tokens"] == 200
    assert held[0] > 0, "nothing was held during the call"
    expected, _ = await estimate_cost(pricing, MODEL, RETURNED)
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (expected, 0)
    assert expected > 0


async def test_openai_wrap_stream_charges_the_final_usage_chunk(
    app, client, admin, pricing, provider, org
):
    await upsert(admin, org, "cap", usd("10"))
    await prices_caught_up(app, pricing, MODEL)
    async with openai.AsyncOpenAI(base_url=provider.base_url, api_key="test", max_retries=0) as llm:
        stream = openai_wrap.budgeted_chat_stream(
            client, llm, Subject(org=org), model=MODEL, messages=MESSAGES,
            max_completion_tokens=200,
        )  # fmt: skip
        text = [piece async for piece in stream]
    assert "".join(text) == "Hello"
    assert provider.requests[0]["stream_options"] == {"include_usage": True}
    expected, _ = await estimate_cost(pricing, MODEL, RETURNED)
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (expected, 0)


async def test_openai_wrap_releases_the_hold_when_the_provider_fails(client, admin, provider, org):
    await upsert(admin, org, "cap", usd("10"))
    provider.status = 500
    held = watch_held(provider, client, org)
    async with openai.AsyncOpenAI(base_url=provider.base_url, api_key="test", max_retries=0) as llm:
        with pytest.raises(openai.InternalServerError):
            await openai_wrap.budgeted_chat(
                client, llm, Subject(org=org), model=MODEL, messages=MESSAGES,
                max_completion_tokens=200,
            )  # fmt: skip
    assert held[0] > 0, "nothing was held during the call"
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)


async def test_openai_wrap_refused_reservation_never_calls_the_provider(
    client, admin, provider, org
):
    await upsert(admin, org, "cap", 1)
    async with openai.AsyncOpenAI(base_url=provider.base_url, api_key="test", max_retries=0) as llm:
        with pytest.raises(BudgetExceeded):
            await openai_wrap.budgeted_chat(
                client, llm, Subject(org=org), model=MODEL, messages=MESSAGES,
                max_completion_tokens=200,
            )  # fmt: skip
    assert provider.requests == []


@pytest.fixture
def callback(client: BudgetClient) -> Iterator[Any]:
    registered = litellm_callback.BudgetCallback(client)
    before = list(litellm.callbacks)
    litellm.callbacks = [*before, registered]
    litellm.suppress_debug_info = True
    try:
        yield registered
    finally:
        # LiteLLM copies callbacks into its own lists and keeps one instance per class: take
        # this one out of every list, or the next test's callback is never called.
        litellm.logging_callback_manager.remove_callback_from_all_lists(registered)
        litellm.callbacks = before


async def test_litellm_callback_commits_the_returned_usage_at_catalog_prices(
    app, client, admin, pricing, provider, callback, org
):
    await upsert(admin, org, "cap", usd("10"))
    await prices_caught_up(app, pricing, MODEL)
    held = watch_held(provider, client, org)
    reservation_id = f"litellm-{org}"
    response = await callback.acompletion(
        Subject(org=org, team="search"), model=f"openai/{MODEL}", messages=MESSAGES,
        max_tokens=200, reservation_id=reservation_id, api_base=provider.base_url,
        api_key="test", max_retries=0,
    )  # fmt: skip
    assert response.choices[0].message.content == "Hello"
    assert held[0] > 0, "nothing was held during the call"
    async with asyncio.timeout(10):
        assert await callback.settled(reservation_id) == "committed"
    expected, _ = await estimate_cost(pricing, MODEL, RETURNED)
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (expected, 0)
    assert expected > 0


async def test_litellm_callback_releases_the_hold_when_the_provider_fails(
    client, admin, provider, callback, org
):
    await upsert(admin, org, "cap", usd("10"))
    provider.status = 500
    held = watch_held(provider, client, org)
    reservation_id = f"litellm-{org}"
    with pytest.raises(litellm.InternalServerError):
        await callback.acompletion(
            Subject(org=org), model=f"openai/{MODEL}", messages=MESSAGES, max_tokens=200,
            reservation_id=reservation_id, api_base=provider.base_url, api_key="test",
            max_retries=0,
        )  # fmt: skip
    assert held[0] > 0, "nothing was held during the call"
    async with asyncio.timeout(10):
        # "released", not "released by the caller": LiteLLM's failure callback did it.
        assert await callback.settled(reservation_id) == "released"
    status = await client.status(org, "cap")
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)
