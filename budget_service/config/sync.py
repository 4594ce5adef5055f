"""Copies budget configuration from PostgreSQL (the source of truth) into Redis."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.errors import DataLost
from budget_service.hotpath.store import Scripts, redis_call

log = structlog.get_logger(__name__)


def budget_args(b: BudgetConfig) -> list[str | int]:
    """A budget's config as the upsert_budget, sync_org and restore scripts take it."""
    return [b.uid, b.to_json(), b.id, b.limit_nanos, b.overdraft_nanos, b.mode_name, b.version]


class ConfigSync:
    """Pushes one budget's change, or a whole org's configuration, to Redis.

    `epoch` is this database's data-set epoch (budget_service/config/epoch.py): an org whose
    config in Redis lacks it has lost its data, and is handed to `on_lost` (the rebuild) instead
    of being written with counters that start from zero.
    """

    def __init__(self, scripts: Scripts, epoch: str, cache: ConfigCache | None = None) -> None:
        self.scripts = scripts
        self.client = scripts.client
        self.epoch = epoch
        # told which orgs have budgets (every reconcile, every push): their config must carry
        # the epoch, so the cache can tell a lost org from one that never had budgets
        self.cache = cache
        self.on_lost: Callable[[str], bool] = lambda org: False

    async def push(self, config: BudgetConfig, *, first_of_org: bool = False) -> None:
        """Make Redis hold `config` (a newer version than any it holds).

        `first_of_org`: the org's only budget, just created, so nothing of the org can have been
        lost: it may write the org's epoch.
        """
        if self.cache is not None:
            self.cache.add_budgeted(config.org)
        await redis_call(self.client.sadd(keys.ORGS, config.org))
        reply = await self.scripts.run(
            "upsert_budget",
            [keys.config(config.org), keys.budget(config.org, config.uid)],
            [*budget_args(config), self.epoch, "1" if first_of_org else "0"],
        )
        if reply[0] == "LOST":
            raise DataLost(config.org, rebuilding=self.on_lost(config.org))

    async def remove(self, config: BudgetConfig) -> None:
        """Drop a deleted budget from Redis."""
        await self.scripts.run(
            "delete_budget",
            [keys.config(config.org), keys.budget(config.org, config.uid)],
            [config.uid],
        )

    async def reconcile(self, repo: BudgetRepository, *, adopt: bool = False) -> int:
        """Make every org's configuration in Redis equal PostgreSQL's; returns orgs changed.

        Redis is read before PostgreSQL, so a budget created in between is never dropped, and
        the script skips budgets Redis holds at a newer version: safe beside live upserts. An
        org that lost its data is left alone and handed to `on_lost`; `adopt` writes the epoch
        into orgs that have none (the first start on a Redis that predates the epoch).
        """
        known: set[str] = await redis_call(self.client.smembers(keys.ORGS))
        before: dict[str, list[str]] = {}
        for org in known:
            uids = await redis_call(self.client.hkeys(keys.config(org)))
            before[org] = [u for u in uids if not u.startswith("_")]
        by_org = await repo.all_by_org()
        if self.cache is not None:
            self.cache.set_budgeted(by_org)
        changed = 0
        lost = []
        for org in sorted(known | set(by_org)):
            budgets = by_org.get(org, [])
            keep = {str(b.uid) for b in budgets}
            drop = [uid for uid in before.get(org, []) if uid not in keep]
            args: list[str | int] = [self.epoch, "1" if adopt else "0", len(budgets)]
            for b in budgets:
                args += budget_args(b)
            args += drop
            reply = await self.scripts.run(
                "sync_org",
                [
                    keys.config(org),
                    *(keys.budget(org, b.uid) for b in budgets),
                    *(keys.budget(org, uid) for uid in drop),
                ],
                args,
            )
            if reply[0] == "LOST":
                lost.append(org)
                self.on_lost(org)
                continue
            if budgets:
                await redis_call(self.client.sadd(keys.ORGS, org))
            changed += int(reply[1])
        if changed:
            log.info("config.reconciled", orgs=len(known | set(by_org)), orgs_changed=changed)
        if lost:
            log.error("config.data_lost", orgs=lost[:20], count=len(lost))
        return changed
