"""A plain-Python reference model of the budget engine, for the property test.

Deliberately naive: no Redis, no Lua, no caching, no big-number tricks (Python ints are exact),
no lazy resets. Each budget keeps its spend per period (a period is named by its calendar key in
the budget's zone, e.g. (2031, 3, 9) for a day), so "a new period starts at zero" and "a refund
credits the period the charge was made in" hold by construction. Holds are not per period:
they carry over.

Every operation answers an outcome in one shape shared with the adapter over the real engine
(tests/test_model_property.py), so the two can be compared with `==`:

    ("ok", value)                     value: plain tuples / ints / bools
    ("refused", ((budget_id, limit, remaining), ...))
    ("NotFound",) | ("FailedPrecondition",) | ("IdempotencyConflict",)

The semantics are those of the design guide ("Budgets", "The hot path") and the RPC contract in
protos/budget/v1/budget.proto:

- reserve admits when, for every hard budget covering the subject,
  spent + reserved + amount <= limit (+ overdraft for a critical request); a refusal names every
  refusing budget with its remaining room; soft and shadow budgets never refuse, they report
  `exceeded` when the request takes them over their limit.
- a reservation id answers every retry with the same content with the first answer, and a
  different content with IdempotencyConflict (also after the reservation ended).
- commit charges the actual cost (also above the hold, also after the hold expired: "late"),
  and gives back the hold if it is still held; a commit retry with the same actual answers the
  first result, with another actual IdempotencyConflict; a released reservation cannot be
  committed.
- release gives back a live hold; after commit it is FailedPrecondition; after expiry it gives
  back nothing (the expiry already did).
- refund credits back at most what is still unrefunded of the committed charge; a refund id
  (scoped to its reservation) answers retries with the first answer, and another amount under
  the same refund id with IdempotencyConflict; only committed reservations can be refunded.
- extend moves the expiry of a live (held, not yet expired) hold to now + ttl.
- expire releases a held reservation whose expiry has come (expiry <= now).

A hold is expired at `now` when `expires_at <= now` (the instant the sweeper may release it and
extend refuses it).
"""

from __future__ import annotations

import zoneinfo._zoneinfo as _tzfile
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from genproto.budget.v1 import budget_pb2 as pb

Outcome = tuple[Any, ...]

NOT_FOUND: Outcome = ("NotFound",)
FAILED_PRECONDITION: Outcome = ("FailedPrecondition",)
CONFLICT: Outcome = ("IdempotencyConflict",)

HARD, SOFT, SHADOW = "hard", "soft", "shadow"
ANY_AMOUNT = -1  # a refund a rebuild restored: the ledger keeps what it gave, not what it asked


@lru_cache(maxsize=64)
def _changes_s(timezone: str) -> tuple[int, ...]:
    """The instants (s) the zone's clocks change, from the tz database itself (the pure-Python
    zoneinfo reader, independent of the service's period code)."""
    return tuple(_tzfile.ZoneInfo.no_cache(timezone)._trans_utc)


def _label(period: int, timezone: str, second: int) -> tuple[int, ...]:
    local = datetime.fromtimestamp(second, ZoneInfo(timezone))
    if period == pb.PERIOD_MINUTE:
        return (local.year, local.month, local.day, local.hour, local.minute)
    if period == pb.PERIOD_HOUR:
        return (local.year, local.month, local.day, local.hour)
    if period == pb.PERIOD_DAY:
        return (local.year, local.month, local.day)
    if period == pb.PERIOD_WEEK:
        iso = local.isocalendar()
        return (iso.year, iso.week)
    if period == pb.PERIOD_MONTH:
        return (local.year, local.month)
    if period == pb.PERIOD_YEAR:
        return (local.year,)
    raise ValueError(f"unknown period {period}")


def period_key(period: int, timezone: str, now_ms: int) -> tuple[int, ...]:
    """The calendar name of the period `now_ms` falls in, in the budget's zone.

    A period is named by the calendar unit the wall clock shows, and names never go back: when
    clocks go back, time shown again stays in the newest period already begun. So the name is
    the latest label shown at any instant up to now: the label now, or the one shown just
    before a clock change of the last 26 hours (no zone ever went back by more than a day).
    Period boundaries are whole seconds, so flooring to the second is exact.
    """
    if period in (pb.PERIOD_NONE, pb.PERIOD_UNSPECIFIED):
        return ()
    now = now_ms // 1000
    before_changes = [c - 1 for c in _changes_s(timezone) if now - 26 * 3600 < c <= now]
    return max(_label(period, timezone, s) for s in [now, *before_changes])


