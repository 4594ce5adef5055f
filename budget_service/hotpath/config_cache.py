"""Each org's budget configuration, cached in process and kept honest by a version check.

The reserve, commit and refund scripts compare the version the cache was read at with the
version in Redis; on a mismatch they change nothing and answer STALE, and the cache reloads the
org (one HGETALL) before the call is tried again. So a budget added through another replica is
never skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.store import redis_call


@dataclass(frozen=True)
class OrgBudgets:
    """An org's budgets at one configuration version."""

    version: str
    budgets: tuple[BudgetConfig, ...]
    by_uid: dict[int, BudgetConfig] = field(default_factory=dict)

    def covering(self, pairs: frozenset[tuple[str, str]]) -> list[BudgetConfig]:
        """The budgets whose selector is a subset of the subject."""
        return [b for b in self.budgets if b.applies_to(pairs)]


class ConfigCache:
    """Org -> OrgBudgets, read from the `ba:{org}:cfg` hash."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._orgs: dict[str, OrgBudgets] = {}

    async def get(self, org: str) -> OrgBudgets:
        """The cached configuration, loaded on first use."""
        cached = self._orgs.get(org)
        return cached if cached is not None else await self.reload(org)

    async def reload(self, org: str) -> OrgBudgets:
        """Read the org's configuration from Redis again."""
        raw: dict[str, str] = await redis_call(self.client.hgetall(keys.config(org)))
        version = raw.pop("_v", "0")
        budgets = tuple(sorted((BudgetConfig.from_json(v) for v in raw.values()), key=_by_id))
        entry = OrgBudgets(version, budgets, {b.uid: b for b in budgets})
        if len(self._orgs) > 100_000:
            self._orgs.clear()
        self._orgs[org] = entry
        return entry


def _by_id(budget: BudgetConfig) -> str:
    return budget.id
