"""BudgetService: the gateway-facing RPCs, thin: validate, one engine call, map the answer."""

from __future__ import annotations

import hashlib

from google.protobuf import duration_pb2

from budget_service import validation as v
from budget_service.budgets import subject_pairs
from budget_service.engine import Balance, Engine
from budget_service.errors import InvalidArgument
from budget_service.rpc import Context, rpc
from budget_service.settings import Settings
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc

PRIORITIES = dict(pb.Priority.items())


def _fingerprint(message: object) -> str:
    data = message.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def balances_to_proto(balances: list[Balance]) -> list[pb.BudgetBalance]:
    """The wire form of budget balances."""
    return [
        pb.BudgetBalance(
            budget_id=b.budget_id,
            limit_nanos=b.limit_nanos,
            spent_nanos=b.spent_nanos,
            reserved_nanos=b.reserved_nanos,
            remaining_nanos=b.remaining_nanos,
            mode=b.mode,  # type: ignore[arg-type]
            exceeded=b.exceeded,
            overdraft_remaining_nanos=b.overdraft_remaining_nanos,
        )
        for b in balances
    ]


class BudgetService(budget_pb2_grpc.BudgetServiceServicer):
    """Reserve / Commit / Release / Refund / Extend."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def _ttl_ms(self, field: str, ttl: duration_pb2.Duration, present: bool) -> int:
        s = self.settings
        if not present:
            return int(s.default_ttl_seconds * 1000)
        if ttl.seconds < 0 or ttl.nanos < 0:
            raise InvalidArgument(field, "must be positive")
        ms = ttl.seconds * 1000 + ttl.nanos // 1_000_000
        if not s.min_ttl_seconds * 1000 <= ms <= s.max_ttl_seconds * 1000:
            raise InvalidArgument(
                field,
                f"is {ms / 1000:g}s; use {s.min_ttl_seconds:g}s to {s.max_ttl_seconds:g}s"
                " (Extend keeps a longer call alive)",
            )
        return ms

    def _amount(self, field: str, value: int) -> int:
        return v.check_amount(field, value, self.settings.max_amount_nanos)

    @rpc("Reserve")
    async def Reserve(self, request: pb.ReserveRequest, context: Context) -> pb.ReserveResponse:
        org = v.require_id("subject.org", request.subject.org)
        rid = v.require_id("reservation_id", request.reservation_id)
        pairs = subject_pairs(request.subject)
        kind = request.WhichOneof("estimate")
        if kind is None:
            raise InvalidArgument("amount_nanos", "is required: the estimated cost in nano-USD")
        if kind == "usage":
            raise InvalidArgument(
                "usage",
                "token estimates need the pricing service, which is not deployed yet;"
                " send amount_nanos",
            )
        amount = self._amount("amount_nanos", request.amount_nanos)
        ttl_ms = self._ttl_ms("ttl", request.ttl, request.HasField("ttl"))
        v.check_enum("priority", request.priority, PRIORITIES)
        held = await self.engine.reserve(
            org,
            rid,
            _fingerprint(request),
            pairs,
            amount,
            critical=request.priority == pb.PRIORITY_CRITICAL,
            ttl_ms=ttl_ms,
        )
        response = pb.ReserveResponse(
            reservation_id=rid,
            reserved_nanos=held.amount_nanos,
            budgets=balances_to_proto(held.budgets),
        )
        response.expires_at.FromMilliseconds(held.expires_at_ms)
        return response

    @rpc("Commit")
    async def Commit(self, request: pb.CommitRequest, context: Context) -> pb.CommitResponse:
        org = v.require_id("org", request.org)
        rid = v.require_id("reservation_id", request.reservation_id)
        kind = request.WhichOneof("actual")
        if kind is None:
            raise InvalidArgument("actual_nanos", "is required: the actual cost in nano-USD")
        if kind == "usage":
            raise InvalidArgument(
                "usage",
                "token usage needs the pricing service, which is not deployed yet;"
                " send actual_nanos",
            )
        actual = self._amount("actual_nanos", request.actual_nanos)
        done = await self.engine.commit(org, rid, str(actual), actual)
        return pb.CommitResponse(
            charged_nanos=done.charged_nanos,
            released_nanos=done.released_nanos,
            overage_nanos=done.overage_nanos,
            late=done.late,
            budgets=balances_to_proto(done.budgets),
        )

    @rpc("Release")
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        org = v.require_id("org", request.org)
        rid = v.require_id("reservation_id", request.reservation_id)
        return pb.ReleaseResponse(released_nanos=await self.engine.release(org, rid))

    @rpc("Refund")
    async def Refund(self, request: pb.RefundRequest, context: Context) -> pb.RefundResponse:
        org = v.require_id("org", request.org)
        rid = v.require_id("reservation_id", request.reservation_id)
        refund_id = v.require_id("refund_id", request.refund_id)
        amount = v.check_amount(
            "amount_nanos", request.amount_nanos, self.settings.max_amount_nanos, allow_zero=False
        )
        refunded = await self.engine.refund(org, rid, refund_id, amount)
        return pb.RefundResponse(refunded_nanos=refunded)

    @rpc("Extend")
    async def Extend(self, request: pb.ExtendRequest, context: Context) -> pb.ExtendResponse:
        org = v.require_id("org", request.org)
        rid = v.require_id("reservation_id", request.reservation_id)
        if not request.HasField("ttl"):
            raise InvalidArgument("ttl", "is required: how long from now the hold should live")
        ttl_ms = self._ttl_ms("ttl", request.ttl, True)
        response = pb.ExtendResponse()
        response.expires_at.FromMilliseconds(await self.engine.extend(org, rid, ttl_ms))
        return response
