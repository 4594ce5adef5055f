"""BudgetAdminService: budget configuration (PostgreSQL first, then Redis) and status."""

from __future__ import annotations

import base64
import binascii
import json
import re

import redis.asyncio as aioredis

from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys, price_refs
from budget_service.hotpath.budgets import validate_budget
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.errors import DataLost, OrgRebuilding
from budget_service.hotpath.periods import bounds_ms, spent_in_period
from budget_service.hotpath.store import redis_call
from budget_service.ledger.reports import SpendReports, parse_request
from budget_service.ops.metrics import ServiceMetrics
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from servicekit import validation as v
from servicekit.clock import Clock
from servicekit.errors import InvalidArgument, Unavailable
from servicekit.rpc import Context, rpc

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_PAGE_TOKEN = 512  # ours encode one id (at most 128 bytes) or an offset
OFFSET_RE = re.compile(r"[0-9]{1,15}")  # a position in a sorted set, far below int64


def _actor(context: Context) -> str:
    """Who made a change: the `x-actor` metadata a tool sends, else the peer address."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-actor" and isinstance(value, str) and value:
            return v.check_value("x-actor", value)
    return f"peer:{context.peer()}"


def _page_size(asked: int) -> int:
    if asked < 0 or asked > MAX_PAGE:
        raise InvalidArgument(
            "page_size", f"is {asked}; use 1 to {MAX_PAGE} (0 means {DEFAULT_PAGE})"
        )
    return asked or DEFAULT_PAGE


def _page_token(after_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after_id}).encode()).decode()


def _after_id(token: str) -> str:
    """What a page token of ours carries (a budget id, or an offset in digits); "" for none."""
    if not token:
        return ""
    try:
        if len(token) > MAX_PAGE_TOKEN:
            raise ValueError("longer than any token this service issues")
        after = json.loads(base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True))
        after = after["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            "page_token", "is not a token this service issued; pass next_page_token as is"
        ) from exc
    if not isinstance(after, str) or not (after == "" or v.ID_RE.fullmatch(after)):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return after


def _overage_commits(recorded: str) -> list[pb.OverageCommit]:
    """The commit script's record of over-limit commits: 'id|nanos|flags' joined by ';'."""
    out = []
    for entry in filter(None, recorded.split(";")):
        reservation_id, nanos, flags = entry.split("|")
        out.append(
            pb.OverageCommit(
                reservation_id=reservation_id,
                above_limit_nanos=int(nanos),
                late="L" in flags,
                above_hold="H" in flags,
            )
        )
    return out


def _offset(token: str) -> int:
    """The position a ListReservations page token carries: ASCII digits only ("٣" is not 3)."""
    after = _after_id(token)
    if not after:
        return 0
    if not OFFSET_RE.fullmatch(after):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return int(after)


