"""What the client raises, and the one place gRPC failures become these errors.

BudgetClientError                  base: `code` is the gRPC status (None for local errors)
├── BudgetExceeded(refusals)       RESOURCE_EXHAUSTED: the refusing budgets and their room
├── InvalidRequest(field)          INVALID_ARGUMENT: the field named by google.rpc.BadRequest
├── NotFound                       NOT_FOUND: unknown budget or reservation
├── IdempotencyConflict            ALREADY_EXISTS: an id reused with different content
├── InvalidState                   FAILED_PRECONDITION: e.g. commit after release
└── Unavailable(attempts)          UNAVAILABLE / DEADLINE_EXCEEDED after every retry

Any other status is a plain BudgetClientError carrying its code. Local mistakes that never
reach the service (a float for money, two estimates at once) are TypeError / ValueError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from budget_client.money import Nanos

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The statuses a call is retried on, and raised as `Unavailable` once the retries run out."""
_NUMBER = re.compile(r"(\w+)=(-?\d+)")


class BudgetClientError(Exception):
    """Base of everything the client raises for a failed call."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Refusal:
    """One hard budget that refused a reservation, with its room when it refused."""

    budget_id: str
    remaining_nanos: Nanos
    limit_nanos: Nanos


class BudgetExceeded(BudgetClientError):
    """A hard budget has no room for the request; `refusals` names every refusing budget."""

    def __init__(self, message: str, refusals: tuple[Refusal, ...]) -> None:
        super().__init__(message, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.refusals = refusals

    @property
    def budget_ids(self) -> tuple[str, ...]:
        """The refusing budgets' ids."""
        return tuple(r.budget_id for r in self.refusals)


class InvalidRequest(BudgetClientError):
    """The service refused a malformed request; `field` names the offending field."""

    def __init__(self, message: str, field: str, description: str) -> None:
        super().__init__(message, grpc.StatusCode.INVALID_ARGUMENT)
        self.field = field
        self.description = description


class NotFound(BudgetClientError):
    """The budget or reservation does not exist (or its record has expired)."""


class IdempotencyConflict(BudgetClientError):
    """A reservation_id or refund_id was reused with different content; nothing was charged."""


class InvalidState(BudgetClientError):
    """The reservation's state forbids the call: commit after release, refund before commit."""


class Unavailable(BudgetClientError):
    """The service could not be reached (or answered in time) on any attempt.

    Safe to retry later with the same reservation_id / refund_id: the ids make it idempotent.
    """

    def __init__(self, message: str, code: grpc.StatusCode, attempts: int) -> None:
        super().__init__(message, code)
        self.attempts = attempts


def from_rpc_error(error: grpc.aio.AioRpcError, attempts: int = 1) -> BudgetClientError:
    """The client error for a failed call, with the rich status details decoded."""
    code = error.code()
    message = f"{code.name}: {error.details() or ''}".rstrip(": ")
    if code in RETRYABLE:
        tries = "attempt" if attempts == 1 else "attempts"
        return Unavailable(f"{message} (after {attempts} {tries})", code, attempts)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        refusals = _refusals(_rich_details(error))
        if refusals is not None:
            return BudgetExceeded(message, refusals)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, description = _bad_field(_rich_details(error))
        return InvalidRequest(message, field, description)
    kind = {
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.ALREADY_EXISTS: IdempotencyConflict,
        grpc.StatusCode.FAILED_PRECONDITION: InvalidState,
    }.get(code, BudgetClientError)
    return kind(message, code)


def _rich_details(error: grpc.aio.AioRpcError) -> list[object]:
    """The google.rpc detail messages of the call's status, unpacked (none if absent)."""
    raw = None
    # grpc.aio.Metadata iterates as (key, value) pairs (the stubs describe the sync API's).
    trailers: Iterable[Any] = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == _STATUS_DETAILS_KEY:
            raw = value
    if not isinstance(raw, bytes):
        return []
    status = status_pb2.Status.FromString(raw)
    unpacked: list[object] = []
    for detail in status.details:
        for kind in (
            error_details_pb2.QuotaFailure,
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked.append(message)
    return unpacked


def _refusals(details: list[object]) -> tuple[Refusal, ...] | None:
    """The refusing budgets from the QuotaFailure (None: not a budget refusal)."""
    budget_refusal = any(
        isinstance(d, error_details_pb2.ErrorInfo) and d.reason == "BUDGET_EXCEEDED"
        for d in details
    )
    for detail in details:
        if isinstance(detail, error_details_pb2.QuotaFailure):
            refusals = []
            for violation in detail.violations:
                numbers = dict(_NUMBER.findall(violation.description))
                refusals.append(
                    Refusal(
                        budget_id=violation.subject,
                        remaining_nanos=int(numbers.get("remaining_nanos", 0)),
                        limit_nanos=int(numbers.get("limit_nanos", 0)),
                    )
                )
            return tuple(refusals)
    return () if budget_refusal else None


def _bad_field(details: list[object]) -> tuple[str, str]:
    for detail in details:
        if isinstance(detail, error_details_pb2.BadRequest) and detail.field_violations:
            violation = detail.field_violations[0]
            return str(violation.field), str(violation.description)
    return "", ""
