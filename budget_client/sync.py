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
import functools
import threading
import warnings
from collections.abc import Callable, Coroutine
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from budget_client.client import BudgetClient, Hold, Outcome, Ttl, UnsettledHoldWarning
from budget_client.models import CommitResult, Priority, Reservation, Subject, Usage
from budget_client.money import Nanos

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[BudgetClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[BudgetClientSync, P], T]:
    """`BudgetClient.method` as a blocking method of `BudgetClientSync`: the same parameters,
    types, defaults and docstring, run on the client's loop."""

    @functools.wraps(method)
    def call(self: BudgetClientSync, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    return call


def _same_parameters(
    source: Callable[Concatenate[Any, P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[BudgetClientSync, P], None]]:
    """Give an `__init__(self, *args, **kwargs)` the parameters of `source` (for type checkers
    and `inspect.signature`)."""

    def typed(init: Callable[..., None]) -> Callable[Concatenate[BudgetClientSync, P], None]:
        return functools.update_wrapper(init, source, assigned=())

    return typed


class BudgetClientSync:
    """The same calls as `BudgetClient`, blocking; same arguments, defaults and errors.

    `with BudgetClientSync() as client:` (or `client.close()`). `client.reserve(...)` reserves
    at once and answers a `SyncHold`: use it in `with` to settle it when the block ends, by
    the rules `Hold` documents, or settle it yourself.
    """

    @_same_parameters(BudgetClient.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # BudgetClient opens its channel at first use, which is on the private loop.
        self._client = BudgetClient(*args, **kwargs)
        self.addr = self._client.addr
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="budget-client", daemon=True
        )
        self._thread.start()
        self._closed = False

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
        reservation = self._run(call._reserve())
        return SyncHold(self, Hold(self._client, reservation))

    commit = _blocking(BudgetClient.commit)
    release = _blocking(BudgetClient.release)
    refund = _blocking(BudgetClient.refund)
    extend = _blocking(BudgetClient.extend)
    status = _blocking(BudgetClient.status)

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
