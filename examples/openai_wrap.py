"""An OpenAI-SDK chat completion inside a budget hold: reserve by tokens, call, commit the usage.

    BUDGET_ADDR=127.0.0.1:50051 OPENAI_API_KEY=sk-... \\
        .venv/bin/python examples/openai_wrap.py --org demo --team search "Say hello"

Any OpenAI-compatible endpoint works (`OPENAI_BASE_URL`). The hold is the prompt's tokens plus
`max_completion_tokens`, priced by the budget service with the model's catalog price; the commit
sends the response's `usage` (cached prompt tokens and reasoning tokens included) and is priced
with the same price version. A refused reservation raises `BudgetExceeded` before any call is
made; a failed call releases the hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from budget_client import BudgetClient, BudgetExceeded, StreamUsage, Subject, Usage

# Holds should err high: about 3 characters a token over-counts typical English and code, and
# each message costs a few tokens of framing. Use tiktoken for a tighter estimate.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4


def estimate_prompt_tokens(messages: Iterable[ChatCompletionMessageParam]) -> int:
    """A generous estimate of a chat prompt's tokens, for the hold (the commit is exact)."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        text = content if isinstance(content, str) else json.dumps(content)
        total += TOKENS_PER_MESSAGE + len(text) // CHARS_PER_TOKEN + 1
    return total


async def budgeted_chat(
    budget: BudgetClient,
    llm: AsyncOpenAI,
    subject: Subject,
    *,
    model: str,
    messages: Sequence[ChatCompletionMessageParam],
    max_completion_tokens: int,
) -> ChatCompletion:
    """One chat completion, held against every budget covering `subject` and then charged."""
    estimate = Usage(
        input_tokens=estimate_prompt_tokens(messages), output_tokens=max_completion_tokens
    )
    async with budget.reserve(replace(subject, model=model), usage=estimate) as hold:
        started = time.monotonic()
        response = await llm.chat.completions.create(
            model=model, messages=messages, max_completion_tokens=max_completion_tokens
        )
        hold.commit_response(response, latency_ms=round((time.monotonic() - started) * 1000))
    return response


async def budgeted_chat_stream(
    budget: BudgetClient,
    llm: AsyncOpenAI,
    subject: Subject,
    *,
    model: str,
    messages: Sequence[ChatCompletionMessageParam],
    max_completion_tokens: int,
) -> AsyncIterator[str]:
    """A streamed chat completion's text, held and then charged from its final usage chunk.

    Until that chunk arrives, each text chunk records a provisional usage (the prompt estimate
    and one token per chunk so far), so a stream the caller abandons still bills about what
    was generated; the final chunk's exact usage replaces it.
    """
    prompt = estimate_prompt_tokens(messages)
    estimate = Usage(input_tokens=prompt, output_tokens=max_completion_tokens)
    async with budget.reserve(replace(subject, model=model), usage=estimate) as hold:
        stream = await llm.chat.completions.create(
            model=model,
            messages=messages,
            max_completion_tokens=max_completion_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage, chunks = StreamUsage(), 0
        async for chunk in stream:
            if usage.add(chunk):
                hold.commit_response(usage)
            for choice in chunk.choices:
                if choice.delta.content:
                    chunks += 1
                    if not usage.seen:
                        hold.commit_usage(Usage(input_tokens=prompt, output_tokens=chunks))
                    yield choice.delta.content


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--org", required=True)
    parser.add_argument("--team", default="")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": args.prompt}]
    async with BudgetClient() as budget:
        try:
            response = await budgeted_chat(
                budget,
                AsyncOpenAI(),
                Subject(org=args.org, team=args.team, provider="openai"),
                model=args.model,
                messages=messages,
                max_completion_tokens=args.max_tokens,
            )
        except BudgetExceeded as refused:
            for refusal in refused.refusals:
                print(f"refused by {refusal.budget_id}: {refusal.remaining_nanos} nanos left")
            return 3
    print(response.choices[0].message.content)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
