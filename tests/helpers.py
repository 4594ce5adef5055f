"""Small builders shared by the tests."""

from __future__ import annotations

import uuid

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc

NANOS_PER_USD = 10**9
CENT = NANOS_PER_USD // 100


def usd(amount: str) -> int:
    """Nano-USD from a decimal string, without floats: usd('0.01') == 10_000_000."""
    whole, _, frac = amount.partition(".")
    return int(whole or "0") * NANOS_PER_USD + int((frac + "0" * 9)[:9])


def rid(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def upsert(
    admin: budget_pb2_grpc.BudgetAdminServiceStub,
    org: str,
    budget_id: str,
    limit_nanos: int,
    **fields: object,
) -> pb.Budget:
    """Create or replace a budget (period defaults to PERIOD_NONE so tests never roll over)."""
    fields.setdefault("period", pb.PERIOD_NONE)
    budget = pb.Budget(id=budget_id, org=org, limit_nanos=limit_nanos, **fields)  # type: ignore[arg-type]
    result: pb.Budget = await admin.UpsertBudget(pb.UpsertBudgetRequest(budget=budget))
    return result


async def reserve(
    stub: budget_pb2_grpc.BudgetServiceStub,
    org: str,
    amount_nanos: int,
    reservation_id: str | None = None,
    **subject: object,
) -> pb.ReserveResponse:
    tags = subject.pop("tags", {})
    priority = subject.pop("priority", pb.PRIORITY_UNSPECIFIED)
    request = pb.ReserveRequest(
        reservation_id=reservation_id or rid(),
        subject=pb.Subject(org=org, tags=tags, **subject),  # type: ignore[arg-type]
        amount_nanos=amount_nanos,
        priority=priority,  # type: ignore[arg-type]
    )
    response: pb.ReserveResponse = await stub.Reserve(request)
    return response


async def status(
    admin: budget_pb2_grpc.BudgetAdminServiceStub, org: str, budget_id: str
) -> pb.BudgetStatus:
    result: pb.BudgetStatus = await admin.GetBudgetStatus(
        pb.GetBudgetStatusRequest(org=org, budget_id=budget_id)
    )
    return result


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a failed call carried in its trailers."""
    found = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert found is not None, f"no rich status on {error.code()}: {error.details()}"
    return found


def quota_failure(error: grpc.aio.AioRpcError) -> error_details_pb2.QuotaFailure:
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            qf = error_details_pb2.QuotaFailure()
            detail.Unpack(qf)
            return qf
    raise AssertionError("no QuotaFailure detail")


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo detail")


def bad_field(error: grpc.aio.AioRpcError) -> str:
    """The field an INVALID_ARGUMENT's BadRequest detail names."""
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            return str(request.field_violations[0].field)
    raise AssertionError("no BadRequest detail")
