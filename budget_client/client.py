"""The async client: typed calls with deadlines, idempotent retries, and the hold guard.

    async with BudgetClient() as client:
        async with client.reserve(Subject(org="acme", model="gpt-4o"),
                                  usage=Usage(input_tokens=1200, output_tokens=800)) as hold:
            response = await openai.chat.completions.create(...)
            hold.commit_response(response)

Every call has a deadline (`timeout`, 2 s by default) and is retried on UNAVAILABLE and
DEADLINE_EXCEEDED up to `retries` more times with capped exponential backoff and jitter. The
retries resend the very same request: reservation_id and refund_id are generated once per
logical call (uuid4 unless given), so a retry whose first attempt did reach the service gets
the first answer back and is never charged twice.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import uuid
import warnings
from collections.abc import Awaitable, Callable, Generator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from budget_client import providers
from budget_client.errors import RETRYABLE, BudgetClientError, from_rpc_error
from budget_client.models import (
    BudgetStatus,
    CommitResult,
    Priority,
    RefundResult,
    Reservation,
    Subject,
    Usage,
)
from budget_client.money import Nanos, check_nanos
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc

DEFAULT_ADDR = "127.0.0.1:50051"

# A restarted service should be found again within a retry or two, not after gRPC's default
# reconnect backoff (1 s, growing to 120 s) during which every call fails at once.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

log = logging.getLogger("budget_client")
Ttl = float | timedelta


class UnsettledHoldWarning(UserWarning):
    """A guarded block ended normally without recording a cost or a release."""


class BudgetClient:
    """Async client of budget.v1.BudgetService (and GetBudgetStatus of the admin service).

    `addr` defaults to $BUDGET_ADDR, else 127.0.0.1:50051. `timeout` is each attempt's
    deadline in seconds; `retries` how many more attempts UNAVAILABLE / DEADLINE_EXCEEDED get,
    waiting `backoff` seconds, doubling up to `max_backoff` (with jitter), so a call gives up
    after at most about (retries + 1) * timeout + the waits, raising `Unavailable`.
    `credentials` switches to TLS; `metadata` is sent with every call (e.g. x-actor,
    traceparent); `interceptors` and `channel_options` go to the grpc.aio channel.

    Use it as `async with BudgetClient() as client:` or call `await client.close()`.
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
        if timeout <= 0:
            raise ValueError(f"timeout is {timeout}: give each attempt a positive deadline")
        if retries < 0:
            raise ValueError(f"retries is {retries}: use 0 for no retry")
        self.addr = addr or os.environ.get("BUDGET_ADDR") or DEFAULT_ADDR
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._metadata = tuple(metadata)
        self._credentials = credentials
        self._interceptors = interceptors
        self._options = [*_CHANNEL_OPTIONS, *channel_options]
        self._channel: grpc.aio.Channel | None = None
        self._stubs: tuple[Any, Any] | None = None

    def _open(self) -> tuple[Any, Any]:
        """(BudgetService stub, BudgetAdminService stub) on a channel made at first use, so it
        belongs to the event loop that uses it even when the client was made outside one."""
        if self._stubs is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(
                    self.addr, self._options, None, self._interceptors
                )
            else:
                self._channel = grpc.aio.secure_channel(
                    self.addr, self._credentials, self._options, None, self._interceptors
                )
            self._stubs = (
                budget_pb2_grpc.BudgetServiceStub(self._channel),  # type: ignore[no-untyped-call]
                budget_pb2_grpc.BudgetAdminServiceStub(self._channel),  # type: ignore[no-untyped-call]
            )
        return self._stubs

    async def __aenter__(self) -> BudgetClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled. The client reopens on next use."""
        channel, self._channel, self._stubs = self._channel, None, None
        if channel is not None:
            await channel.close(None)

    def reserve(
        self,
        subject: Subject,
        *,
        amount_nanos: Nanos | None = None,
        usage: Usage | None = None,
        ttl: Ttl | None = None,
        reservation_id: str | None = None,
        priority: Priority | None = None,
    ) -> ReserveCall:
        """Hold an estimate on every budget covering `subject`, all or nothing.

        Give exactly one estimate: `amount_nanos`, or `usage` (prompt tokens and the *maximum*
        output tokens, priced with `subject.model`; a token reservation can then be committed
        with usage or a provider response). `ttl` (seconds or timedelta) is how long the hold
        lives without Commit, Release or Extend (service default 300 s). `reservation_id` is
        the idempotency key, a uuid4 when not given.

        The answer is both awaitable and an async context manager:
        `reservation = await client.reserve(...)` holds and returns the `Reservation`;
        `async with client.reserve(...) as hold:` holds and settles it when the block ends
        (see `Hold`). Raises `BudgetExceeded` when a hard budget has no room.
        """
        if (amount_nanos is None) == (usage is None):
            raise ValueError("give exactly one estimate: amount_nanos or usage")
        request = pb.ReserveRequest(
            reservation_id=reservation_id or _new_id(),
            subject=subject.to_proto(),
        )
        if amount_nanos is not None:
            request.amount_nanos = check_nanos("amount_nanos", amount_nanos)
        else:
            assert usage is not None
            request.usage.CopyFrom(_usage(usage))
        if ttl is not None:
            request.ttl.CopyFrom(_duration(ttl))
        if priority is not None:
            request.priority = Priority(priority).value
        return ReserveCall(self, request)

    async def commit(
        self,
        org: str,
        reservation_id: str,
        *,
        actual_nanos: Nanos | None = None,
        usage: Usage | None = None,
        provider_response: object = None,
        latency_ms: int | None = None,
    ) -> CommitResult:
        """Charge a reservation's actual cost and give back the rest of its hold.

        Give exactly one: `actual_nanos`; `usage` (tokens, priced with the reservation's price
        version); or `provider_response`, the provider's response, streaming chunk or usage
        object (see `providers.provider_usage`), normalized by the service. Tokens need a
        reservation made with usage. A retry returns the first answer.
        """
        actual = _actual(actual_nanos, usage, provider_response)
        return await self._commit(org, reservation_id, actual, latency_ms)

    async def release(self, org: str, reservation_id: str) -> Nanos:
        """Void a hold (the call failed or never happened); answers the nanos given back."""
        request = pb.ReleaseRequest(org=org, reservation_id=reservation_id)
        response: pb.ReleaseResponse = await self._call("Release", request)
        return response.released_nanos

    async def refund(
        self,
        org: str,
        reservation_id: str,
        amount_nanos: Nanos,
        *,
        refund_id: str | None = None,
    ) -> RefundResult:
        """Credit back committed spend (capped at what is still unrefunded).

        `refund_id` is the refund's idempotency key (a uuid4 when not given, returned in the
        answer): the same id never refunds twice.
        """
        request = pb.RefundRequest(
            org=org,
            reservation_id=reservation_id,
            refund_id=refund_id or _new_id(),
            amount_nanos=check_nanos("amount_nanos", amount_nanos),
        )
        response: pb.RefundResponse = await self._call("Refund", request)
        return RefundResult(refund_id=request.refund_id, refunded_nanos=response.refunded_nanos)

    async def extend(self, org: str, reservation_id: str, ttl: Ttl) -> datetime:
        """Keep a long call's hold alive for `ttl` from now; answers the new expiry."""
        request = pb.ExtendRequest(org=org, reservation_id=reservation_id, ttl=_duration(ttl))
        response: pb.ExtendResponse = await self._call("Extend", request)
        return response.expires_at.ToDatetime(tzinfo=UTC)

    async def status(self, org: str, budget_id: str) -> BudgetStatus:
        """A budget's current period: spent, reserved, remaining, utilization."""
        request = pb.GetBudgetStatusRequest(org=org, budget_id=budget_id)
        response: pb.BudgetStatus = await self._call("GetBudgetStatus", request, admin=True)
        return BudgetStatus.from_proto(response)

    async def _commit(
        self, org: str, reservation_id: str, actual: dict[str, Any], latency_ms: int | None
    ) -> CommitResult:
        """Commit with `actual`, the CommitRequest's one actual-cost field (see `_actual`)."""
        request = pb.CommitRequest(
            org=org, reservation_id=reservation_id, latency_ms=latency_ms, **actual
        )
        response: pb.CommitResponse = await self._call("Commit", request)
        return CommitResult.from_proto(response)

    async def _call(self, name: str, request: Message, *, admin: bool = False) -> Any:
        """One logical call: the same request, retried on UNAVAILABLE / DEADLINE_EXCEEDED."""
        budgets, admins = self._open()
        method: Callable[..., Awaitable[Any]] = getattr(admins if admin else budgets, name)
        attempts = self.retries + 1
        delay = self.backoff
        for attempt in range(1, attempts + 1):
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or attempt == attempts:
                    raise from_rpc_error(error, attempt) from error
                log.debug("budget_client.retry", extra={"attempt": attempt, "code": error.code()})
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover


