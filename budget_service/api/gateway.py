"""BudgetService: the gateway-facing RPCs, thin: validate, one engine call, map the answer."""

from __future__ import annotations

import hashlib

import structlog
from google.protobuf import duration_pb2

from budget_service.hotpath import price_refs
from budget_service.hotpath.budgets import subject_pairs
from budget_service.hotpath.engine import Balance, Committed, Engine
from budget_service.hotpath.errors import BudgetExceeded
from budget_service.hotpath.org_overrides import OrgOverrides
from budget_service.hotpath.price_table import PriceTable, UnknownModel
from budget_service.ops.metrics import ServiceMetrics
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from pricing_service.convert import usage_from_proto, usage_to_proto
from pricing_service.cost import cost_nanos, max_output_for_hold, reserve_estimate_nanos
from pricing_service.overrides import PriceOverride, price_for
from pricing_service.prices import ModelPrice
from pricing_service.usage_shapes import from_json
from servicekit import validation as v
from servicekit.errors import FailedPrecondition, InvalidArgument, Unavailable
from servicekit.rpc import Context, rpc
from servicekit.settings import Settings

log = structlog.get_logger(__name__)

PRIORITIES = dict(pb.Priority.items())
MAX_LATENCY_MS = 86_400_000


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

    SERVICE = "budget.v1.BudgetService"
    metrics: ServiceMetrics | None = None

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        prices: PriceTable | None = None,
        overrides: OrgOverrides | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.prices = prices
        self.overrides = overrides
        self.zero_cost_commits = 0

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
        price_ref = price_refs.AMOUNT
        max_output = 0
        if kind == "usage":
            amount, price_ref, max_output = await self._estimate(
                request.subject, pairs, request.usage
            )
        else:
            amount = self._amount("amount_nanos", request.amount_nanos)
        ttl_ms = self._ttl_ms("ttl", request.ttl, request.HasField("ttl"))
        v.check_enum("priority", request.priority, PRIORITIES)
        try:
            held = await self.engine.reserve(
                org,
                rid,
                _fingerprint(request),
                pairs,
                amount,
                critical=request.priority == pb.PRIORITY_CRITICAL,
                ttl_ms=ttl_ms,
                price_ref=price_ref,
            )
        except BudgetExceeded as refused:
            if self.metrics is not None:
                self.metrics.refused(org, [r.budget_id for r in refused.refusals])
            raise
        if self.metrics is not None:
            self.metrics.admitted(org, [b.budget_id for b in held.budgets])
        response = pb.ReserveResponse(
            reservation_id=rid,
            reserved_nanos=held.amount_nanos,
            budgets=balances_to_proto(held.budgets),
            price_version=price_refs.catalog_version(price_ref) or 0,
            unknown_model_price_used=price_refs.is_unknown_model(price_ref),
            max_output_tokens=max_output,
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
        latency_ms = request.latency_ms
        if not 0 <= latency_ms <= MAX_LATENCY_MS:
            raise InvalidArgument(
                "latency_ms", f"is {latency_ms}; use 0 (not given) to {MAX_LATENCY_MS} ms"
            )
        usage: pb.Usage | None = None
        if kind == "actual_nanos":
            actual = self._amount("actual_nanos", request.actual_nanos)
            done = await self.engine.commit(org, rid, str(actual), actual, latency_ms=latency_ms)
        else:
            usage = self._usage(request)
            done = await self._commit_usage(org, rid, usage, latency_ms)
        return pb.CommitResponse(
            charged_nanos=done.charged_nanos,
            released_nanos=done.released_nanos,
            overage_nanos=done.overage_nanos,
            late=done.late,
            budgets=balances_to_proto(done.budgets),
            usage=usage,
        )

    async def _commit_usage(
        self, org: str, rid: str, usage: pb.Usage, latency_ms: int
    ) -> Committed:
        """Commit tokens, priced with the reservation's price version and the org's prices."""
        negotiated = await self._negotiated(org)
        done = await self.engine.commit(
            org,
            rid,
            "u:" + _fingerprint(usage),
            lambda ref: self._charge(ref, usage, negotiated),
            usage={f.name: value for f, value in usage.ListFields()},
            latency_ms=latency_ms,
        )
        if done.charged_nanos == 0 and (usage.input_tokens or usage.output_tokens):
            # A call that used tokens and cost nothing is how spend goes missing: say so.
            self.zero_cost_commits += 1
            log.warning(
                "commit.zero_cost_with_tokens",
                org=org,
                reservation_id=rid,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        return done

    def _prices(self) -> PriceTable:
        if self.prices is None:
            raise Unavailable(
                "token pricing needs PRICING_ADDR (the pricing service); send amounts"
            )
        return self.prices

    async def _negotiated(self, org: str) -> tuple[PriceOverride, ...]:
        return await self.overrides.get(org) if self.overrides is not None else ()

    async def _estimate(
        self, subject: pb.Subject, pairs: frozenset[tuple[str, str]], usage: pb.Usage
    ) -> tuple[int, str, int]:
        """The hold for a token estimate (the org's negotiated prices applied), its price ref,
        and the most output tokens the hold pays for."""
        if not subject.model:
            raise InvalidArgument("subject.model", "is required to price a usage estimate")
        try:
            entry = self._prices().lookup(subject.model, subject.provider)
        except UnknownModel:
            fallback = await self._unknown_model_price(subject.org, pairs)
            if fallback is None:
                raise
            amount, most = self._estimate_at(price_refs.unknown_model_price(fallback), usage)
            return amount, fallback, most
        ref = price_refs.catalog(entry.version)
        price = price_for(entry.price, await self._negotiated(subject.org))
        if price is not entry.price or entry.estimator is None or entry.output_limit is None:
            amount, most = self._estimate_at(price, usage)
            return amount, ref, most
        try:  # the list price: integer arithmetic, the same answers as the Decimal path
            amount = entry.estimator(usage.input_tokens, usage.output_tokens)
        except ValueError as exc:
            raise InvalidArgument("usage", str(exc)) from exc
        amount = self._amount("usage", amount)
        return amount, ref, entry.output_limit(usage.input_tokens, usage.output_tokens, amount)

    def _estimate_at(self, price: ModelPrice, usage: pb.Usage) -> tuple[int, int]:
        """The hold for `usage` at `price`, and the most output tokens it pays for."""
        try:
            amount = self._amount(
                "usage", reserve_estimate_nanos(price, usage.input_tokens, usage.output_tokens)
            )
            return amount, max_output_for_hold(
                price, usage.input_tokens, usage.output_tokens, amount
            )
        except ValueError as exc:
            raise InvalidArgument("usage", str(exc)) from exc

    async def _unknown_model_price(self, org: str, pairs: frozenset[tuple[str, str]]) -> str | None:
        """The price ref of the covering budgets' unknown_model_price, if any opts in.

        Before refusing, the org's configuration is read again: a budget that opted in through
        another replica a moment ago must count.
        """
        config = await self.engine.cache.get(org)
        price = price_refs.highest_unknown_model_price(config.covering(pairs))
        if price is None:
            config = await self.engine.cache.refresh(org)
            price = price_refs.highest_unknown_model_price(config.covering(pairs))
        return None if price is None else price_refs.unknown_model(price)

    def _usage(self, request: pb.CommitRequest) -> pb.Usage:
        if request.WhichOneof("actual") == "usage":
            usage_from_proto("usage", request.usage)  # validates: totals include their details
            return request.usage
        try:
            shaped = from_json(request.provider_usage_json, self.settings.max_usage_json_bytes)
        except ValueError as exc:  # UsageShapeError too: its message names the JSON field
            raise InvalidArgument("provider_usage_json", str(exc)) from exc
        return usage_to_proto(shaped)

    def _charge(
        self, price_ref: str, usage: pb.Usage, negotiated: tuple[PriceOverride, ...]
    ) -> int:
        """The actual cost of `usage` at the reservation's price (and the org's prices)."""
        if price_ref == price_refs.AMOUNT:
            raise FailedPrecondition(
                "the reservation was made with amount_nanos, so it has no price to charge tokens"
                " with; commit with actual_nanos (or reserve with usage)"
            )
        version = price_refs.catalog_version(price_ref)
        if version is None:  # a budget's unknown_model_price: no negotiated discount applies
            price = price_refs.unknown_model_price(price_ref)
        else:
            price = price_for(self._prices().by_version(version).price, negotiated)
        try:
            cost = cost_nanos(price, usage_from_proto("usage", usage))
        except ValueError as exc:
            raise InvalidArgument("usage", str(exc)) from exc
        return self._amount("usage", cost)

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
