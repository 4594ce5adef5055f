"""Random sequences of budget operations: the Lua scripts on real Redis against a reference model.

A hypothesis state machine drives `budget_service.hotpath.engine.Engine` directly (the calls the
gRPC handlers make, within the handlers' input limits) on the session's Redis, and
`tests/reference_model.py` alongside it. After every step it compares each call's outcome
(admitted / refused and by which budgets with what room, amounts charged / released / refunded,
balances, error kinds) and the store: every budget's spent and reserved (read the way
GetBudgetStatus reads them, lazy period reset included), the expiry index and every
reservation's state.

Each example gets a fresh org with five hand-made budgets pushed with ConfigSync (a hard org cap
per month in America/New_York, a team budget per day with an overdraft band, a soft or shadow
one per hour / week / lifetime, one per day in a zone with a half-hour offset or DST step, a
lifetime / monthly one on two selector keys), two engines on the same Redis (two replicas, each
with its own config cache and reservation memory), and a fake clock the machine only moves
forward: across period boundaries, DST changes and hold expiries (to the millisecond).
Limits are either small or near / above 2^53 nanos, where Lua's doubles stop being exact, and
the counters are driven past 2^53.

Budgets are created in PostgreSQL (the session's) as the admin API does, and the machine runs a
ledger writer, so it can also lose Redis's data: all of the org's keys (then every call fails
closed until the org is rebuilt from the ledger), or the writes since an earlier snapshot (a
replica promoted without the last writes, repaired by a forced rebuild); after either, the
model forgets what the rebuild cannot restore (ended reservations whose records Redis lost).
Clock-change steps move the clock around the zones' own offset changes, with the period cache
emptied first (a fresh process); the model names periods by its own rule (reference_model.py).

Hypothesis is not async-friendly: each machine runs its engine calls on its own event loop with
its own Redis client and PostgreSQL pool, never on pytest-asyncio's session loop.

A failure prints the steps (and a @reproduce_failure blob); MODEL_EXAMPLES=2000 runs deeper.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys, periods
from budget_service.hotpath.budgets import MODE_NAMES, BudgetConfig, validate_budget
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.engine import Balance, Committed, Engine, Reserved
from budget_service.hotpath.errors import BudgetExceeded, DataLost
from budget_service.hotpath.periods import bounds_ms
from budget_service.hotpath.store import Scripts, connect
from budget_service.ledger.progress import id_tuple, last_event_id
from budget_service.ledger.recovery import rebuild_org
from budget_service.ledger.writer import GROUP, LedgerWriter
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.errors import FailedPrecondition, IdempotencyConflict, NotFound
from tests import reference_model as ref

NY = "America/New_York"
MAX_AMOUNT = 10**15  # Settings.max_amount_nanos: the most one request may hold or charge
RETENTION_MS = 90_000_000  # Settings.retention_seconds: records outlive any run of this test
# The data-set epoch the budgets of these orgs are written with, and the engines expect: the
# session database's own (the machine's budgets are in its PostgreSQL, so the session's service
# checks them too), read by the test; "property-test" for the Redis-only orgs further below.
EPOCH = "property-test"
DATA_SET_EPOCH: list[str] = []
TTLS_MS = (1_000, 2_000, 60_000, 3_600_000, 21_600_000)  # the handlers allow 1 s to 6 h
RESERVATION_IDS = ("r0", "r1", "r2", "r3")
REFUND_IDS = ("f0", "f1", "f2")
SUBJECTS: tuple[frozenset[tuple[str, str]], ...] = tuple(
    frozenset(s.items())
    for s in (
        {},
        {"team": "a"},
        {"team": "b"},
        {"team": "a", "user": "u1"},
        {"user": "u1", "provider": "openai"},
        {"team": "a", "provider": "openai"},
        {"team": "a", "user": "u1", "provider": "openai"},
        {"provider": "anthropic"},
    )
)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ADVANCES_MS = (
    1,
    999,
    1_000,
    1_001,
    59_000,
    HOUR_MS,
    5 * HOUR_MS,
    23 * HOUR_MS,
    DAY_MS,
    3 * DAY_MS,
    31 * DAY_MS,
)


def _local_ms(tz: str, y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo(tz)).timestamp()) * 1000


# Starting instants next to interesting boundaries (years from the real clock: only the
# service's clock may matter to the scripts).
BASE_TIMES_MS = (
    _local_ms(NY, 2031, 1, 31, 23, 30),  # a day and a month end in 30 minutes
    _local_ms(NY, 2031, 3, 9, 1, 30),  # DST starts at 02:00
    _local_ms(NY, 2031, 11, 2, 0, 30),  # DST ends at 02:00 (01:xx happens twice)
    _local_ms(NY, 2032, 2, 28, 22, 0),  # a leap day follows
    _local_ms(NY, 2031, 12, 31, 23, 59, 59),  # a year ends in one second
    _local_ms(NY, 2033, 6, 15, 12, 0),  # nothing in particular
)

_uids = itertools.count(1)
_loaded_on: set[str] = set()  # Redis URLs the scripts were loaded on
REDIS_URL: list[str] = []  # set by the test from the session's stack
DATABASE_URL: list[str] = []


# -- an example's budgets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    id: str
    selector: dict[str, str]
    limit: int
    overdraft: int
    mode: int
    period: int
    timezone: str


@dataclass(frozen=True)
class Setup:
    big: bool  # limits near / above 2^53 and amounts up to MAX_AMOUNT
    base_ms: int
    specs: tuple[Spec, ...]


def _limits(big: bool) -> st.SearchStrategy[int]:
    if not big:
        return st.one_of(st.integers(0, 100), st.integers(1_000, 10_000))
    near = st.one_of(st.sampled_from([-1, 0, 1, 2]), st.integers(-3_000, 3_000))
    return st.one_of(
        near.map(lambda d: 2**53 + d),
        near.map(lambda d: 2**53 + d),
        st.integers(2 * MAX_AMOUNT, 12 * MAX_AMOUNT),
        st.just(2**62),
    )


def _overdrafts(big: bool) -> st.SearchStrategy[int]:
    if not big:
        return st.one_of(st.just(0), st.integers(1, 600))
    return st.one_of(st.just(0), st.integers(1, 3 * MAX_AMOUNT), st.just(2**62))


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    big = draw(st.booleans())
    limit, overdraft = _limits(big), _overdrafts(big)
    modes = st.sampled_from([pb.MODE_HARD, pb.MODE_SOFT, pb.MODE_SHADOW])
    specs = (
        Spec("cap", {}, draw(limit), 0, pb.MODE_HARD, pb.PERIOD_MONTH, NY),
        Spec(
            "team-a", {"team": "a"}, draw(limit), draw(overdraft), pb.MODE_HARD, pb.PERIOD_DAY, NY
        ),
        Spec(
            "user-u1",
            {"user": "u1"},
            draw(limit),
            draw(overdraft),
            draw(st.sampled_from([pb.MODE_SOFT, pb.MODE_SHADOW])),
            draw(st.sampled_from([pb.PERIOD_HOUR, pb.PERIOD_NONE, pb.PERIOD_WEEK])),
            draw(st.sampled_from([NY, "UTC"])),
        ),
        Spec(
            "openai",
            {"provider": "openai"},
            draw(limit),
            draw(overdraft),
            draw(modes),
            pb.PERIOD_DAY,
            draw(st.sampled_from(["Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"])),
        ),
        Spec(
            "team-a-openai",
            {"team": "a", "provider": "openai"},
            draw(limit),
            draw(overdraft),
            draw(modes),
            draw(st.sampled_from([pb.PERIOD_NONE, pb.PERIOD_MONTH])),
            NY,
        ),
    )
    return Setup(big, draw(st.sampled_from(BASE_TIMES_MS)), specs)


# -- the engine's answers in the model's shape ------------------------------------------------


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def _balance(b: Balance) -> tuple[Any, ...]:
    return (
        b.budget_id,
        b.limit_nanos,
        b.overdraft_nanos,
        MODE_NAMES[b.mode],
        b.spent_nanos,
        b.reserved_nanos,
        b.exceeded,
    )


def _answer(value: Any) -> ref.Outcome:
    if isinstance(value, Reserved):
        return (
            "ok",
            (value.amount_nanos, value.expires_at_ms, tuple(_balance(b) for b in value.budgets)),
        )
    if isinstance(value, Committed):
        return (
            "ok",
            (
                value.charged_nanos,
                value.released_nanos,
                value.overage_nanos,
                value.late,
                tuple(_balance(b) for b in value.budgets),
            ),
        )
    return ("ok", value)


async def _outcome(call: Any) -> ref.Outcome:
    try:
        return _answer(await call)
    except BudgetExceeded as exc:
        return (
            "refused",
            tuple((r.budget_id, r.limit_nanos, r.remaining_nanos) for r in exc.refusals),
        )
    except (NotFound, FailedPrecondition, IdempotencyConflict, DataLost) as exc:
        return (type(exc).__name__,)
    except Exception as exc:  # compared like an answer, so the failure names the step
        return ("unexpected", type(exc).__name__, str(exc))


def _fingerprint(
    subject: frozenset[tuple[str, str]], amount: int, critical: bool, ttl_ms: int
) -> str:
    """The caller's content hash of a reserve request (the handler hashes the request)."""
    return f"{sorted(subject)}|{amount}|{int(critical)}|{ttl_ms}"


