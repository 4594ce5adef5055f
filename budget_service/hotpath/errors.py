"""The budget service's own errors, on top of servicekit's tree (servicekit/errors.py).

ServiceError (servicekit.errors)
├── BudgetExceeded(refusals)          RESOURCE_EXHAUSTED  + QuotaFailure + ErrorInfo
├── FailedPrecondition (servicekit.errors)
│   └── CounterOverflow(budget, counter)
│                                     FAILED_PRECONDITION + ErrorInfo reason COUNTER_OVERFLOW
└── Unavailable (servicekit.errors)
    ├── DataLost(org)                 UNAVAILABLE         + ErrorInfo reason REDIS_DATA_LOST
    │   └── ForeignDataSet(org)       UNAVAILABLE         + ErrorInfo reason REDIS_FOREIGN_DATA_SET
    └── OrgRebuilding(org)            UNAVAILABLE         + ErrorInfo reason ORG_REBUILDING
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from servicekit.errors import FailedPrecondition, ServiceError, Unavailable

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


class CounterOverflow(FailedPrecondition):
    """The call would carry a budget's int64 counter out of range; nothing was changed.

    No amount a caller may send gets a sound counter there (amounts are capped far below 2^63):
    the counter is wrong, and a rebuild from the PostgreSQL ledger sets it right.
    """

    def __init__(self, org: str, budget_id: str, counter: str) -> None:
        super().__init__(
            f"budget {budget_id!r} of org {org!r}: this call would carry its {counter!r} counter"
            " beyond the int64 range, so nothing was changed; the counter cannot be right (no"
            " request gets it there): rebuild the org from the PostgreSQL ledger with"
            f" budgetctl reconcile --rebuild --org {org}"
        )
        self.org = org
        self.budget_id = budget_id
        self.counter = counter

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason="COUNTER_OVERFLOW",
            domain=DOMAIN,
            metadata={"org": self.org, "budget_id": self.budget_id, "counter": self.counter},
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        return [detail]


class DataLost(Unavailable):
    """Redis no longer holds an org's budget state (it lost its data); nothing was changed.

    Calls fail closed until the org is rebuilt from the PostgreSQL ledger, by the service itself
    (AUTO_REBUILD) or by hand; a client retries with the same ids, as for any UNAVAILABLE.
    """

    def __init__(self, org: str, *, rebuilding: bool = False) -> None:
        fix = (
            "the service is rebuilding it from the PostgreSQL ledger: retry in a few seconds"
            if rebuilding
            else "rebuild it from the PostgreSQL ledger: budgetctl reconcile --rebuild"
            f" --org {org} (or turn AUTO_REBUILD on)"
        )
        super().__init__(
            f"Redis has lost org {org!r}'s budget state (restarted without its data, flushed,"
            f" or another data set); calls fail closed until it is rebuilt: {fix}"
        )
        self.org = org
        self.rebuilding = rebuilding

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason="REDIS_DATA_LOST",
            domain=DOMAIN,
            metadata={"org": self.org, "rebuilding": "true" if self.rebuilding else "false"},
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        return [detail]


class ForeignDataSet(DataLost):
    """Redis holds another budget database's data set (its `ba:epoch` sentinel names another
    epoch): nothing is rebuilt over it and nothing is changed; calls fail closed until
    REDIS_URL and DATABASE_URL point at the same deployment again."""

    def __init__(self, org: str) -> None:
        whose = "its" if org == "*" else f"org {org!r}'s"  # "*": the whole data set
        Unavailable.__init__(
            self,
            f"Redis holds another budget database's data set (its epoch is not this"
            f" DATABASE_URL's), so {whose} budget state"
            " there is not this service's; nothing is rebuilt over it and calls fail closed:"
            " point REDIS_URL and DATABASE_URL"
            " at the same deployment, or empty that Redis database if it is meant to be rebuilt"
            " from this ledger",
        )
        self.org = org
        self.rebuilding = False

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason="REDIS_FOREIGN_DATA_SET", domain=DOMAIN, metadata={"org": self.org}
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        return [detail]


class OrgRebuilding(Unavailable):
    """A configuration change met an org that is being rebuilt from the ledger (fenced): Redis
    was not changed. What PostgreSQL saved is applied by the config sync once the rebuild is
    done (a retry applies it at once)."""

    def __init__(self, org: str, what: str) -> None:
        super().__init__(
            f"org {org!r} is being rebuilt from the PostgreSQL ledger, so Redis refused {what}"
            " for now: it is saved in PostgreSQL and applied when the rebuild is done (by the"
            " periodic config sync); retry shortly to apply it at once"
        )
        self.org = org

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason="ORG_REBUILDING", domain=DOMAIN, metadata={"org": self.org}
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        return [detail]
