"""The budget service's own errors, on top of servicekit's tree (servicekit/errors.py).

ServiceError (servicekit.errors)
└── BudgetExceeded(refusals)          RESOURCE_EXHAUSTED + QuotaFailure + ErrorInfo
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from servicekit.errors import ServiceError

DOMAIN = "budget.v1"


@dataclass(frozen=True)
class Refusal:
    """One hard budget that refused a reservation."""

    budget_id: str
    limit_nanos: int
    remaining_nanos: int


class BudgetExceeded(ServiceError):
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
