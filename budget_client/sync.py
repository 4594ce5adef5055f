"""`BudgetClientSync`: the async client for synchronous code, on a private event loop.

Why a private event loop in a background thread rather than a grpc sync channel: the retry
loop, the idempotency keys, the error decoding and the hold's settling rules then exist once,
in `BudgetClient`, and the two clients cannot drift apart. It also works where `asyncio.run`
cannot: in a thread that already runs an event loop (a sync call blocks that thread, not the
client's loop). The price is one thread per client and a hop between threads per call
(tens of microseconds, next to a network round trip); share one client per process.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Coroutine, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from budget_client.client import BudgetClient, Hold, Outcome, ReserveCall, Ttl, UnsettledHoldWarning
from budget_client.models import (
    BudgetStatus,
    CommitResult,
    Priority,
    RefundResult,
    Reservation,
    Subject,
    Usage,
)
from budget_client.money import Nanos

T = TypeVar("T")


class BudgetClientSync:
    """The same calls as `BudgetClient`, blocking; same arguments, defaults and errors.

    `with BudgetClientSync() as client:` (or `client.close()`). `client.reserve(...)` reserves
    at once and answers a `SyncHold`: use it in `with` to settle it when the block ends, by
    the rules `Hold` documents, or settle it yourself.
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="budget-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> BudgetClient:  # the channel belongs to the loop that makes it
            return BudgetClient(
                addr,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                credentials=credentials,
                metadata=metadata,
                interceptors=interceptors,
                channel_options=channel_options,
            )

        self._client = self._run(make())
        self.addr = self._client.addr

    def __enter__(self) -> BudgetClientSync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the client's thread; a second close does nothing."""
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def reserve(
        self,
        subject: Subject,
        *,
        amount_nanos: Nanos | None = None,
        usage: Usage | None = None,
        ttl: Ttl | None = None,
        reservation_id: str | None = None,
        priority: Priority | None = None,
    ) -> SyncHold:
        """Hold an estimate now (see `BudgetClient.reserve`); answers a `SyncHold`."""
        call = self._client.reserve(
            subject,
            amount_nanos=amount_nanos,
            usage=usage,
            ttl=ttl,
            reservation_id=reservation_id,
            priority=priority,
        )
        reservation = self._run(_awaited(call))
        return SyncHold(self, Hold(self._client, reservation))

    def commit(
        self,
        org: str,
        reservation_id: str,
        *,
        actual_nanos: Nanos | None = None,
        usage: Usage | None = None,
        provider_response: object = None,
        latency_ms: int | None = None,
    ) -> CommitResult:
        """Charge the actual cost (see `BudgetClient.commit`)."""
        return self._run(
            self._client.commit(
                org,
                reservation_id,
                actual_nanos=actual_nanos,
                usage=usage,
                provider_response=provider_response,
                latency_ms=latency_ms,
            )
        )

    def release(self, org: str, reservation_id: str) -> Nanos:
        """Void a hold; answers the nanos given back."""
        return self._run(self._client.release(org, reservation_id))

    def refund(
        self, org: str, reservation_id: str, amount_nanos: Nanos, *, refund_id: str | None = None
    ) -> RefundResult:
        """Credit back committed spend (see `BudgetClient.refund`)."""
        return self._run(
            self._client.refund(org, reservation_id, amount_nanos, refund_id=refund_id)
        )

    def extend(self, org: str, reservation_id: str, ttl: Ttl) -> datetime:
        """Keep a hold alive for `ttl` from now; answers the new expiry."""
        return self._run(self._client.extend(org, reservation_id, ttl))

    def status(self, org: str, budget_id: str) -> BudgetStatus:
        """A budget's current period: spent, reserved, remaining."""
        return self._run(self._client.status(org, budget_id))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("BudgetClientSync called from its own loop: use BudgetClient")
        if self._closed:
            coroutine.close()
            raise RuntimeError("BudgetClientSync is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


class SyncHold:
    """A reservation made by `BudgetClientSync.reserve`, settled by `with` (rules: `Hold`).

    Record inside the block with `commit_response`, `commit_usage`, `commit_amount` or
    `release`; `settle()` applies the record at once; `result` / `released_nanos` after.
    """

    def __init__(self, client: BudgetClientSync, hold: Hold) -> None:
        self._client = client
        self._hold = hold

    @property
    def reservation(self) -> Reservation:
        return self._hold.reservation

    @property
    def reservation_id(self) -> str:
        return self._hold.reservation_id

    @property
    def org(self) -> str:
        return self._hold.org

    @property
    def reserved_nanos(self) -> Nanos:
        return self._hold.reserved_nanos

    @property
    def outcome(self) -> Outcome:
        return self._hold.outcome

    @property
    def result(self) -> CommitResult | None:
        return self._hold.result

    @property
    def released_nanos(self) -> Nanos | None:
        return self._hold.released_nanos

    def commit_usage(self, usage: Usage, *, latency_ms: int | None = None) -> None:
        """Record the actual tokens."""
        self._hold.commit_usage(usage, latency_ms=latency_ms)

    def commit_response(self, response: object, *, latency_ms: int | None = None) -> None:
        """Record a provider response, final streaming chunk, usage object or StreamUsage."""
        self._hold.commit_response(response, latency_ms=latency_ms)

    def commit_amount(self, actual_nanos: Nanos, *, latency_ms: int | None = None) -> None:
        """Record the actual cost in nano-USD."""
        self._hold.commit_amount(actual_nanos, latency_ms=latency_ms)

    def release(self) -> None:
        """Record that no model call was made."""
        self._hold.release()

    def extend(self, ttl: Ttl) -> datetime:
        """Keep the hold alive for `ttl` from now."""
        return self._client._run(self._hold.extend(ttl))

    def settle(self) -> Outcome:
        """Apply what was recorded now (nothing recorded: release)."""
        return self._client._run(self._hold.settle())

    def __enter__(self) -> SyncHold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome = self._client._run(self._hold._settle_on_exit(exc))
        if outcome is Outcome.RELEASED_UNRECORDED and exc is None:
            warnings.warn(
                f"reservation {self.reservation_id}: the block recorded no cost, so its hold"
                " was released; call hold.release() when no model call was made",
                UnsettledHoldWarning,
                stacklevel=2,
            )


async def _awaited(call: ReserveCall) -> Reservation:
    return await call