class ReserveCall:
    """A Reserve about to be made: `await` it for the `Reservation`, or `async with` it for a
    `Hold` that settles itself. Its reservation_id is fixed before the first attempt."""

    def __init__(self, client: BudgetClient, request: pb.ReserveRequest) -> None:
        self._client = client
        self._request = request
        self._hold: Hold | None = None

    @property
    def reservation_id(self) -> str:
        """The idempotency key this Reserve is sent (and retried) with."""
        return self._request.reservation_id

    async def _reserve(self) -> Reservation:
        response: pb.ReserveResponse = await self._client._call("Reserve", self._request)
        return Reservation.from_proto(self._request.subject.org, response)

    def __await__(self) -> Generator[Any, None, Reservation]:
        return self._reserve().__await__()

    async def __aenter__(self) -> Hold:
        if self._hold is not None:
            raise RuntimeError("this reserve() was already entered; call reserve() again")
        self._hold = Hold(self._client, await self._reserve())
        return self._hold

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._hold is not None
        outcome = await self._hold._settle_on_exit(exc)
        if outcome is Outcome.RELEASED_UNRECORDED and exc is None:
            warnings.warn(
                f"reservation {self._hold.reservation_id}: the block recorded no cost, so its"
                " hold was released; call hold.release() when no model call was made, or"
                " hold.commit_*() when one was",
                UnsettledHoldWarning,
                stacklevel=2,
            )