class BudgetAdminService(budget_pb2_grpc.BudgetAdminServiceServicer):
    """Upsert / Get / List / Delete budgets, a budget's current period, and spend reports."""

    SERVICE = "budget.v1.BudgetAdminService"
    metrics: ServiceMetrics | None = None

    def __init__(
        self,
        repo: BudgetRepository,
        sync: ConfigSync,
        client: aioredis.Redis,
        clock: Clock,
        cache: ConfigCache | None = None,
    ) -> None:
        self.repo = repo
        self.sync = sync
        self.client = client
        self.clock = clock
        self.cache = cache or ConfigCache(sync.scripts)
        self.reports = SpendReports(repo.pool)

    @rpc("UpsertBudget")
    async def UpsertBudget(self, request: pb.UpsertBudgetRequest, context: Context) -> pb.Budget:
        budget = validate_budget(request.budget)
        config = await self.repo.upsert(budget, _actor(context))
        # The org's only budget, just created: nothing of the org can be lost in Redis yet.
        first = config.version == 1 and await self.repo.count(config.org) == 1
        try:
            await self.sync.push(config, first_of_org=first)
        except (DataLost, OrgRebuilding):  # the rebuild or the sync applies it (the message says)
            raise
        except Unavailable as exc:
            raise Unavailable(
                f"budget {config.id!r} version {config.version} is saved in PostgreSQL but Redis"
                " is unreachable; it is applied when Redis returns (or retry this call)"
            ) from exc
        return config.to_proto()

    @rpc("GetBudget")
    async def GetBudget(self, request: pb.GetBudgetRequest, context: Context) -> pb.Budget:
        org = v.require_id("org", request.org)
        budget_id = v.require_id("budget_id", request.budget_id)
        return (await self.repo.get(org, budget_id)).to_proto()

    @rpc("ListBudgets")
    async def ListBudgets(
        self, request: pb.ListBudgetsRequest, context: Context
    ) -> pb.ListBudgetsResponse:
        org = v.require_id("org", request.org)
        size = _page_size(request.page_size)
        rows = await self.repo.page(org, after_id=_after_id(request.page_token), limit=size + 1)
        page = rows[:size]
        token = _page_token(page[-1].id) if len(rows) > size else ""
        return pb.ListBudgetsResponse(budgets=[b.to_proto() for b in page], next_page_token=token)

    @rpc("DeleteBudget")
    async def DeleteBudget(
        self, request: pb.DeleteBudgetRequest, context: Context
    ) -> pb.DeleteBudgetResponse:
        org = v.require_id("org", request.org)
        budget_id = v.require_id("budget_id", request.budget_id)
        config = await self.repo.delete(org, budget_id, _actor(context))
        await self.sync.remove(config)
        return pb.DeleteBudgetResponse()

    @rpc("GetBudgetStatus")
    async def GetBudgetStatus(
        self, request: pb.GetBudgetStatusRequest, context: Context
    ) -> pb.BudgetStatus:
        org = v.require_id("org", request.org)
        budget_id = v.require_id("budget_id", request.budget_id)
        config = await self.repo.get(org, budget_id)
        # counters of an org whose data Redis lost would read as zero: fail closed instead
        await self.cache.check_intact(org)
        spent_s, reserved_s, pstart_s, count_s, recent_s = await redis_call(
            self.client.hmget(
                keys.budget(org, config.uid), "spent", "reserved", "pstart", "ovn", "ovc"
            )
        )
        start, end = bounds_ms(config.period, config.timezone, self.clock.now_ms())
        spent = spent_in_period(spent_s, pstart_s, start)
        reserved = int(reserved_s or 0)
        status = pb.BudgetStatus(
            budget=config.to_proto(),
            spent_nanos=spent,
            reserved_nanos=reserved,
            remaining_nanos=config.limit_nanos - spent - reserved,
            overage_nanos=max(0, spent - config.limit_nanos),
        )
        if spent > config.limit_nanos:  # the overage record of an earlier period is not shown
            status.overage_commit_count = spent_in_period(count_s, pstart_s, start)
            status.recent_overage_commits.extend(_overage_commits(recent_s or ""))
        status.period_start.FromMilliseconds(start if end is not None else config.created_at_ms)
        if end is not None:
            status.period_end.FromMilliseconds(end)
        if config.limit_nanos > 0:
            percent = spent * 100 // config.limit_nanos
            status.utilization_percent = min(percent, 2**31 - 1)
            reached = [t for t in config.alert_thresholds_percent if percent >= t]
            status.alert_threshold_reached_percent = max(reached, default=0)
        return status

    @rpc("GetSpendReport")
    async def GetSpendReport(
        self, request: pb.GetSpendReportRequest, context: Context
    ) -> pb.SpendReport:
        return await self.reports.report(parse_request(request))

    @rpc("ListReservations")
    async def ListReservations(
        self, request: pb.ListReservationsRequest, context: Context
    ) -> pb.ListReservationsResponse:
        org = v.require_id("org", request.org)
        size = _page_size(request.page_size)
        offset = _offset(request.page_token)
        ids: list[str] = await redis_call(
            self.client.zrange(keys.expiries(org), offset, offset + size)
        )
        fields = ("state", "amount", "uids", "exp", "created", "subj", "pv")
        async with self.client.pipeline(transaction=False) as pipe:
            for rid in ids[:size]:
                pipe.hmget(keys.reservation(org, rid), *fields)
            records = await redis_call(pipe.execute())
        config = await self.cache.refresh(org)
        out = pb.ListReservationsResponse()
        for rid, (state, amount, uids, exp, created, subj, pv) in zip(ids, records, strict=False):
            if state != "held":  # ended between the two reads
                continue
            item = out.reservations.add(
                reservation_id=rid,
                reserved_nanos=int(amount),
                budget_ids=[
                    config.by_uid[int(u)].id
                    for u in (uids or "").split(",")
                    if u and int(u) in config.by_uid
                ],
                subject=json.loads(subj or "{}"),
                price_version=price_refs.catalog_version(pv or price_refs.AMOUNT) or 0,
            )
            item.created_at.FromMilliseconds(int(created or 0))
            item.expires_at.FromMilliseconds(int(exp or 0))
        if len(ids) > size:
            out.next_page_token = _page_token(str(offset + size))
        return out
