"""The values the client sends and answers with: plain frozen dataclasses, money in nano-USD."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from budget_client.money import Nanos
from genproto.budget.v1 import budget_pb2 as pb


class Priority(enum.IntEnum):
    """Who may use a budget's overdraft band (only CRITICAL); UNSPECIFIED means NORMAL."""

    UNSPECIFIED = pb.PRIORITY_UNSPECIFIED
    LOW = pb.PRIORITY_LOW
    NORMAL = pb.PRIORITY_NORMAL
    HIGH = pb.PRIORITY_HIGH
    CRITICAL = pb.PRIORITY_CRITICAL


@dataclass(frozen=True)
class Subject:
    """Who a request is for; `org` is required. Budgets whose selector is a subset apply."""

    org: str
    team: str = ""
    project: str = ""
    user: str = ""
    provider: str = ""
    model: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self) -> pb.Subject:
        """The wire form."""
        return pb.Subject(
            org=self.org,
            team=self.team,
            project=self.project,
            user=self.user,
            provider=self.provider,
            model=self.model,
            tags=dict(self.tags),
        )


@dataclass(frozen=True)
class Usage:
    """Token counts of one request, in the service's convention.

    `input_tokens` is the whole prompt, cache reads and writes included; `output_tokens`
    includes reasoning tokens. To reserve, give the prompt's tokens and the *maximum* output.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Usage.{f.name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"Usage.{f.name} is {value}: token counts are never negative")

    def to_proto(self) -> pb.Usage:
        """The wire form."""
        return pb.Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
        )

    @classmethod
    def from_proto(cls, usage: pb.Usage) -> Usage:
        """From the wire form."""
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
        )


@dataclass(frozen=True)
class BudgetBalance:
    """One budget's state as a call left it; `mode` is "hard", "soft" or "shadow"."""

    budget_id: str
    limit_nanos: Nanos
    spent_nanos: Nanos
    reserved_nanos: Nanos
    remaining_nanos: Nanos
    mode: str
    exceeded: bool
    overdraft_remaining_nanos: Nanos

    @classmethod
    def from_proto(cls, balance: pb.BudgetBalance) -> BudgetBalance:
        """From the wire form."""
        return cls(
            budget_id=balance.budget_id,
            limit_nanos=balance.limit_nanos,
            spent_nanos=balance.spent_nanos,
            reserved_nanos=balance.reserved_nanos,
            remaining_nanos=balance.remaining_nanos,
            mode=_mode(balance.mode),
            exceeded=balance.exceeded,
            overdraft_remaining_nanos=balance.overdraft_remaining_nanos,
        )


@dataclass(frozen=True)
class Reservation:
    """An admitted hold: what Reserve answered."""

    org: str
    reservation_id: str
    reserved_nanos: Nanos
    expires_at: datetime
    budgets: tuple[BudgetBalance, ...]
    price_version: int
    unknown_model_price_used: bool

    @classmethod
    def from_proto(cls, org: str, response: pb.ReserveResponse) -> Reservation:
        """From Reserve's answer (which does not repeat the org)."""
        return cls(
            org=org,
            reservation_id=response.reservation_id,
            reserved_nanos=response.reserved_nanos,
            expires_at=_time(response.expires_at),
            budgets=_balances(response.budgets),
            price_version=response.price_version,
            unknown_model_price_used=response.unknown_model_price_used,
        )


@dataclass(frozen=True)
class CommitResult:
    """What Commit charged: `released_nanos` is the hold given back, `overage_nanos` the part
    of the actual above the hold (charged anyway), `late` a commit after the hold expired, and
    `usage` the tokens priced (token commits), as the server normalized them."""

    charged_nanos: Nanos
    released_nanos: Nanos
    overage_nanos: Nanos
    late: bool
    budgets: tuple[BudgetBalance, ...]
    usage: Usage | None

    @classmethod
    def from_proto(cls, response: pb.CommitResponse) -> CommitResult:
        """From the wire form."""
        return cls(
            charged_nanos=response.charged_nanos,
            released_nanos=response.released_nanos,
            overage_nanos=response.overage_nanos,
            late=response.late,
            budgets=_balances(response.budgets),
            usage=Usage.from_proto(response.usage) if response.HasField("usage") else None,
        )


@dataclass(frozen=True)
class RefundResult:
    """What Refund credited back, and the refund's idempotency key (retry with it)."""

    refund_id: str
    refunded_nanos: Nanos


@dataclass(frozen=True)
class BudgetStatus:
    """A budget's current period: spent, held and room left (`period_end` None: lifetime)."""

    org: str
    budget_id: str
    limit_nanos: Nanos
    spent_nanos: Nanos
    reserved_nanos: Nanos
    remaining_nanos: Nanos
    period_start: datetime | None
    period_end: datetime | None
    utilization_percent: int
    alert_threshold_reached_percent: int
    mode: str

    @classmethod
    def from_proto(cls, status: pb.BudgetStatus) -> BudgetStatus:
        """From the wire form."""
        return cls(
            org=status.budget.org,
            budget_id=status.budget.id,
            limit_nanos=status.budget.limit_nanos,
            spent_nanos=status.spent_nanos,
            reserved_nanos=status.reserved_nanos,
            remaining_nanos=status.remaining_nanos,
            period_start=_time(status.period_start) if status.HasField("period_start") else None,
            period_end=_time(status.period_end) if status.HasField("period_end") else None,
            utilization_percent=status.utilization_percent,
            alert_threshold_reached_percent=status.alert_threshold_reached_percent,
            mode=_mode(status.budget.mode),
        )


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _mode(mode: int) -> str:
    return pb.Mode.Name(mode).removeprefix("MODE_").lower()


def _balances(balances: Iterable[pb.BudgetBalance]) -> tuple[BudgetBalance, ...]:
    return tuple(BudgetBalance.from_proto(b) for b in balances)