def _next_boundary_ms(period: int, tz: str, now_ms: int) -> int:
    """The first instant of the period after the one `now_ms` is in (hour: whole UTC hours)."""
    if period == pb.PERIOD_HOUR:
        return (now_ms // HOUR_MS + 1) * HOUR_MS
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(now_ms // 1000, zone)
    if period == pb.PERIOD_DAY:
        nxt = datetime(local.year, local.month, local.day, tzinfo=zone) + timedelta(days=1)
    else:  # month
        nxt = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone)
    return int(nxt.timestamp()) * 1000


# -- the machine ------------------------------------------------------------------------------


class BudgetMachine(RuleBasedStateMachine):
    """One org: two engines (replicas) on one Redis and the model, driven by the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = connect(REDIS_URL[0], timeout_seconds=5.0, pool_size=4)
        self.scripts = Scripts(self.client)

        async def pool() -> asyncpg.Pool:  # created on this machine's loop
            return await asyncpg.create_pool(DATABASE_URL[0], min_size=1, max_size=2)

        self.pool = self.run(pool())
        self.repo = BudgetRepository(self.pool)
        self.writer = LedgerWriter(self.client, self.pool, batch_size=500, claim_idle_ms=60_000)
        # the org's keys as an earlier step left them (rewind_and_rebuild goes back to them)
        self.snapshot: dict[bytes, bytes] | None = None
        self.org = f"prop-{uuid.uuid4().hex[:12]}"
        self.clock = FakeClock(0)
        self.engines: list[Engine] = []
        self.model = ref.Model([])
        self.configs: dict[str, BudgetConfig] = {}
        self.big = False
        self.requests: dict[str, tuple[Any, ...]] = {}  # reservation id -> first admitted call
        # reservation id -> (state, when it last changed): a rebuild restores the records of
        # reservations that ended within the retention window
        self.changed: dict[str, tuple[str, int]] = {}
        self.actuals: dict[str, int] = {}  # reservation id -> first committed actual
        self.bulk = itertools.count()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, coro: Any) -> ref.Outcome:
        """One engine call's outcome, in the model's shape."""
        outcome: ref.Outcome = self.run(_outcome(coro))
        return outcome

    def teardown(self) -> None:
        try:
            self.run(self.client.aclose())
            self.run(self.pool.close())
        finally:
            self.loop.close()

    @property
    def now(self) -> int:
        return self.clock.now

    def check(self, what: str, real: ref.Outcome, expected: ref.Outcome) -> None:
        assert real == expected, (
            f"{what} at t={self.now}: engine answered {real!r}, model {expected!r}"
        )

    def _engine(self, data: st.DataObject) -> Engine:
        return self.engines[data.draw(st.sampled_from([0, 0, 1]), label="replica")]

    # -- set-up ----------------------------------------------------------------------------

    @initialize(
        setup=setups(), prefill=st.integers(0, 9), subject=st.sampled_from(SUBJECTS), data=st.data()
    )
    def set_up(
        self, setup: Setup, prefill: int, subject: frozenset[tuple[str, str]], data: st.DataObject
    ) -> None:
        self.big = setup.big
        self.clock.now = setup.base_ms

        async def create() -> None:
            if REDIS_URL[0] not in _loaded_on:
                await self.scripts.load()
                _loaded_on.add(REDIS_URL[0])
            sync = ConfigSync(self.scripts, DATA_SET_EPOCH[0])
            for s in setup.specs:  # PostgreSQL first (uid, version), as the admin API does
                budget = pb.Budget(
                    id=s.id, org=self.org, selector=s.selector, limit_nanos=s.limit,
                    period=s.period, timezone=s.timezone, mode=s.mode,  # type: ignore[arg-type]
                    overdraft_nanos=s.overdraft, alert_thresholds_percent=(50, 75, 90, 100),
                )  # fmt: skip
                config = await self.repo.upsert(validate_budget(budget), "property-test")
                self.configs[s.id] = config
                await sync.push(config, first_of_org=True)

        self.run(create())
        self.engines = [
            Engine(
                self.scripts,
                ConfigCache(self.scripts, epoch=DATA_SET_EPOCH[0]),
                self.clock,
                retention_ms=RETENTION_MS,
            )
            for _ in range(2)
        ]
        for engine in self.engines:  # as the service's config sync tells its cache
            engine.cache.add_budgeted(self.org)
        self.model = ref.Model(
            [
                ref.Budget(
                    s.id,
                    frozenset(s.selector.items()),
                    s.limit,
                    s.overdraft,
                    MODE_NAMES[s.mode],
                    s.period,
                    s.timezone,
                )
                for s in setup.specs
            ],
        )
        if self.big:
            # often start near 2^53: nine charges of ~10^15 are ~9.0e15, 2^53 is ~9.007e15
            self._spend(prefill, subject, False, data)

    # -- drawing arguments -----------------------------------------------------------------

    def _amounts(self) -> st.SearchStrategy[int]:
        if self.big:
            return st.one_of(
                st.just(MAX_AMOUNT),
                st.integers(MAX_AMOUNT - 1_000, MAX_AMOUNT),
                st.integers(0, 1_000),
            )
        return st.integers(0, 700)

    def _holds(self) -> st.SearchStrategy[int]:
        return self._amounts().map(lambda a: a)

    def _rid(self, data: st.DataObject, *prefer: str) -> str:
        """A reservation id: mostly one in a state the call has work to do in (`prefer`; "new"
        is an unused pool id), else any one the run has used (bulk ones too), else a pool id.
        """
        known = sorted(self.model.reservations)
        preferred = [r for r in known if self.model.reservations[r].state in prefer]
        if "new" in prefer:
            preferred += [r for r in RESERVATION_IDS if r not in self.model.reservations]
        pick = data.draw(st.sampled_from(["preferred"] * 3 + ["known", "pool"]), label="pick")
        choices = (
            preferred
            if pick == "preferred" and preferred
            else known
            if pick == "known" and known
            else RESERVATION_IDS
        )
        return data.draw(st.sampled_from(choices), label="rid")

    def _room(self, budget_id: str, critical: bool) -> int:
        b = self.model.budget(budget_id)
        return b.limit + (b.overdraft if critical else 0) - b.spent(self.now) - b.reserved

    # -- one checked call each -------------------------------------------------------------

    def _reserve(
        self,
        engine: Engine,
        rid: str,
        subject: frozenset[tuple[str, str]],
        amount: int,
        critical: bool,
        ttl: int,
    ) -> ref.Outcome:
        fp = _fingerprint(subject, amount, critical, ttl)
        real = self.call(
            engine.reserve(self.org, rid, fp, subject, amount, critical=critical, ttl_ms=ttl)
        )
        expected = self.model.reserve(
            rid, fp, subject, amount, critical=critical, ttl_ms=ttl, now_ms=self.now
        )
        self.check(
            f"reserve({rid!r}, {sorted(subject)}, {amount}, critical={critical}, ttl={ttl})",
            real,
            expected,
        )
        if expected[0] == "ok":
            self.requests.setdefault(rid, (subject, amount, critical, ttl))
        return real

    def _commit(self, engine: Engine, rid: str, actual: int) -> None:
        real = self.call(engine.commit(self.org, rid, str(actual), actual))
        expected = self.model.commit(rid, actual, now_ms=self.now)
        self.check(f"commit({rid!r}, {actual})", real, expected)
        if expected[0] == "ok":
            self.actuals.setdefault(rid, actual)

    def _release(self, engine: Engine, rid: str) -> None:
        real = self.call(engine.release(self.org, rid))
        self.check(f"release({rid!r})", real, self.model.release(rid))

    def _extend(self, engine: Engine, rid: str, ttl: int) -> None:
        real = self.call(engine.extend(self.org, rid, ttl))
        self.check(f"extend({rid!r}, {ttl})", real, self.model.extend(rid, ttl, now_ms=self.now))

    def _expire(self, engine: Engine, rid: str) -> None:
        real = self.call(engine.expire(self.org, rid))
        self.check(f"expire({rid!r})", real, self.model.expire(rid, now_ms=self.now))

    def _spend(
        self, n: int, subject: frozenset[tuple[str, str]], critical: bool, data: st.DataObject
    ) -> None:
        """Reserve and commit up to n fresh reservations: counters grow fast (past 2^53)."""
        amounts = st.integers(MAX_AMOUNT - 1_000, MAX_AMOUNT) if self.big else st.integers(1, 700)
        for _ in range(n):
            rid = f"bulk-{next(self.bulk)}"
            amount = data.draw(amounts, label="amount")
            if (
                self._reserve(self.engines[0], rid, subject, amount, critical, TTLS_MS[-1])[0]
                != "ok"
            ):
                return
            actual = data.draw(
                st.integers(max(0, amount - 3), min(MAX_AMOUNT, amount + 3)), label="actual"
            )
            self._commit(self._engine(data), rid, actual)

    # -- rules -----------------------------------------------------------------------------

    @rule(
        subject=st.sampled_from(SUBJECTS),
        critical=st.booleans(),
        ttl=st.sampled_from(TTLS_MS),
        how=st.sampled_from(["retry", "drawn", "fill-tightest", "fill-one"]),
        delta=st.integers(-2, 2),
        data=st.data(),
    )
    def reserve(
        self,
        subject: frozenset[tuple[str, str]],
        critical: bool,
        ttl: int,
        how: str,
        delta: int,
        data: st.DataObject,
    ) -> None:
        rid = self._rid(data, "new")
        covering = [b.id for b in self.model.covering(subject)]
        if how == "retry" and rid in self.requests:
            subject, amount, critical, ttl = self.requests[rid]
        elif how.startswith("fill"):
            # just at, below or above the room a budget has left: exact boundary comparisons
            if how == "fill-tightest":
                room = min(self._room(b, critical) for b in covering)
            else:
                room = self._room(data.draw(st.sampled_from(covering), label="fill"), critical)
            amount = min(MAX_AMOUNT, max(0, room + delta))
        else:
            amount = data.draw(self._holds(), label="amount")
        self._reserve(self._engine(data), rid, subject, amount, critical, ttl)

    @rule(
        n=st.sampled_from([1, 2, 5, 9, 10]),
        subject=st.sampled_from(SUBJECTS),
        critical=st.booleans(),
        data=st.data(),
    )
    def spend(
        self, n: int, subject: frozenset[tuple[str, str]], critical: bool, data: st.DataObject
    ) -> None:
        self._spend(n, subject, critical, data)

    @rule(
        how=st.sampled_from(["hold", "near", "drawn", "zero", "retry"]),
        delta=st.integers(-3, 3),
        data=st.data(),
    )
    def commit(self, how: str, delta: int, data: st.DataObject) -> None:
        rid = self._rid(data, "held", "expired")
        hold = self.requests[rid][1] if rid in self.requests else 0
        if how == "retry" and rid in self.actuals:
            actual = self.actuals[rid]
        elif how == "hold":
            actual = hold
        elif how == "near":
            actual = min(MAX_AMOUNT, max(0, hold + delta))
        elif how == "zero":
            actual = 0
        else:
            actual = data.draw(self._amounts(), label="actual")
        self._commit(self._engine(data), rid, actual)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._release(self._engine(data), self._rid(data, "held"))

    @rule(
        refund_id=st.sampled_from(REFUND_IDS),
        how=st.sampled_from(["retry", "rest", "drawn"]),
        delta=st.integers(-2, 2),
        data=st.data(),
    )
    def refund(self, refund_id: str, how: str, delta: int, data: st.DataObject) -> None:
        rid = self._rid(data, "committed")
        r = self.model.reservations.get(rid)
        if (
            how == "retry"
            and r is not None
            and refund_id in r.refunds
            and r.refunds[refund_id][0] != ref.ANY_AMOUNT  # restored: any amount retries it
        ):
            amount = r.refunds[refund_id][0]
        elif how == "rest" and r is not None:
            amount = max(1, r.charged - r.refunded + delta)
        else:
            amount = max(1, data.draw(self._amounts(), label="amount"))  # the handler wants > 0
        real = self.call(self._engine(data).refund(self.org, rid, refund_id, amount))
        self.check(
            f"refund({rid!r}, {refund_id!r}, {amount})",
            real,
            self.model.refund(rid, refund_id, amount),
        )

    @rule(ttl=st.sampled_from(TTLS_MS), data=st.data())
    def extend(self, ttl: int, data: st.DataObject) -> None:
        self._extend(self._engine(data), self._rid(data, "held"), ttl)

    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        self._expire(self._engine(data), self._rid(data, "held"))

    @rule(
        budget_id=st.sampled_from(["cap", "team-a", "user-u1", "openai", "team-a-openai"]),
        change=st.sampled_from(["limit", "overdraft", "mode"]),
        data=st.data(),
    )
    def reconfigure(self, budget_id: str, change: str, data: st.DataObject) -> None:
        """A new version of a budget's limit, overdraft or mode (counters and holds stay)."""
        old = self.configs[budget_id]
        b = self.model.budget(budget_id)
        if change == "limit":
            new = replace(old, limit_nanos=data.draw(_limits(self.big), label="limit"))
        elif change == "overdraft":
            new = replace(old, overdraft_nanos=data.draw(_overdrafts(self.big), label="od"))
        else:
            new = replace(old, mode=data.draw(st.sampled_from(sorted(MODE_NAMES)), label="mode"))
        new = self.run(self.repo.upsert(new.to_proto(), "property-test"))
        self.run(ConfigSync(self.scripts, DATA_SET_EPOCH[0]).push(new))
        self.configs[budget_id] = new
        b.limit, b.overdraft, b.mode = new.limit_nanos, new.overdraft_nanos, new.mode_name

    @rule(ms=st.sampled_from(ADVANCES_MS))
    def advance(self, ms: int) -> None:
        self.clock.now += ms

    @rule(
        to=st.sampled_from(["expiry", "expiry", "day", "month", "hour", "other-day"]),
        offset=st.sampled_from([-1, 0, 1]),
        then=st.sampled_from(["commit", "extend", "expire", "release", "expire,commit", "nothing"]),
        data=st.data(),
    )
    def jump(self, to: str, offset: int, then: str, data: st.DataObject) -> None:
        """Move the clock to just before, at or just after a period boundary or a live hold's
        expiry (and then touch that hold at once)."""
        rid = None
        if to == "expiry":
            live = sorted((e, r) for r, e in self.model.held_expiries().items() if e > self.now)
            if not live:
                return
            target, rid = data.draw(st.sampled_from(live), label="expiry")
        elif to == "other-day":
            b = self.model.budget("openai")
            target = _next_boundary_ms(pb.PERIOD_DAY, b.timezone, self.now)
        else:
            period = {"day": pb.PERIOD_DAY, "month": pb.PERIOD_MONTH, "hour": pb.PERIOD_HOUR}
            target = _next_boundary_ms(period[to], NY, self.now)
        self.clock.now = max(self.now, target + offset)
        if rid is None:
            return
        for op in then.split(","):
            engine = self._engine(data)
            if op == "commit":
                self._commit(engine, rid, data.draw(self._amounts(), label="actual"))
            elif op == "extend":
                self._extend(engine, rid, data.draw(st.sampled_from(TTLS_MS), label="ttl"))
            elif op == "expire":
                self._expire(engine, rid)
            elif op == "release":
                self._release(engine, rid)

    # -- clock changes and data loss -------------------------------------------------------

    @rule(
        budget_id=st.sampled_from(["cap", "team-a", "user-u1", "openai"]),
        offset_ms=st.sampled_from([-3_600_001, -1, 0, 1, 1_800_000, 3_599_999, 3_600_000]),
        subject=st.sampled_from(SUBJECTS),
        data=st.data(),
    )
    def clock_change(
        self,
        budget_id: str,
        offset_ms: int,
        subject: frozenset[tuple[str, str]],
        data: st.DataObject,
    ) -> None:
        """Move the clock to around the next change of a budget's zone's offset (DST, or any
        change the tz database records), as a fresh process that has computed no period yet,
        and reserve there."""
        b = self.model.budget(budget_id)
        target = _next_change_ms(b.timezone, self.now)
        if target is None:
            return
        self.clock.now = max(self.now, target + offset_ms)
        periods._current.clear()  # a process that just started
        amount = data.draw(self._holds(), label="amount")
        rid = self._rid(data, "new")
        self._reserve(self._engine(data), rid, subject, amount, False, TTLS_MS[2])

    def _drain(self) -> None:
        """Let the ledger writer write every event of the org (it is not running otherwise)."""

        async def drain() -> None:
            for _ in range(100):
                await self.writer._drain_org(self.org, 50)
                last = await last_event_id(self.client, self.org)
                if last == "0-0":
                    return
                groups = await self.client.xinfo_groups(keys.ledger(self.org))
                group = next((g for g in groups if g["name"] == GROUP), None)
                if (
                    group is not None
                    and group["pending"] == 0
                    and id_tuple(group["last-delivered-id"]) >= id_tuple(last)
                ):
                    return
            raise AssertionError("the ledger writer did not catch up")

        self.run(drain())

    async def _org_keys(self, client: aioredis.Redis) -> list[bytes]:
        return [k async for k in client.scan_iter(match=f"ba:{{{self.org}}}:*")]

    def _rebuild(self) -> None:
        # A rebuild takes time: a reservation id forgotten with the lost data and used again is
        # a new reservation, created at a later millisecond (its events get other ids).
        self.clock.now += 1
        self.run(rebuild_org(self.scripts, self.pool, self.org, self.clock,
                             epoch=DATA_SET_EPOCH[0], retention_ms=RETENTION_MS))  # fmt: skip

    @rule(data=st.data())
    def lose_everything_and_rebuild(self, data: st.DataObject) -> None:
        """Redis loses every key of the org (after the writer caught up, so the ledger has it
        all): calls fail closed until the rebuild, which restores what the model has, except
        the records of reservations that ended before the retention window."""
        self._drain()

        async def lose() -> None:
            raw = aioredis.Redis.from_url(REDIS_URL[0])
            try:
                names = await self._org_keys(raw)
                if names:
                    await raw.delete(*names)
            finally:
                await raw.aclose()

        self.run(lose())
        for engine in self.engines:  # every replica, warm cache or not, refuses
            rid = data.draw(st.sampled_from(sorted(self.model.reservations) or ["r0"]))
            self.check(f"commit({rid!r}) after the loss", self.call(engine.commit(
                self.org, rid, "1", 1)), ("DataLost",))  # fmt: skip
            self.check("reserve after the loss", self.call(engine.reserve(
                self.org, "after-loss", "fp", frozenset(), 0, critical=False,
                ttl_ms=60_000)), ("DataLost",))  # fmt: skip
        self._rebuild()
        for rid, r in list(self.model.reservations.items()):
            if r.state == "held" or not self._past_retention(rid):
                # its record comes back from the ledger, the answers it keeps without balances
                self.model.restored_by_rebuild(rid)
                if r.state != "held":
                    self.model.ended_by_rebuild(rid)
            else:
                self._forget(rid)
        self.snapshot = None  # a replica from before the loss: the rebuild is the new baseline

    @rule()
    def snapshot_now(self) -> None:
        """Remember the org's keys: a replica that stops receiving writes from here on."""

        async def dump() -> dict[bytes, bytes]:
            raw = aioredis.Redis.from_url(REDIS_URL[0])
            try:
                return {n: await raw.dump(n) for n in await self._org_keys(raw)}
            finally:
                await raw.aclose()

        self.snapshot = self.run(dump())

    @rule()
    def rewind_and_rebuild(self) -> None:
        """Redis goes back to the snapshot (the replica above is promoted), the ledger has
        everything since: a rebuild puts back what the model has."""
        if self.snapshot is None:
            return
        self._drain()
        before = self.snapshot

        async def rewind() -> dict[str, dict[str, str]]:
            raw = aioredis.Redis.from_url(REDIS_URL[0])
            try:
                names = await self._org_keys(raw)
                if names:
                    await raw.delete(*names)
                for name, value in before.items():
                    await raw.restore(name, 0, value)
                prefix = f"ba:{{{self.org}}}:r:".encode()
                return {n[len(prefix) :].decode(): {} for n in before if n.startswith(prefix)}
            finally:
                await raw.aclose()

        kept = self.run(rewind())
        for rid in kept:  # what the promoted replica's records say
            kept[rid] = self.run(self.client.hgetall(keys.reservation(self.org, rid)))
        # Redis expires records by its own clock, which this test's clock outruns: a record of
        # a reservation that ended longer than the retention ago would be gone by now.
        for rid, then in kept.items():
            r = self.model.reservations.get(rid)
            if then.get("state") != "held" and (
                r is None or (r.state != "held" and self._past_retention(rid))
            ):
                self.run(self.client.delete(keys.reservation(self.org, rid)))
        self._drain()  # the writers see the rewound outbox again: every entry is a duplicate
        self._rebuild()
        for rid, r in list(self.model.reservations.items()):
            then = kept.get(rid)
            if r.state == "held":
                if then is None:
                    self.model.restored_by_rebuild(rid)  # reserved after the snapshot
                continue
            if self._past_retention(rid):
                self._forget(rid)  # its record would be gone by now
            elif then is None:  # ended after the snapshot: its record comes from the ledger
                self.model.restored_by_rebuild(rid)
                self.model.ended_by_rebuild(rid)
            elif then.get("state") != r.state:
                self.model.ended_by_rebuild(rid)  # ended from the ledger's account
            else:  # refunds after the snapshot come from the ledger
                self.model.refunds_restored(rid, {f[3:] for f in then if f.startswith("rf:")})

    def _past_retention(self, rid: str) -> bool:
        """The reservation ended longer than the retention ago (its record expired)."""
        self._note_changes()
        return self.now >= self.changed[rid][1] + RETENTION_MS

    def _note_changes(self) -> None:
        for rid, r in self.model.reservations.items():
            if self.changed.get(rid, ("",))[0] != r.state:
                self.changed[rid] = (r.state, self.now)

    def _forget(self, rid: str) -> None:
        self.model.reservations.pop(rid, None)
        self.changed.pop(rid, None)
        self.requests.pop(rid, None)
        self.actuals.pop(rid, None)

    # -- the store after every step --------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        if not self.engines:
            return
        self._note_changes()
        configs = list(self.configs.values())
        rids = sorted(self.model.reservations)

        async def read() -> list[Any]:
            async with self.client.pipeline(transaction=False) as p:
                for c in configs:
                    p.hmget(keys.budget(self.org, c.uid), "spent", "reserved", "pstart")
                p.zrange(keys.expiries(self.org), 0, -1, withscores=True)
                for rid in rids:
                    p.hget(keys.reservation(self.org, rid), "state")
                return list(await p.execute())

        replies = self.run(read())
        counters = {}
        for c, (spent, reserved, pstart) in zip(configs, replies, strict=False):
            start = bounds_ms(c.period, c.timezone, self.now)[0]
            # as GetBudgetStatus reads them: a period begun since the last write is at zero
            counters[c.id] = (
                int(spent or 0) if int(pstart or 0) >= start else 0,
                int(reserved or 0),
            )
        expected = self.model.counters(self.now)
        assert counters == expected, f"counters at t={self.now}: store {counters}, model {expected}"
        index = {rid: int(score) for rid, score in replies[len(configs)]}
        assert index == self.model.held_expiries(), (
            f"expiry index: store {index}, model {self.model.held_expiries()}"
        )
        states = dict(zip(rids, replies[len(configs) + 1 :], strict=True))
        assert states == self.model.states(), (
            f"reservation states: store {states}, model {self.model.states()}"
        )


def _next_change_ms(timezone: str, now_ms: int) -> int | None:
    """The next instant the zone's clocks change after `now_ms`, from the tz database."""
    later = [c * 1000 for c in ref._changes_s(timezone) if c * 1000 > now_ms]
    return min(later, default=None)


def test_engine_matches_reference_model(stack: Any, app: Any) -> None:
    """(`app`: the session's service, which migrated the database the machine writes to)"""
    REDIS_URL[:] = [stack.redis.url]
    DATABASE_URL[:] = [stack.postgres.url]
    DATA_SET_EPOCH[:] = [app.engine.cache.epoch]
    run_state_machine_as_test(
        BudgetMachine,
        settings=settings(
            max_examples=int(os.environ.get("MODEL_EXAMPLES", "60")),
            stateful_step_count=30,
            deadline=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- known bugs, pinned by the smallest sequence that shows each ------------------------------


class _Org:
    """One org with one lifetime hard budget, on its own event loop (like the machine)."""

    def __init__(self, redis_url: str, limit: int = 1_000) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = connect(redis_url, timeout_seconds=5.0, pool_size=2)
        self.scripts = Scripts(self.client)
        self.org = f"prop-{uuid.uuid4().hex[:12]}"
        self.clock = FakeClock(BASE_TIMES_MS[-1])
        self.config = BudgetConfig(
            uid=next(_uids),
            id="cap",
            org=self.org,
            selector={},
            limit_nanos=limit,
            period=pb.PERIOD_NONE,
            timezone="UTC",
            mode=pb.MODE_HARD,
            alert_thresholds_percent=(100,),
            overdraft_nanos=0,
            version=1,
        )
        self.run(self.scripts.load())
        self.run(ConfigSync(self.scripts, EPOCH).push(self.config, first_of_org=True))
        self.engine = Engine(
            self.scripts,
            ConfigCache(self.scripts, epoch=EPOCH),
            self.clock,
            retention_ms=RETENTION_MS,
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def counters(self) -> tuple[int, int]:
        spent, reserved = self.run(
            self.client.hmget(keys.budget(self.org, self.config.uid), "spent", "reserved")
        )
        return int(spent), int(reserved)

    def close(self) -> None:
        try:
            self.run(self.client.aclose())
        finally:
            self.loop.close()


def test_zero_amount_hold_can_be_committed_and_released(stack: Any) -> None:
    o = _Org(stack.redis.url)
    try:
        o.run(o.engine.reserve(o.org, "z1", "fp", frozenset(), 0, critical=False, ttl_ms=60_000))
        o.run(o.engine.reserve(o.org, "z2", "fp", frozenset(), 0, critical=False, ttl_ms=60_000))
        assert o.run(_outcome(o.engine.release(o.org, "z1"))) == ("ok", 0)
        committed = o.run(_outcome(o.engine.commit(o.org, "z2", "5", 5)))
        assert committed[0] == "ok", committed
        assert o.counters() == (5, 0)
    finally:
        o.close()


def test_commit_at_the_expiry_instant_is_late(stack: Any) -> None:
    o = _Org(stack.redis.url)
    try:
        held = o.run(
            o.engine.reserve(o.org, "r", "fp", frozenset(), 10, critical=False, ttl_ms=1_000)
        )
        o.clock.now = held.expires_at_ms
        assert o.run(o.engine.expire(o.org, "r"))  # the sweeper may release it at this instant
        done = o.run(o.engine.commit(o.org, "r", "7", 7))
        assert (done.charged_nanos, done.released_nanos) == (7, 0)
        assert done.late, "the hold was already expired (and released) when it was committed"
    finally:
        o.close()
