"""The services' errors and the one place they become gRPC status codes.

ServiceError                          base; never raised itself
├── InvalidArgument(field)            INVALID_ARGUMENT   + google.rpc.BadRequest
├── NotFound                          NOT_FOUND
├── IdempotencyConflict               ALREADY_EXISTS     (same id, different content)
├── FailedPrecondition                FAILED_PRECONDITION (wrong reservation state)
├── Unavailable                       UNAVAILABLE        (Redis or PostgreSQL unreachable)
├── Unimplemented                     UNIMPLEMENTED      (a contract method not served yet)
├── ScriptError                       INTERNAL           (a Lua script failed: a bug, logged)
└── ConfigError                       startup only: a bad setting, the process exits

A service adds its own errors as subclasses beside the code that raises them, each with its
`code` and `details()`: budget_service/hotpath/errors.py (BudgetExceeded, RESOURCE_EXHAUSTED
with QuotaFailure and ErrorInfo). `to_grpc_status` maps every one of them the same way.

A caller's own input may end up in a message (a field name with a tag in it, a value quoted);
messages and field names are cut to a bounded size in UTF-8 bytes so a status always fits in
gRPC's trailers (16 KiB; past them the caller would see RESOURCE_EXHAUSTED instead).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

MESSAGE_MAX_BYTES = 1024
FIELD_MAX_BYTES = 256


def bounded(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (plus a marker), never inside a character."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore") + f"... ({len(data)} bytes)"


class ServiceError(Exception):
    """Base of every error the service answers with."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        """google.rpc detail messages attached to the status."""
        return []


class InvalidArgument(ServiceError):
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
                        field=bounded(self.field, FIELD_MAX_BYTES),
                        description=bounded(self.description, MESSAGE_MAX_BYTES),
                    )
                ]
            )
        )
        return [detail]


class NotFound(ServiceError):
    """The named budget or reservation does not exist (or its record has expired)."""

    code = grpc.StatusCode.NOT_FOUND


class IdempotencyConflict(ServiceError):
    """An idempotency key was reused with different content; nothing was charged."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """The reservation is in a state that does not allow the call (e.g. release after commit)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    """A store is unreachable: the call fails closed and may be retried with the same id."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(ServiceError):
    """A method of the pinned contract that this release does not serve yet."""

    code = grpc.StatusCode.UNIMPLEMENTED


class ScriptError(ServiceError):
    """A Lua script raised an error: never the caller's fault; the log has the script's name."""

    code = grpc.StatusCode.INTERNAL


class ConfigError(ServiceError):
    """A setting is invalid; raised at start, never answered to a caller."""


def to_grpc_status(error: ServiceError) -> grpc.Status:
    """The gRPC status (code, message and rich details) a caller receives for `error`."""
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code.name),
        message=bounded(error.message, MESSAGE_MAX_BYTES),
        details=error.details(),
    )
    return rpc_status.to_status(status)
