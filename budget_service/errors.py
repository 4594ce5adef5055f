"""The service's errors and the one place they become gRPC status codes.

BudgetServiceError                    base; never raised itself
├── InvalidArgument(field)            INVALID_ARGUMENT   + google.rpc.BadRequest
├── NotFound                          NOT_FOUND
├── IdempotencyConflict               ALREADY_EXISTS     (same id, different content)
├── FailedPrecondition                FAILED_PRECONDITION (wrong reservation state)
├── BudgetExceeded(refusals)          RESOURCE_EXHAUSTED + QuotaFailure + ErrorInfo
├── Unavailable                       UNAVAILABLE        (Redis or PostgreSQL unreachable)
├── Unimplemented                     UNIMPLEMENTED      (a contract method not served yet)
├── ScriptError                       INTERNAL           (a Lua script failed: a bug, logged)
└── ConfigError                       startup only: a bad setting, the process exits
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "budget.v1"


class BudgetServiceError(Exception):
    """Base of every error the service answers with."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        """google.rpc detail messages attached to the status."""
        return []


class InvalidArgument(BudgetServiceError):
    """A request field is missing or malformed; nothing was changed."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message

    def details(self) -> list[any_pb2.Any]:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=self.field, description=self.description
                    )
                ]
            )
        )
        return [detail]


class NotFound(BudgetServiceError):
    """The named budget or reservation does not exist (or its record has expired)."""

    code = grpc.StatusCode.NOT_FOUND


class IdempotencyConflict(BudgetServiceError):
    """An idempotency key was reused with different content; nothing was charged."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(BudgetServiceError):
    """The reservation is in a state that does not allow the call (e.g. release after commit)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(BudgetServiceError):
    """A store is unreachable: the call fails closed and may be retried with the same id."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(BudgetServiceError):
    """A method of the pinned contract that this release does not serve yet."""

    code = grpc.StatusCode.UNIMPLEMENTED


class ScriptError(BudgetServiceError):
    """A Lua script raised an error: never the caller's fault; the log has the script's name."""

    code = grpc.StatusCode.INTERNAL


class ConfigError(BudgetServiceError):
    """A setting is invalid; raised at start, never answered to a caller."""


@dataclass(frozen=True)
class Refusal:
    """One hard budget that refused a reservation."""

    budget_id: str
    limit_nanos: int
    remaining_nanos: int


class BudgetExceeded(BudgetServiceError):
    """A hard budget has no room for the request: every refusing budget is named."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, refusals: list[Refusal], amount_nanos: int) -> None:
        names = ", ".join(f"{r.budget_id} (remaining {r.remaining_nanos})" for r in refusals)
        super().__init__(f"budget exceeded for {amount_nanos} nanos: {names}")
        self.refusals = refusals

    def details(self) -> list[any_pb2.Any]:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=r.budget_id,
                    description=(
                        f"remaining_nanos={max(r.remaining_nanos, 0)} limit_nanos={r.limit_nanos}"
                    ),
                )
                for r in self.refusals
            ]
        )
        info = error_details_pb2.ErrorInfo(
            reason="BUDGET_EXCEEDED",
            domain=DOMAIN,
            metadata={
                "budget_ids": ",".join(r.budget_id for r in self.refusals),
                "remaining_nanos": ",".join(str(max(r.remaining_nanos, 0)) for r in self.refusals),
            },
        )
        packed = []
        for message in (quota, info):
            detail = any_pb2.Any()
            detail.Pack(message)
            packed.append(detail)
        return packed


def to_grpc_status(error: BudgetServiceError) -> grpc.Status:
    """The gRPC status (code, message and rich details) a caller receives for `error`."""
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code.name),
        message=error.message,
        details=error.details(),
    )
    return rpc_status.to_status(status)