class Outcome(enum.Enum):
    """How a hold ended."""

    PENDING = "pending"
    COMMITTED = "committed"
    RELEASED = "released"
    RELEASED_UNRECORDED = "released_unrecorded"


class Hold:
    """A reservation inside `async with client.reserve(...) as hold:`; settles when it ends.

    Inside the block, record what happened (each method only records; the last one wins):
    `commit_response(response)` (an OpenAI, Anthropic or Gemini response, streaming chunk,
    usage dict or `StreamUsage`), `commit_usage(usage)`, `commit_amount(nanos)`, or
    `release()` when no model call was made. When the block ends:

    - it ends normally: what was recorded is committed (or released). Nothing recorded: the
      hold is released and an `UnsettledHoldWarning` is emitted, because a forgotten
      commit is spend that silently goes missing; call `release()` to say so on purpose.
    - it raises (or is cancelled): a recorded cost is still committed, since a model call that
      returned was billed by its provider whatever failed after it; otherwise the hold is
      released. The block's exception is re-raised either way; if settling fails too, that
      failure is added to the exception as a note (the hold then expires after its TTL).

    For a stream, record the usage as chunks arrive (or feed a `StreamUsage` and record it):
    a stream cut short then still bills what it generated. `await hold.extend(ttl)` keeps a
    long stream's hold alive; `await hold.settle()` settles early. After the block, `result`
    is the `CommitResult` (or None) and `released_nanos` what a release gave back.
    """

    def __init__(self, client: BudgetClient, reservation: Reservation) -> None:
        self._client = client
        self.reservation = reservation
        self.outcome = Outcome.PENDING
        self.result: CommitResult | None = None
        self.released_nanos: Nanos | None = None
        self._commit: dict[str, Any] | None = None
        self._release = False
        self._latency_ms: int | None = None

    @property
    def reservation_id(self) -> str:
        return self.reservation.reservation_id

    @property
    def org(self) -> str:
        return self.reservation.org

    @property
    def reserved_nanos(self) -> Nanos:
        return self.reservation.reserved_nanos

    def commit_usage(self, usage: Usage, *, latency_ms: int | None = None) -> None:
        """Record the actual tokens (the reservation must have been made with usage)."""
        self._record({"usage": _usage(usage)}, latency_ms)

    def commit_response(self, response: object, *, latency_ms: int | None = None) -> None:
        """Record a provider response, final streaming chunk, usage object or StreamUsage."""
        self._record({"provider_usage_json": providers.provider_usage_json(response)}, latency_ms)

    def commit_amount(self, actual_nanos: Nanos, *, latency_ms: int | None = None) -> None:
        """Record the actual cost in nano-USD."""
        self._record({"actual_nanos": check_nanos("actual_nanos", actual_nanos)}, latency_ms)

    def release(self) -> None:
        """Record that no model call was made: the hold is released when the block ends."""
        self._check_pending()
        self._commit = None
        self._release = True

    async def extend(self, ttl: Ttl) -> datetime:
        """Keep the hold alive for `ttl` from now (a long stream); answers the new expiry."""
        return await self._client.extend(self.org, self.reservation_id, ttl)

    async def settle(self) -> Outcome:
        """Apply what was recorded now, instead of when the block ends (nothing: release)."""
        return await self._apply(explicit=True)

    async def _apply(self, *, explicit: bool) -> Outcome:
        self._check_pending()
        if self._commit is not None:
            self.result = await self._client._commit(
                self.org, self.reservation_id, self._commit, self._latency_ms
            )
            self.outcome = Outcome.COMMITTED
        else:
            self.released_nanos = await self._client.release(self.org, self.reservation_id)
            recorded = self._release or explicit
            self.outcome = Outcome.RELEASED if recorded else Outcome.RELEASED_UNRECORDED
        return self.outcome

    async def _settle_on_exit(self, exc: BaseException | None) -> Outcome:
        """Settle as the block ends; with `exc`, a settling failure becomes a note on it."""
        if self.outcome is not Outcome.PENDING:
            return self.outcome
        if exc is None:
            return await self._apply(explicit=False)
        try:
            return await self._apply(explicit=True)  # a failed block's release is intended
        except (BudgetClientError, grpc.aio.AioRpcError) as failure:
            log.warning(
                "budget_client.settle_failed",
                extra={"reservation_id": self.reservation_id, "error": str(failure)},
            )
            exc.add_note(
                f"budget_client: settling reservation {self.reservation_id} failed too"
                f" ({failure}); its hold expires after its TTL"
            )
            return self.outcome

    def _record(self, actual: dict[str, Any], latency_ms: int | None) -> None:
        self._check_pending()
        self._commit = actual
        self._release = False
        self._latency_ms = latency_ms

    def _check_pending(self) -> None:
        if self.outcome is not Outcome.PENDING:
            raise RuntimeError(f"reservation {self.reservation_id} is already {self.outcome.value}")


def _actual(
    actual_nanos: Nanos | None, usage: Usage | None, provider_response: object
) -> dict[str, Any]:
    """The one actual-cost field of a CommitRequest, checked and in its wire form."""
    given = [v is not None for v in (actual_nanos, usage, provider_response)]
    if sum(given) != 1:
        raise ValueError("give exactly one actual: actual_nanos, usage or provider_response")
    if actual_nanos is not None:
        return {"actual_nanos": check_nanos("actual_nanos", actual_nanos)}
    if usage is not None:
        return {"usage": _usage(usage)}
    return {"provider_usage_json": providers.provider_usage_json(provider_response)}


def _usage(usage: Usage) -> pb.Usage:
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be a budget_client.Usage, not {type(usage).__name__}")
    return usage.to_proto()


def _duration(ttl: Ttl) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    if isinstance(ttl, timedelta):
        duration.FromTimedelta(ttl)
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        duration.FromNanoseconds(round(ttl * 1e9))
    else:
        raise TypeError(f"ttl must be seconds or a timedelta, not {type(ttl).__name__}")
    return duration


def _new_id() -> str:
    return uuid.uuid4().hex
