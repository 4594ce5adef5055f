"""Each org's budget configuration, cached in process and kept honest by a version check.

The reserve, commit and refund scripts compare the version the cache was read at with the
version in Redis; on a mismatch they change nothing and answer STALE, and the cache reloads the
org (one HGETALL) before the call is tried again. So a budget added through another replica is
never skipped.

The cache also knows each org's data-set epoch (`_e` in the config hash, see
budget_service/config/epoch.py) and which orgs have budgets in PostgreSQL: an org that should
have budgets but whose config hash has no epoch (or another one) has lost its data in Redis,
and loading it raises DataLost instead of caching an empty org that would admit everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.errors import DataLost
from budget_service.hotpath.store import redis_call


@dataclass(frozen=True)
class OrgBudgets:
    """An org's budgets at one configuration version."""

    version: str
    budgets: tuple[BudgetConfig, ...]
    by_uid: dict[int, BudgetConfig] = field(default_factory=dict)
    # the data-set epoch the scripts must find in the config hash ('' for an org without any)
    epoch: str = ""

    def covering(self, pairs: frozenset[tuple[str, str]]) -> list[BudgetConfig]:
        """The budgets whose selector is a subset of the subject."""
        return [b for b in self.budgets if b.applies_to(pairs)]


class ConfigCache:
    """Org -> OrgBudgets, read from the `ba:{org}:cfg` hash."""

    def __init__(self, client: aioredis.Redis, *, epoch: str = "") -> None:
        self.client = client
        # the epoch this PostgreSQL database writes into every org's config ('' before it is
        # known: then nothing is checked, as in tools that only read)
        self.epoch = epoch
        # orgs PostgreSQL has budgets for: their config hash must carry the epoch
        self._budgeted: set[str] = set()
        self._orgs: dict[str, OrgBudgets] = {}
        # Told when an org turns out to have lost its data in Redis; answers whether a rebuild
        # is under way (the server wires the automatic rebuild here).
        self.on_lost: Callable[[str], bool] = lambda org: False

    def lost(self, org: str) -> DataLost:
        """The error for a call that found the org's data gone; starts the rebuild if allowed."""
        self._orgs.pop(org, None)
        return DataLost(org, rebuilding=self.on_lost(org))

    def set_budgeted(self, orgs: Iterable[str]) -> None:
        """Replace the set of orgs that have budgets in PostgreSQL."""
        self._budgeted = set(orgs)

    def add_budgeted(self, org: str) -> None:
        self._budgeted.add(org)

    async def get(self, org: str) -> OrgBudgets:
        """The cached configuration, loaded on first use."""
        cached = self._orgs.get(org)
        return cached if cached is not None else await self.reload(org)

    def forget(self, org: str) -> None:
        """Drop the org's entry: the next call reads it from Redis again."""
        self._orgs.pop(org, None)

    async def check_intact(self, org: str) -> None:
        """DataLost when the org should have budgets but Redis lost its config (one HGET)."""
        if not self.epoch:
            return
        found = await redis_call(self.client.hget(keys.config(org), "_e"))
        if (found is None and org in self._budgeted) or (found is not None and found != self.epoch):
            raise self.lost(org)

    async def reload(self, org: str) -> OrgBudgets:
        """Read the org's configuration from Redis again; DataLost if Redis lost it."""
        raw: dict[str, str] = await redis_call(self.client.hgetall(keys.config(org)))
        version = raw.pop("_v", "0")
        found = raw.pop("_e", None)
        epoch = found or ""
        if self.epoch and (
            (found is None and org in self._budgeted) or (found is not None and found != self.epoch)
        ):
            raise self.lost(org)
        budgets = tuple(sorted((BudgetConfig.from_json(v) for v in raw.values()), key=_by_id))
        entry = OrgBudgets(version, budgets, {b.uid: b for b in budgets}, epoch)
        if len(self._orgs) > 100_000:
            self._orgs.clear()
        self._orgs[org] = entry
        return entry


def _by_id(budget: BudgetConfig) -> str:
    return budget.id
