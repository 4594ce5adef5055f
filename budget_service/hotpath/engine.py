"""The budget decisions: each operation resolves its budgets and makes one script call.

Python only prepares arguments (which budgets, which period, what time it is) and reads the
answer; every check and every change happens inside one atomic Lua script (scripts/*.lua).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from budget_service.hotpath import keys
from budget_service.hotpath.budgets import MODES_BY_NAME, BudgetConfig
from budget_service.hotpath.config_cache import ConfigCache, OrgBudgets
from budget_service.hotpath.errors import BudgetExceeded, CounterOverflow, DataLost, Refusal
from budget_service.hotpath.periods import bounds_ms
from budget_service.hotpath.store import Scripts, redis_call
from servicekit.clock import Clock
from servicekit.errors import FailedPrecondition, IdempotencyConflict, NotFound, Unavailable

Nanos = int
RELIST_SECONDS = 30.0
ATTEMPTS = 3  # a stale config or an unknown key list costs one more try; three is plenty
MAX_REFUNDS = 100  # refund ids one reservation takes (scripts/refund.lua)
DEFAULT_OUTBOX_LIMIT = 500_000


@dataclass(frozen=True)
class Balance:
    """A budget's counters as one script call left them."""

    budget_id: str
    limit_nanos: Nanos
    overdraft_nanos: Nanos
    mode: int
    spent_nanos: Nanos
    reserved_nanos: Nanos
    exceeded: bool

    @property
    def remaining_nanos(self) -> Nanos:
        return self.limit_nanos - self.spent_nanos - self.reserved_nanos

    @property
    def overdraft_remaining_nanos(self) -> Nanos:
        room = self.limit_nanos + self.overdraft_nanos - self.spent_nanos - self.reserved_nanos
        return max(0, min(self.overdraft_nanos, room))

    @classmethod
    def from_script(cls, row: list[Any]) -> Balance:
        budget_id, limit, od, mode, spent, reserved, exceeded = row
        return cls(
            budget_id,
            int(limit),
            int(od),
            MODES_BY_NAME[mode],
            int(spent),
            int(reserved),
            bool(exceeded),
        )


@dataclass(frozen=True)
class Attempt:
    """What one try of a reservation script is built from."""

    config_version: str
    epoch: str
    now: int
    uids: str
    periods: list[str | int]
    price_ref: str | None  # None: not known in this process


@dataclass(frozen=True)
class Reserved:
    amount_nanos: Nanos
    expires_at_ms: int
    budgets: list[Balance]


@dataclass(frozen=True)
class Committed:
    charged_nanos: Nanos
    released_nanos: Nanos
    overage_nanos: Nanos
    late: bool
    budgets: list[Balance]


def _balances(rows: Any) -> list[Balance]:
    # cjson encodes an empty Lua table as {}, not []
    return [Balance.from_script(r) for r in rows] if rows else []