@dataclass
class Budget:
    id: str
    selector: frozenset[tuple[str, str]]
    limit: int
    overdraft: int
    mode: str
    period: int
    timezone: str
    reserved: int = 0
    spent_by_period: dict[tuple[int, ...], int] = field(default_factory=dict)

    def key(self, now_ms: int) -> tuple[int, ...]:
        return period_key(self.period, self.timezone, now_ms)

    def spent(self, now_ms: int) -> int:
        """Spend of the period `now_ms` is in (zero in a period nothing was charged in)."""
        return self.spent_by_period.get(self.key(now_ms), 0)

    def covers(self, pairs: frozenset[tuple[str, str]]) -> bool:
        return self.selector <= pairs

    def balance(self, now_ms: int, exceeded: bool) -> tuple[Any, ...]:
        """(id, limit, overdraft, mode, spent, reserved, exceeded), as a call leaves it."""
        return (
            self.id,
            self.limit,
            self.overdraft,
            self.mode,
            self.spent(now_ms),
            self.reserved,
            exceeded,
        )


@dataclass
class Reservation:
    fingerprint: str
    amount: int
    budgets: list[Budget]
    expires_at: int
    state: str = "held"  # held | committed | released | expired
    first_answer: Outcome = ()
    # after commit
    commit_fingerprint: str | None = None
    commit_answer: Outcome = ()
    charged: int = 0
    refunded: int = 0
    charge_periods: dict[str, tuple[int, ...]] = field(default_factory=dict)
    refunds: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (asked, given)
    # after release
    released: int = 0


