"""Copies budget configuration from PostgreSQL (the source of truth) into Redis."""

from __future__ import annotations

import structlog

from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.store import Scripts, redis_call

log = structlog.get_logger(__name__)


class ConfigSync:
    """Pushes one budget's change, or a whole org's configuration, to Redis."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts
        self.client = scripts.client

    async def push(self, config: BudgetConfig) -> None:
        """Make Redis hold `config` (a newer version than any it holds)."""
        await redis_call(self.client.sadd(keys.ORGS, config.org))
        await self.scripts.run(
            "upsert_budget",
            [keys.config(config.org), keys.budget(config.org, config.uid)],
            [
                config.uid,
                config.to_json(),
                config.id,
                config.limit_nanos,
                config.overdraft_nanos,
                config.mode_name,
                config.version,
            ],
        )

    async def remove(self, config: BudgetConfig) -> None:
        """Drop a deleted budget from Redis."""
        await self.scripts.run(
            "delete_budget",
            [keys.config(config.org), keys.budget(config.org, config.uid)],
            [config.uid],
        )

    async def reconcile(self, repo: BudgetRepository) -> int:
        """Make every org's configuration in Redis equal PostgreSQL's; returns orgs changed.

        Redis is read before PostgreSQL, so a budget created in between is never dropped, and
        the script skips budgets Redis holds at a newer version: safe beside live upserts.
        """
        known: set[str] = await redis_call(self.client.smembers(keys.ORGS))
        before: dict[str, list[str]] = {}
        for org in known:
            uids = await redis_call(self.client.hkeys(keys.config(org)))
            before[org] = [u for u in uids if u != "_v"]
        by_org = await repo.all_by_org()
        changed = 0
        for org in sorted(known | set(by_org)):
            budgets = by_org.get(org, [])
            keep = {str(b.uid) for b in budgets}
            drop = [uid for uid in before.get(org, []) if uid not in keep]
            args: list[str | int] = [len(budgets)]
            for b in budgets:
                args += [
                    b.uid,
                    b.to_json(),
                    b.id,
                    b.limit_nanos,
                    b.overdraft_nanos,
                    b.mode_name,
                    b.version,
                ]
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
            if budgets:
                await redis_call(self.client.sadd(keys.ORGS, org))
            changed += int(reply[1])
        if changed:
            log.info("config.reconciled", orgs=len(known | set(by_org)), orgs_changed=changed)
        return changed
