"""LiteLLM with budgets: reserve before `litellm.acompletion`, settle in a CustomLogger.

    BUDGET_ADDR=127.0.0.1:50051 OPENAI_API_KEY=sk-... \\
        .venv/bin/python examples/litellm_callback.py --org demo "Say hello"

The pattern LiteLLM's SDK supports cleanly: its callbacks cannot refuse a call (an exception
in `async_log_pre_api_call` is logged and swallowed; `async_pre_call_hook` runs in the proxy
only), so `BudgetCallback.acompletion` reserves first, where a refusal stops the call, and
passes the reservation in `metadata`, which LiteLLM hands to every callback. The callback then
commits the response's usage on `async_log_success_event` and releases the hold on
`async_log_failure_event`. LiteLLM fires the success callback after `acompletion` has
returned, from its logging worker (`settled()` / `drain()` wait for it); the failure callback
before the exception reaches the caller. A streamed call's success callback gets the
assembled response, with usage when the stream reported it
(`stream_options={"include_usage": True}`).

Keep LiteLLM's own retries (`num_retries`) off for a budgeted call, or give each attempt its
own reservation: the failure callback of a failed attempt releases the hold a retry would need.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

# LiteLLM fetches a price map from the internet at import unless told to use its own copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from litellm.integrations.custom_logger import CustomLogger

from budget_client import BudgetClient, BudgetClientError, BudgetExceeded, Subject, Usage

METADATA_KEY = "budget_reservation"
log = logging.getLogger("examples.litellm_callback")


class BudgetCallback(CustomLogger):
    """Commits a budget reservation when LiteLLM reports success, releases it on failure.

    Only calls whose `metadata` carries `budget_reservation` ({"org", "reservation_id"}) are
    touched. A settle that fails is logged; the hold then expires after its TTL. Register one
    per process: LiteLLM keeps a single instance of a CustomLogger class in its lists.
    """

    def __init__(self, budget: BudgetClient) -> None:
        super().__init__()
        self.budget = budget
        self._settled: dict[str, asyncio.Future[str]] = {}

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        held = reservation_of(kwargs)
        if held is None:
            return
        org, reservation_id = held
        latency_ms = max(0, round((end_time - start_time).total_seconds() * 1000))
        try:
            await self.budget.commit(
                org, reservation_id, provider_response=response_obj, latency_ms=latency_ms
            )
            self._mark(reservation_id, "committed")
        except (BudgetClientError, ValueError) as failed:
            log.warning("budget commit failed for %s: %s", reservation_id, failed)
            self._mark(reservation_id, f"commit failed: {failed}")

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        held = reservation_of(kwargs)
        if held is None:
            return
        org, reservation_id = held
        try:
            await self.budget.release(org, reservation_id)
            self._mark(reservation_id, "released")
        except BudgetClientError as failed:
            log.warning("budget release failed for %s: %s", reservation_id, failed)
            self._mark(reservation_id, f"release failed: {failed}")

    async def acompletion(
        self,
        subject: Subject,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        reservation_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """`litellm.acompletion` under a hold: the prompt's tokens (LiteLLM's counter) plus
        `max_tokens`, priced by the budget service for `model`; this callback settles it.

        Raises `BudgetExceeded` without calling the model when a hard budget has no room.
        `reservation_id` is the idempotency key (a uuid4 when not given).
        """
        estimate = Usage(
            input_tokens=litellm.token_counter(model=model, messages=messages),
            output_tokens=max_tokens,
        )
        reservation = await self.budget.reserve(
            replace(subject, model=model), usage=estimate, reservation_id=reservation_id
        )
        self._future(reservation.reservation_id)  # pending until a callback settles it
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata[METADATA_KEY] = {
            "org": reservation.org,
            "reservation_id": reservation.reservation_id,
        }
        try:
            return await litellm.acompletion(
                model=model, messages=messages, max_tokens=max_tokens, metadata=metadata, **kwargs
            )
        except BaseException:
            # The failure callback has released it already, unless the call failed before
            # LiteLLM set up its logging; a second release is an idempotent retry.
            try:
                await self.budget.release(reservation.org, reservation.reservation_id)
                self._mark(reservation.reservation_id, "released by the caller")
            except BudgetClientError as failed:
                log.warning("budget release failed for %s: %s", reservation.reservation_id, failed)
            raise

    async def drain(self) -> None:
        """Wait until every call this callback holds is settled: before closing the
        BudgetClient, so no commit is cut off (bound it with `asyncio.timeout`)."""
        pending = [f for f in self._settled.values() if not f.done()]
        if pending:
            await asyncio.wait(pending)
        self._settled = {rid: f for rid, f in self._settled.items() if not f.done()}

    async def settled(self, reservation_id: str) -> str:
        """How the callbacks settled a reservation: "committed", "released", or the failure
        (waits for LiteLLM to run them; bound it with `asyncio.timeout`)."""
        outcome = await asyncio.shield(self._future(reservation_id))
        self._settled.pop(reservation_id, None)
        return outcome

    def _future(self, reservation_id: str) -> asyncio.Future[str]:
        if reservation_id not in self._settled:
            self._settled[reservation_id] = asyncio.get_running_loop().create_future()
        return self._settled[reservation_id]

    def _mark(self, reservation_id: str, outcome: str) -> None:
        future = self._future(reservation_id)
        if not future.done():
            future.set_result(outcome)


def reservation_of(kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(org, reservation_id) that `BudgetCallback.acompletion` put in the call's metadata."""
    metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
    held = metadata.get(METADATA_KEY)
    if not isinstance(held, Mapping):
        return None
    return str(held["org"]), str(held["reservation_id"])


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--org", required=True)
    parser.add_argument("--team", default="")
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    async with BudgetClient() as budget:
        callback = BudgetCallback(budget)
        litellm.callbacks = [*litellm.callbacks, callback]
        try:
            response = await callback.acompletion(
                Subject(org=args.org, team=args.team),
                model=args.model,
                messages=[{"role": "user", "content": args.prompt}],
                max_tokens=args.max_tokens,
            )
        except BudgetExceeded as refused:
            print(f"refused by {', '.join(refused.budget_ids)}")
            return 3
        print(response.choices[0].message.content)
        async with asyncio.timeout(5):  # the success callback runs after acompletion returned
            await callback.drain()
        return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