class Model:
    """An org's budgets and reservations."""

    def __init__(self, budgets: list[Budget]) -> None:
        self.budgets = sorted(budgets, key=lambda b: b.id)
        self.reservations: dict[str, Reservation] = {}
        # A commit at exactly expires_at is late (the hold is expired from that instant on, as
        # for extend and expire). False copies a known deviation of the engine, so the property
        # test can run past it until it is fixed.

    def budget(self, budget_id: str) -> Budget:
        return next(b for b in self.budgets if b.id == budget_id)

    def covering(self, pairs: frozenset[tuple[str, str]]) -> list[Budget]:
        return [b for b in self.budgets if b.covers(pairs)]

    # -- operations ---------------------------------------------------------------------------

    def reserve(
        self,
        reservation_id: str,
        fingerprint: str,
        pairs: frozenset[tuple[str, str]],
        amount: int,
        *,
        critical: bool,
        ttl_ms: int,
        now_ms: int,
    ) -> Outcome:
        """("ok", (amount, expires_at, balances)) or ("refused", refusals)."""
        existing = self.reservations.get(reservation_id)
        if existing is not None:
            if existing.fingerprint != fingerprint:
                return CONFLICT
            return existing.first_answer
        covering = self.covering(pairs)
        refusals = []
        for b in covering:
            room = b.limit + (b.overdraft if critical else 0)
            used = b.spent(now_ms) + b.reserved
            # a hard budget with no room left refuses whatever the amount, zero included
            if b.mode == HARD and (used + amount > room or used >= room):
                refusals.append((b.id, b.limit, room - used))
        if refusals:
            return ("refused", tuple(refusals))
        balances = []
        for b in covering:
            over = b.spent(now_ms) + b.reserved + amount > b.limit
            b.reserved += amount
            balances.append(b.balance(now_ms, over and b.mode != HARD))
        answer: Outcome = ("ok", (amount, now_ms + ttl_ms, tuple(balances)))
        self.reservations[reservation_id] = Reservation(
            fingerprint, amount, covering, now_ms + ttl_ms, first_answer=answer
        )
        return answer

    def commit(self, reservation_id: str, actual: int, *, now_ms: int) -> Outcome:
        """("ok", (charged, released, overage, late, balances))."""
        r = self.reservations.get(reservation_id)
        if r is None:
            return NOT_FOUND
        fingerprint = str(actual)
        if r.state == "committed":
            return r.commit_answer if r.commit_fingerprint == fingerprint else CONFLICT
        if r.state == "released":
            return FAILED_PRECONDITION
        held = r.state == "held"
        balances = []
        for b in r.budgets:
            key = b.key(now_ms)
            b.spent_by_period[key] = b.spent_by_period.get(key, 0) + actual
            r.charge_periods[b.id] = key
            if held:
                b.reserved -= r.amount
            balances.append(b.balance(now_ms, False))
        given_back = r.amount - actual if held and actual < r.amount else 0
        late = r.expires_at <= now_ms
        answer: Outcome = (
            "ok",
            (actual, given_back, max(0, actual - r.amount), late, tuple(balances)),
        )
        r.state = "committed"
        r.commit_fingerprint = fingerprint
        r.commit_answer = answer
        r.charged = actual
        return answer

    def release(self, reservation_id: str) -> Outcome:
        """("ok", released_nanos)."""
        r = self.reservations.get(reservation_id)
        if r is None:
            return NOT_FOUND
        if r.state == "committed":
            return FAILED_PRECONDITION
        if r.state == "released":
            return ("ok", r.released)
        if r.state == "expired":
            return ("ok", 0)
        for b in r.budgets:
            b.reserved -= r.amount
        r.state = "released"
        r.released = r.amount
        return ("ok", r.amount)

    def refund(self, reservation_id: str, refund_id: str, amount: int) -> Outcome:
        """("ok", refunded_nanos)."""
        r = self.reservations.get(reservation_id)
        if r is None:
            return NOT_FOUND
        if refund_id in r.refunds:
            asked, given = r.refunds[refund_id]
            return ("ok", given) if asked in (amount, ANY_AMOUNT) else CONFLICT
        if r.state != "committed":
            return FAILED_PRECONDITION
        give = min(amount, r.charged - r.refunded)
        for b in r.budgets:
            # The charge's own period: a period that has closed keeps what it spent.
            key = r.charge_periods[b.id]
            b.spent_by_period[key] -= give
        r.refunded += give
        r.refunds[refund_id] = (amount, give)
        return ("ok", give)

    def extend(self, reservation_id: str, ttl_ms: int, *, now_ms: int) -> Outcome:
        """("ok", new_expires_at)."""
        r = self.reservations.get(reservation_id)
        if r is None:
            return NOT_FOUND
        if r.state != "held" or r.expires_at <= now_ms:
            return FAILED_PRECONDITION
        r.expires_at = now_ms + ttl_ms
        return ("ok", r.expires_at)

    def expire(self, reservation_id: str, *, now_ms: int) -> Outcome:
        """("ok", True) when this call released a due hold."""
        r = self.reservations.get(reservation_id)
        if r is None or r.state != "held" or r.expires_at > now_ms:
            return ("ok", False)
        for b in r.budgets:
            b.reserved -= r.amount
        r.state = "expired"
        return ("ok", True)

    def restored_by_rebuild(self, reservation_id: str) -> None:
        """A rebuild restored this open hold from the ledger: a retried Reserve answers its
        amount and first expiry, without balances (the ledger keeps none)."""
        r = self.reservations[reservation_id]
        amount, expires_at, _balances = r.first_answer[1]
        r.first_answer = ("ok", (amount, expires_at, ()))

    def ended_by_rebuild(self, reservation_id: str) -> None:
        """A rebuild ended this reservation from the ledger's account: its record keeps no
        balances in the commit answer, and its refunds answer whatever amount a retry asks."""
        r = self.reservations[reservation_id]
        if r.commit_answer:
            charged, given_back, overage, late, _balances = r.commit_answer[1]
            r.commit_answer = ("ok", (charged, given_back, overage, late, ()))
        r.refunds = {rid: (ANY_AMOUNT, given) for rid, (_, given) in r.refunds.items()}

    def refunds_restored(self, reservation_id: str, kept: set[str]) -> None:
        """A rebuild added the refunds a committed record missed from the ledger: those answer
        whatever amount a retry asks; the ones it kept answer as before."""
        r = self.reservations[reservation_id]
        r.refunds = {
            rid: (asked if rid in kept else ANY_AMOUNT, given)
            for rid, (asked, given) in r.refunds.items()
        }

    # -- what the store should hold -----------------------------------------------------------

    def counters(self, now_ms: int) -> dict[str, tuple[int, int]]:
        """budget id -> (spent in the current period, reserved)."""
        return {b.id: (b.spent(now_ms), b.reserved) for b in self.budgets}

    def held_expiries(self) -> dict[str, int]:
        """Held reservations (also those past expiry, not yet swept) -> expires_at."""
        return {rid: r.expires_at for rid, r in self.reservations.items() if r.state == "held"}

    def states(self) -> dict[str, str]:
        return {rid: r.state for rid, r in self.reservations.items()}