class Engine:
    """Reserve, commit, release, refund, extend and expire against Redis."""

    def __init__(
        self,
        scripts: Scripts,
        cache: ConfigCache,
        clock: Clock,
        *,
        retention_ms: int,
        outbox_limit: int = DEFAULT_OUTBOX_LIMIT,
    ) -> None:
        self.scripts = scripts
        self.cache = cache
        self.clock = clock
        self.retention_ms = retention_ms
        self.outbox_limit = outbox_limit
        # Set while Redis is known to have lost its whole data set (budget_service/config/
        # epoch.py watches it): every call fails closed until the rebuild is done.
        self.data_set_lost = False
        # reservation -> (its budgets' uids, its price ref), so a commit on this replica
        # needs no extra round trip
        self._memo: dict[tuple[str, str], tuple[str, str]] = {}
        # orgs this process has put in the sweeper's and ledger writer's list (ba:orgs), and
        # when: re-added after a while, so a list lost with Redis's data comes back
        self._listed_orgs: dict[str, float] = {}

    def _remember(self, org: str, reservation_id: str, uids: str, price_ref: str) -> None:
        if len(self._memo) > 200_000:
            self._memo.clear()
        self._memo[(org, reservation_id)] = (uids, price_ref)

    async def _config(self, org: str) -> OrgBudgets:
        """The org's cached config; DataLost while Redis is known to have lost its data."""
        if self.data_set_lost:
            # The whole data set was lost: an org is usable again once its rebuild put the
            # epoch back (orgs are rebuilt one by one); read it from Redis on every call.
            self.cache.forget(org)
            config = await self.cache.get(org)
            if not config.epoch:
                raise self._lost(org)
            return config
        return await self.cache.get(org)

    def _lost(self, org: str) -> DataLost:
        return self.cache.lost(org)

    async def _list(self, org: str) -> None:
        """Keep the org in the sweeper's and ledger writer's list (ba:orgs), refreshed now and
        then so an org pruned while idle, or a list lost with Redis's data, comes back."""
        now = time.monotonic()
        listed = self._listed_orgs.get(org)
        if listed is not None and now - listed <= RELIST_SECONDS:
            return
        await redis_call(self.scripts.client.sadd(keys.ORGS, org))
        if len(self._listed_orgs) > 100_000:  # orgs idle for a while are re-added on their return
            self._listed_orgs = {
                o: t for o, t in self._listed_orgs.items() if now - t <= RELIST_SECONDS
            }
        self._listed_orgs[org] = now

    async def reserve(
        self,
        org: str,
        reservation_id: str,
        fingerprint: str,
        pairs: frozenset[tuple[str, str]],
        amount: Nanos,
        *,
        critical: bool,
        ttl_ms: int,
        price_ref: str = "0",
    ) -> Reserved:
        """Hold `amount` on every budget covering the subject, or raise BudgetExceeded.

        `price_ref` names the price a usage estimate was made with ("0" for an amount); a
        usage commit is priced with it.
        """
        await self._list(org)
        config = await self._config(org)
        subject = subject_json(pairs)
        for _ in range(ATTEMPTS):
            now = self.clock.now_ms()
            expires = now + ttl_ms
            covering = config.covering(pairs)
            args: list[str | int] = [
                config.version,
                reservation_id,
                fingerprint,
                amount,
                "1" if critical else "0",
                now,
                expires,
                self.retention_ms,
                price_ref,
                subject,
                config.epoch,
                self.outbox_limit,
                len(covering),
            ]
            for b in covering:
                args += [b.uid, bounds_ms(b.period, b.timezone, now)[0]]
            reply = await self.scripts.run(
                "reserve",
                [
                    keys.config(org),
                    keys.reservation(org, reservation_id),
                    keys.expiries(org),
                    keys.ledger(org),
                    keys.config_changes(org),
                    *(keys.budget(org, b.uid) for b in covering),
                ],
                args,
            )
            status = reply[0]
            if status == "STALE":
                config = await self.cache.refresh(org)
                continue
            if status == "LOST":
                raise self._lost(org)
            if status == "OVERFLOW":
                raise CounterOverflow(org, reply[1], reply[2])
            if status == "BACKLOG":
                raise Unavailable(
                    f"org {org!r}'s ledger outbox holds {reply[1]} events not yet written to"
                    f" PostgreSQL (LEDGER_OUTBOX_LIMIT={self.outbox_limit}): new reservations"
                    " wait until the ledger writer catches up (is PostgreSQL up?); commits,"
                    " releases and refunds still work"
                )
            if status == "MISMATCH":
                raise IdempotencyConflict(
                    f"reservation_id {reservation_id!r} was already used for a different request;"
                    " use a new reservation_id for a new request"
                )
            if status == "REFUSED":
                refusals = [
                    Refusal(
                        b.budget_id,
                        b.limit_nanos,
                        b.remaining_nanos + (b.overdraft_nanos if critical else 0),
                    )
                    for b in _balances(reply[1])
                ]
                raise BudgetExceeded(refusals, amount)
            held, expires_ms, rows = reply[1]
            uids = ",".join(str(b.uid) for b in covering)
            self._remember(org, reservation_id, uids, price_ref)
            return Reserved(int(held), int(expires_ms), _balances(rows))
        raise Unavailable("budget configuration kept changing during the call; retry it")

    def _periods(self, config: OrgBudgets, uids: str, now: int) -> list[str | int]:
        starts: list[str | int] = []
        for uid in uids.split(",") if uids else []:
            b: BudgetConfig | None = config.by_uid.get(int(uid))
            starts.append(bounds_ms(b.period, b.timezone, now)[0] if b else 0)
        return starts

    async def _priced_script(
        self,
        name: str,
        org: str,
        reservation_id: str,
        extra_keys: list[str],
        make_args: Callable[[Attempt], list[str | int]],
    ) -> Any:
        """Run a script that changes a reservation's budgets' spend, answering its reply.

        The script learns which budgets the reservation holds (KEYS: this replica did not make
        it) and checks the config version (STALE: periods were computed from old config); each
        costs one more try, changes nothing, and is bounded.
        """
        uids, price_ref = self._memo.get((org, reservation_id), ("", None))
        config = await self._config(org)
        for _ in range(ATTEMPTS):
            now = self.clock.now_ms()
            periods = self._periods(config, uids, now)
            attempt = Attempt(config.version, config.epoch, now, uids, periods, price_ref)
            reply = await self.scripts.run(
                name,
                [
                    keys.config(org),
                    keys.reservation(org, reservation_id),
                    *extra_keys,
                    *(keys.budget(org, u) for u in _split(uids)),
                ],
                make_args(attempt),
            )
            if reply[0] == "KEYS":
                uids = reply[1]
                if len(reply) > 2:
                    price_ref = reply[2]
            elif reply[0] == "PV":
                price_ref = reply[1]
            elif reply[0] == "STALE":
                config = await self.cache.refresh(org)
            elif reply[0] == "LOST":
                raise self._lost(org)
            elif reply[0] == "OVERFLOW":
                raise CounterOverflow(org, reply[1], reply[2])
            elif reply[0] == "NOTFOUND":
                raise _not_found(reservation_id)
            else:
                return reply
        raise Unavailable("reservation or config changed during the call; retry it")

    async def commit(
        self,
        org: str,
        reservation_id: str,
        fingerprint: str,
        actual: Nanos | Callable[[str], Nanos],
        *,
        usage: dict[str, int] | None = None,
        latency_ms: int = 0,
    ) -> Committed:
        """Charge `actual`, give back the hold; a retry answers the first commit's result.

        `actual` may be a function of the reservation's price ref (a usage commit): it is
        priced with the price the reserve used, which the script confirms.
        """

        def args(a: Attempt) -> list[str | int]:
            if callable(actual):
                if a.price_ref is None:  # not known here yet: the script answers it
                    amount: Nanos = 0
                    version = "?"
                else:
                    amount = actual(a.price_ref)
                    version = a.price_ref
            else:
                amount, version = actual, ""
            return [a.config_version, reservation_id, fingerprint, amount, a.now,
                    self.retention_ms, a.uids, version, usage_json, latency_ms or "", a.epoch,
                    len(a.periods), *a.periods]  # fmt: skip

        usage_json = json.dumps(usage, separators=(",", ":")) if usage else ""
        reply = await self._priced_script(
            "commit", org, reservation_id, [keys.expiries(org), keys.ledger(org)], args
        )
        if reply[0] == "MISMATCH":
            raise IdempotencyConflict(
                f"reservation {reservation_id!r} was already committed with a different"
                " actual cost; a reservation is charged once"
            )
        if reply[0] == "RELEASED":
            raise FailedPrecondition(
                f"reservation {reservation_id!r} was released; it cannot be committed"
                " (reserve again for a new call)"
            )
        self._memo.pop((org, reservation_id), None)
        charged, hold, released, late, rows = reply[1]
        charged_n, hold_n = int(charged), int(hold)
        return Committed(
            charged_n,
            max(0, int(released) - charged_n),
            max(0, charged_n - hold_n),
            bool(late),
            _balances(rows),
        )

    async def release(self, org: str, reservation_id: str) -> Nanos:
        """Void a hold; answers what was given back."""
        reply = await self._hold_script("release", org, reservation_id)
        status = reply[0]
        if status == "NOTFOUND":
            raise _not_found(reservation_id)
        if status == "COMMITTED":
            raise FailedPrecondition(
                f"reservation {reservation_id!r} was committed; use Refund to credit spend back"
            )
        return int(reply[1])

    async def expire(self, org: str, reservation_id: str) -> bool:
        """Release a hold past its expiry; True when this call released it."""
        reply = await self._hold_script("expire", org, reservation_id)
        return bool(reply[0] == "OK")

    async def _hold_script(self, name: str, org: str, reservation_id: str) -> Any:
        uids = self._memo.get((org, reservation_id), ("", 0))[0]
        config = await self._config(org)
        for _ in range(ATTEMPTS):
            now = self.clock.now_ms()
            reply = await self.scripts.run(
                name,
                [
                    keys.config(org),
                    keys.reservation(org, reservation_id),
                    keys.expiries(org),
                    keys.ledger(org),
                    *(keys.budget(org, u) for u in _split(uids)),
                ],
                [reservation_id, now, self.retention_ms, uids, config.epoch, len(_split(uids))],
            )
            if reply[0] == "KEYS":
                uids = reply[1]
                continue
            if reply[0] == "LOST":
                raise self._lost(org)
            if reply[0] == "OVERFLOW":
                raise CounterOverflow(org, reply[1], reply[2])
            if reply[0] != "NOTDUE":
                self._memo.pop((org, reservation_id), None)
            return reply
        raise Unavailable("reservation changed during the call; retry it")

    async def refund(self, org: str, reservation_id: str, refund_id: str, amount: Nanos) -> Nanos:
        """Credit back up to `amount` of a committed charge; idempotent by refund_id."""
        reply = await self._priced_script(
            "refund",
            org,
            reservation_id,
            [keys.ledger(org)],
            lambda a: [
                a.config_version,
                refund_id,
                amount,
                a.now,
                MAX_REFUNDS,
                a.uids,
                reservation_id,
                a.epoch,
                len(a.periods),
                *a.periods,
            ],
        )
        if reply[0] == "MISMATCH":
            raise IdempotencyConflict(
                f"refund_id {refund_id!r} was already used with a different amount;"
                " use a new refund_id for a new refund"
            )
        if reply[0] == "NOTCOMMITTED":
            raise FailedPrecondition(
                f"reservation {reservation_id!r} is {reply[1]}, not committed; only"
                " committed spend can be refunded"
            )
        if reply[0] == "TOOMANY":
            raise FailedPrecondition(
                f"reservation {reservation_id!r} already has {reply[1]} refunds, the most one"
                " reservation takes; refund what is left in one call with a new refund_id"
                " (retries of earlier refund_ids still answer)"
            )
        return int(reply[1])

    async def extend(self, org: str, reservation_id: str, ttl_ms: int) -> int:
        """Move a live hold's expiry to now + ttl; answers the new expiry (ms)."""
        config = await self._config(org)
        now = self.clock.now_ms()
        reply = await self.scripts.run(
            "extend",
            [
                keys.config(org),
                keys.reservation(org, reservation_id),
                keys.expiries(org),
                keys.ledger(org),
            ],
            [reservation_id, now, now + ttl_ms, self.retention_ms, config.epoch],
        )
        if reply[0] == "LOST":
            raise self._lost(org)
        if reply[0] == "NOTFOUND":
            raise _not_found(reservation_id)
        if reply[0] == "NOTHELD":
            raise FailedPrecondition(
                f"reservation {reservation_id!r} is {reply[1]}; only a live hold can be extended"
            )
        return int(reply[1])


def subject_json(pairs: frozenset[tuple[str, str]]) -> str:
    """The subject's selector pairs as the ledger records them: {"team": "x", "tag:env": "y"}."""
    return json.dumps(dict(sorted(pairs)), separators=(",", ":"))


def _split(uids: str) -> list[str]:
    return uids.split(",") if uids else []


def _not_found(reservation_id: str) -> NotFound:
    return NotFound(
        f"reservation {reservation_id!r} not found (never reserved in this org, or ended more"
        " than the retention period ago)"
    )
